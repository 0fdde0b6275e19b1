"""tf.data over one mined generation: shards from its manifest -> batches [B, 3, H, W, 3]."""

import numpy as np
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data import augment as aug
from facenet_tf.data import records
from facenet_tf.data.preprocess import (
    PreprocessConfig,
    decode_error_message,
    decode_image,
    preprocess_image,
)
from facenet_tf.training.config import TrainConfig


def generation_shards(generation_dir: str, manifest: dict | None = None) -> list[str]:
    """The triplet shard paths a complete generation's manifest lists (and only those)."""
    manifest = manifest or io_utils.read_manifest(generation_dir)
    paths = io_utils.listed_shards(generation_dir, manifest)
    if not paths:
        raise ValueError(f"{generation_dir}/{io_utils.MANIFEST_NAME}: no 'shards' listed")
    return paths


# Decoded generation images are kept in memory up to this many MB (else decoded per use).
DEFAULT_DECODED_CACHE_MB = TrainConfig.decoded_cache_mb


def generation_images(generation_dir: str, manifest: dict | None = None,
                      decoded_cache_mb: float = DEFAULT_DECODED_CACHE_MB):
    """A function image id (string tensor) -> uint8 [H, W, 3] over the generation's images.

    A mined generation uses each image in many triplets, so when the decoded images fit in
    `decoded_cache_mb` (by the sizes their records state) they are decoded once, here, and
    looked up; otherwise each use decodes the stored bytes (after one pass that checks they
    decode). Both give the same pixels. Raises ValueError naming the generation if it lists no
    image shards, if they hold no images or one id twice, or naming the image that does not
    decode; FileNotFoundError for a listed shard that is missing. The lookup fails naming an id
    the image shards do not hold.
    """
    manifest = manifest or io_utils.read_manifest(generation_dir)
    paths = io_utils.listed_shards(generation_dir, manifest, key="image_shards")
    if not paths:
        raise ValueError(f"{generation_dir}/{io_utils.MANIFEST_NAME}: no 'image_shards' listed "
                         f"(a generation of triplet format version "
                         f"{manifest.get('format_version', 1)}; this trainer reads version "
                         f"{records.TRIPLET_FORMAT_VERSION}: mine it again)")
    ids, encoded, decoded_bytes = [], [], 0
    ds = tf.data.TFRecordDataset(paths).map(records.parse_image_example)
    for rec in ds.as_numpy_iterator():
        ids.append(rec[records.IMAGE_ID])
        encoded.append(rec[records.ENCODED])
        decoded_bytes += int(rec[records.HEIGHT]) * int(rec[records.WIDTH]) * 3
    if not ids:
        raise ValueError(f"{generation_dir}: its image shards {manifest['image_shards']} hold "
                         "no images")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{generation_dir}: image shards hold duplicate image ids")
    # Image id -> row, then the row of constant tensors. (A StaticHashTable whose values are
    # the images themselves is never freed in eager mode: every dataset made over one kept
    # twice the generation's decoded pixels alive for the rest of the process.)
    index = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(np.array(ids, dtype=object), tf.string),
                                            tf.range(len(ids), dtype=tf.int64)),
        default_value=-1)

    def row(image_id):
        i = index.lookup(image_id)
        found = tf.debugging.Assert(i >= 0, [
            "triplet record refers to image id", image_id,
            f"which the image shards of {generation_dir} do not hold"])
        with tf.control_dependencies([found]):
            return tf.identity(i)

    if decoded_bytes > decoded_cache_mb * 2**20:
        # One decoding pass up front (pixels not kept), so a bad image is named here and not
        # met as a bare TF error somewhere in training.
        for _ in _decoded(generation_dir, ids, encoded):
            pass
        stored = tf.constant(np.array(encoded, dtype=object), tf.string)
        return lambda image_id: decode_image(tf.gather(stored, row(image_id)))

    pixels = list(_decoded(generation_dir, ids, encoded))
    raw = tf.constant(np.array([p.tobytes() for p in pixels], dtype=object), tf.string)
    heights = tf.constant(np.array([p.shape[0] for p in pixels], np.int64))
    widths = tf.constant(np.array([p.shape[1] for p in pixels], np.int64))
    del pixels

    def lookup(image_id):
        i = row(image_id)
        flat = tf.io.decode_raw(tf.gather(raw, i), tf.uint8)
        return tf.reshape(flat, tf.stack([tf.gather(heights, i), tf.gather(widths, i), 3]))

    return lookup


def _decoded(generation_dir: str, ids, encoded):
    """Yields every image decoded (uint8 [H, W, 3] arrays, in order); ValueError naming the
    first that does not decode."""
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(np.array(encoded, dtype=object),
                                                        tf.string))
    ds = ds.map(decode_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    iterator = iter(ds)
    for image_id in ids:
        try:
            pixels = next(iterator).numpy()
        except tf.errors.OpError as e:
            raise ValueError(f"{generation_dir}: image {image_id.decode(errors='replace')} of its "
                             f"image shards does not decode: {decode_error_message(e)}") from e
        yield pixels


def triplet_dataset(generation_dir: str, preprocess: PreprocessConfig, batch_size: int,
                    seed: int, start_batch: int = 0, shuffle_buffer: int = 2048,
                    augment: aug.AugmentConfig | None = None,
                    decoded_cache_mb: float = DEFAULT_DECODED_CACHE_MB,
                    images=None) -> tf.data.Dataset:
    """Endless, seeded, shuffled batches (x [B, 3, H, W, 3] float32, dummy y [B]).

    The stream is a pure function of (generation, seed): `start_batch` resumes it exactly where
    a previous run stopped. With `augment`, each image's augmentation seed comes from its
    position in the stream, so resuming reproduces it too. `decoded_cache_mb`: see
    generation_images; `images`: this generation's generation_images lookup, to reuse one
    made before (the trainer makes a dataset for every model.fit call of a generation).
    """
    manifest = io_utils.read_manifest(generation_dir)
    files = generation_shards(generation_dir, manifest)
    if manifest.get("num_triplets") == 0:
        raise ValueError(f"{generation_dir}: the generation holds no triplets (no anchor-positive "
                         "pair found a negative under the mining rule); nothing to train on")
    image_of = images or generation_images(generation_dir, manifest, decoded_cache_mb)
    ds = tf.data.TFRecordDataset(files)
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().skip(int(start_batch) * int(batch_size))

    def load(index, serialized):
        parsed = records.parse_triplet_example(serialized)
        images = []
        for r, role in enumerate(records.ROLES):
            image = image_of(parsed[f"{role}/id"])
            if augment is None:
                images.append(preprocess_image(image, preprocess))
            else:
                images.append(aug.augment_image(image, preprocess, augment,
                                                aug.element_seed(seed, index, r)))
        return tf.stack(images), tf.zeros([], tf.float32)

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
