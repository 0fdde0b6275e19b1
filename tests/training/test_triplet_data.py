"""The triplet input pipeline: manifest-listed shards only, exact pixels, resumable positions."""

import numpy as np
import pytest

from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.training import triplet_data
from tests.training import _helpers

PRE = PreprocessConfig(image_size=_helpers.TINY_SHAPE[:2])


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


# Generation images decoded once into memory (the default for small generations) or decoded
# on every use (over the cache budget): both paths must give the same pixels.
@pytest.fixture(params=[triplet_data.DEFAULT_DECODED_CACHE_MB, 0], ids=["cached", "uncached"])
def cache_mb(request):
    return request.param


def test_batches_hold_the_listed_triplets_standardised(tmp_path, cache_mb):
    pixels = _helpers.random_triplets(6)
    gen = _helpers.write_generation(tmp_path / "gen", pixels,
                                    extra_shards=["triplets-00099-of-00100.tfrecord"])
    ds = triplet_data.triplet_dataset(str(gen), PRE, batch_size=3, seed=1,
                                      decoded_cache_mb=cache_mb)
    got = np.concatenate([x for x, _ in _batches(ds, 2)])
    assert got.shape == (6, 3) + _helpers.TINY_SHAPE
    # Oracle: the paper-style fixed standardisation of each stored image, in any order; the
    # unlisted shard's record (all three images = triplet 0's anchor) must never appear.
    expected = (pixels.astype(np.float32) - 127.5) / 128.0
    order = [int(np.argmin([np.abs(g - e).max() for e in expected])) for g in got]
    assert sorted(order) == list(range(6))
    for g, k in zip(got, order):
        np.testing.assert_allclose(g, expected[k], atol=1e-5)


def test_same_seed_same_stream_and_start_batch_resumes_it(tmp_path):
    gen = _helpers.write_generation(tmp_path / "gen", _helpers.random_triplets(5))
    full = _batches(triplet_data.triplet_dataset(str(gen), PRE, 2, seed=3), 7)
    again = _batches(triplet_data.triplet_dataset(str(gen), PRE, 2, seed=3), 7)
    resumed = _batches(triplet_data.triplet_dataset(str(gen), PRE, 2, seed=3, start_batch=4), 3)
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(full[4:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
    other = _batches(triplet_data.triplet_dataset(str(gen), PRE, 2, seed=4), 7)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(full, other))


def test_augmentation_is_reproduced_on_resume(tmp_path, cache_mb):
    from facenet_tf.data.augment import AugmentConfig
    gen = _helpers.write_generation(tmp_path / "gen", _helpers.random_triplets(4))
    kw = dict(batch_size=2, seed=0, augment=AugmentConfig(), decoded_cache_mb=cache_mb)
    full = _batches(triplet_data.triplet_dataset(str(gen), PRE, **kw), 4)
    resumed = _batches(triplet_data.triplet_dataset(str(gen), PRE, start_batch=3, **kw), 1)
    np.testing.assert_array_equal(full[3][0], resumed[0][0])
    plain = _batches(triplet_data.triplet_dataset(str(gen), PRE, 2, seed=0), 4)
    assert not np.array_equal(full[0][0], plain[0][0])


def test_incomplete_or_empty_generation_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        triplet_data.triplet_dataset(str(tmp_path), PRE, 2, seed=0)
    from facenet_tf.common import io_utils
    io_utils.write_json_atomic(str(tmp_path / "manifest.json"),
                               {"shards": ["missing.tfrecord"], "num_triplets": 3})
    with pytest.raises(FileNotFoundError, match="missing.tfrecord"):
        triplet_data.triplet_dataset(str(tmp_path), PRE, 2, seed=0)
    empty = _helpers.write_generation(tmp_path / "empty", _helpers.random_triplets(0))
    with pytest.raises(ValueError, match="no triplets"):
        triplet_data.triplet_dataset(str(empty), PRE, 2, seed=0)


def test_cached_and_uncached_streams_are_identical(tmp_path):
    from facenet_tf.data.augment import AugmentConfig
    # Not square, so that a swapped height and width would show.
    gen = str(_helpers.write_generation(tmp_path / "gen",
                                        _helpers.random_triplets(5, shape=(40, 24, 3))))
    for augment in (None, AugmentConfig()):
        cached, uncached = (_batches(triplet_data.triplet_dataset(
            gen, PRE, 2, seed=5, augment=augment, decoded_cache_mb=mb), 6) for mb in (1024, 0))
        for a, b in zip(cached, uncached):
            np.testing.assert_array_equal(a[0], b[0])


def test_an_undecodable_stored_image_is_named(tmp_path, cache_mb):
    import dataclasses
    import json
    import os

    import tensorflow as tf

    from facenet_tf.data import records
    gen = _helpers.write_generation(tmp_path / "gen", _helpers.random_triplets(2))
    with open(os.path.join(gen, "manifest.json")) as f:
        manifest = json.load(f)
    first = os.path.join(gen, manifest["image_shards"][0])
    recs = [records.image_record_from_bytes(r.numpy())
            for r in tf.data.TFRecordDataset([first])]
    broken = dataclasses.replace(recs[0], encoded=b"\x89PNG not really")
    with tf.io.TFRecordWriter(first) as w:
        for rec in [broken] + recs[1:]:
            w.write(records.image_example(rec).SerializeToString())
    # Both paths check every image when the dataset is built, naming the bad one.
    with pytest.raises(ValueError, match=f"image {broken.image_id} .*does not decode"):
        triplet_data.triplet_dataset(str(gen), PRE, 1, seed=0, decoded_cache_mb=cache_mb)


def test_triplet_referring_to_an_unstored_image_names_the_id(tmp_path, cache_mb):
    import json
    import os

    import tensorflow as tf

    from facenet_tf.data import records
    gen = _helpers.write_generation(tmp_path / "gen", _helpers.random_triplets(2))
    # List an image shard holding only an unrelated image instead of the real one.
    png = tf.io.encode_png(np.zeros((2, 2, 3), np.uint8)).numpy()
    other = records.ImageRecord(png, "png", 9, "other", "other/1.png", 2, 2)
    with tf.io.TFRecordWriter(os.path.join(gen, "images-other.tfrecord")) as w:
        w.write(records.image_example(other).SerializeToString())
    with tf.io.TFRecordWriter(os.path.join(gen, "images-empty.tfrecord")):
        pass
    with open(os.path.join(gen, "manifest.json")) as f:
        manifest = json.load(f)
    manifest["image_shards"] = ["images-empty.tfrecord"]
    with open(os.path.join(gen, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    with pytest.raises(ValueError, match="hold no images"):
        triplet_data.triplet_dataset(str(gen), PRE, 1, seed=0)
    manifest["image_shards"] = ["images-other.tfrecord"]
    with open(os.path.join(gen, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    ds = triplet_data.triplet_dataset(str(gen), PRE, 1, seed=0, decoded_cache_mb=cache_mb)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"id[01]_\d/x.png"):
        _batches(ds, 1)


def test_generation_of_the_old_format_asks_to_mine_again(tmp_path):
    import os

    import tensorflow as tf

    from facenet_tf.common import io_utils
    from facenet_tf.data import records
    gen = _helpers.write_generation(tmp_path / "gen", _helpers.random_triplets(2))
    manifest = io_utils.read_manifest(str(gen))
    io_utils.write_json_atomic(os.path.join(gen, "manifest.json"),
                               {k: v for k, v in manifest.items() if k != "image_shards"})
    with pytest.raises(ValueError, match="mine it again"):
        triplet_data.triplet_dataset(str(gen), PRE, 1, seed=0)
    # A version-1 record (images inline) among version-2 shards fails its version check.
    old = tf.train.Example()
    old.features.feature["triplet/version"].int64_list.value.append(1)
    for role in records.ROLES:
        old.features.feature[f"{role}/id"].bytes_list.value.append(b"id0_0/x.png")
        old.features.feature[f"{role}/label"].int64_list.value.append(0)
        old.features.feature[f"{role}/encoded"].bytes_list.value.append(b"...")
    with pytest.raises(tf.errors.InvalidArgumentError, match="format version"):
        records.parse_triplet_example(tf.constant(old.SerializeToString()))
