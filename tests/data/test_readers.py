"""facenet_tf.data.readers: manifest checks, image_dataset, streamed P x K batches."""

import collections
import json
import os

import numpy as np
import pytest
from PIL import Image

from facenet_tf.data import augment as aug
from facenet_tf.data import readers
from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.pipelines import build_dataset as job

SIZE = (16, 12)
COUNTS = {"ann": 1, "bob": 2, "cat": 3, "dan": 5, "eve": 5, "fay": 6, "gus": 1, "hal": 4}
CONFIG = PreprocessConfig(image_size=SIZE, crop_fraction=1.0, standardization="fixed")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A built dataset with known pixels: returns (dir, {image_id: uint8 pixels})."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.RandomState(0)
    pixels = {}
    for identity, n in COUNTS.items():
        os.makedirs(root / identity)
        for j in range(n):
            image = rng.randint(0, 256, (*SIZE, 3)).astype(np.uint8)
            Image.fromarray(image).save(root / identity / f"{j}.png")
            pixels[f"{identity}/{j}.png"] = image
    out = str(tmp_path_factory.mktemp("built") / "ds")
    job.build_dataset(str(root), out, num_shards=3)
    return out, pixels


def standardized(image):
    return (image.astype(np.float32) - 127.5) / 128.0


def test_load_manifest_checks_format(dataset, tmp_path):
    out, _ = dataset
    manifest = readers.load_manifest(out)
    assert manifest["num_images"] == sum(COUNTS.values())
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        readers.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format": "other"}))
    with pytest.raises(ValueError, match="format"):
        readers.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest}))
    with pytest.raises(FileNotFoundError, match="images-00000-of-00003"):
        readers.shard_paths(str(tmp_path))


def test_image_dataset_yields_every_image_once_with_its_pixels(dataset):
    out, pixels = dataset
    labels = {name: i for i, name in enumerate(sorted(COUNTS))}
    seen = {}
    for batch in readers.image_dataset(out, CONFIG, batch_size=5, with_metadata=True):
        for image, label, image_id, identity in zip(
                batch["image"].numpy(), batch["label"].numpy(),
                batch["image_id"].numpy(), batch["identity"].numpy()):
            image_id, identity = image_id.decode(), identity.decode()
            assert image_id not in seen
            seen[image_id] = image
            assert label == labels[identity] and image_id.startswith(identity + "/")
    assert seen.keys() == pixels.keys()
    for image_id, image in seen.items():
        np.testing.assert_allclose(image, standardized(pixels[image_id]), atol=1e-5)
    pairs = list(readers.image_dataset(out, CONFIG).take(2).as_numpy_iterator())
    assert pairs[0][0].shape == (*SIZE, 3) and np.ndim(pairs[0][1]) == 0


def test_image_dataset_shuffle_and_augment_are_seeded(dataset):
    out, pixels = dataset

    def ids(**kw):
        ds = readers.image_dataset(out, CONFIG, with_metadata=True, num_epochs=2, **kw)
        return [(e["image_id"], e["image"]) for e in ds.as_numpy_iterator()]

    a, b, c = ids(shuffle_seed=1, augment=aug.AugmentConfig()), \
        ids(shuffle_seed=1, augment=aug.AugmentConfig()), ids(shuffle_seed=2)
    assert [x for x, _ in a] == [x for x, _ in b]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert [x for x, _ in a] != [x for x, _ in c]
    n = sum(COUNTS.values())
    for epoch in (a[:n], a[n:]):
        assert sorted(x.decode() for x, _ in epoch) == sorted(pixels)
    assert [x for x, _ in a[:n]] != [x for x, _ in a[n:]]  # reshuffled per epoch


def check_pk(batch_labels, p, k):
    counts = collections.Counter(batch_labels.tolist())
    assert len(counts) == p and set(counts.values()) == {k}, counts
    for i in range(p):  # identity blocks are contiguous
        assert len(set(batch_labels[i * k:(i + 1) * k].tolist())) == 1


def test_pk_batches_have_p_distinct_identities_with_k_images(dataset):
    out, pixels = dataset
    label_of = {name: i for i, name in enumerate(sorted(COUNTS))}
    singles = {label_of[n] for n, c in COUNTS.items() if c == 1}
    eligible = sum(1 for c in COUNTS.values() if c >= 2)  # 6, "replace" policy
    p, k, epochs = 3, 4, 3
    batches = list(readers.pk_batches(out, p, k, CONFIG, seed=7, num_epochs=epochs)
                   .as_numpy_iterator())
    assert len(batches) == epochs * (eligible // p)
    by_label = collections.defaultdict(list)
    for image_id, image in pixels.items():
        by_label[label_of[image_id.split("/")[0]]].append(standardized(image))
    for images, labels in batches:
        assert images.shape == (p * k, *SIZE, 3) and labels.shape == (p * k,)
        check_pk(labels, p, k)
        assert not singles & set(labels.tolist())
        for i in range(p):
            block, label = images[i * k:(i + 1) * k], labels[i * k]
            originals = by_label[label]
            # Every row is one of the identity's images; with n <= K all n appear.
            matches = [next(j for j, o in enumerate(originals) if np.allclose(row, o, atol=1e-5))
                       for row in block]
            if len(originals) <= k:
                assert set(matches) == set(range(len(originals)))
            else:
                assert len(set(matches)) == k  # without replacement


def test_pk_batches_skip_policy_and_negatives(dataset):
    out, _ = dataset
    label_of = {name: i for i, name in enumerate(sorted(COUNTS))}
    big = {label_of[n] for n, c in COUNTS.items() if c >= 4}
    singles = {label_of[n] for n, c in COUNTS.items() if c == 1}
    batches = list(readers.pk_batches(out, 2, 4, CONFIG, seed=1, small_identities="skip",
                                       num_negatives=2, num_epochs=4).as_numpy_iterator())
    assert len(batches) == 4 * (len(big) // 2)
    for images, labels in batches:
        assert images.shape[0] == 2 * 4 + 2
        check_pk(labels[:8], 2, 4)
        assert set(labels[:8].tolist()) <= big
        assert set(labels[8:].tolist()) <= singles
    with pytest.raises(ValueError, match="cannot fill p=5"):
        readers.pk_batches(out, 5, 4, CONFIG, seed=1, small_identities="skip")


def test_pk_batches_same_seed_same_batches(dataset):
    out, _ = dataset

    def run(seed):
        ds = readers.pk_batches(out, 3, 2, CONFIG, seed=seed, augment=aug.AugmentConfig(),
                                 num_epochs=2)
        return list(ds.as_numpy_iterator())

    a, b, c = run(5), run(5), run(6)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))


@pytest.mark.integration
def test_pk_batches_on_orl(orl_dir, tmp_path):
    out = str(tmp_path / "orl")
    job.build_dataset(orl_dir, out, num_shards=4)
    ds = readers.pk_batches(out, 10, 5, PreprocessConfig((96, 96)), seed=0,
                             augment=aug.AugmentConfig(), num_epochs=1)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 4  # 40 identities / P
    seen = set()
    for images, labels in batches:
        check_pk(labels, 10, 5)
        assert images.shape == (50, 96, 96, 3) and np.isfinite(images).all()
        assert not seen & set(labels.tolist())  # one block per identity per pass
        seen |= set(labels.tolist())
    assert len(seen) == 40
