"""tf.data over one mined generation: shards from its manifest -> batches [B, 3, H, W, 3]."""

import numpy as np
import tensorflow as tf

from facenet_tf import io_utils
from facenet_tf.data import records
from facenet_tf.data import augment as aug
from facenet_tf.data.preprocess import PreprocessConfig, decode_image, preprocess_image


def generation_shards(generation_dir: str, manifest: dict | None = None) -> list[str]:
    """The triplet shard paths a complete generation's manifest lists (and only those)."""
    manifest = manifest or io_utils.read_manifest(generation_dir)
    paths = io_utils.listed_shards(generation_dir, manifest)
    if not paths:
        raise ValueError(f"{generation_dir}/{io_utils.MANIFEST_NAME}: no 'shards' listed")
    return paths


def generation_images(generation_dir: str, manifest: dict | None = None):
    """A lookup table image id -> encoded image over the generation's image shards.

    Raises ValueError naming the generation if it lists no image shards, if they hold no
    images, or if they hold one id twice; FileNotFoundError for a listed shard that is missing.
    """
    manifest = manifest or io_utils.read_manifest(generation_dir)
    paths = io_utils.listed_shards(generation_dir, manifest, key="image_shards")
    if not paths:
        raise ValueError(f"{generation_dir}/{io_utils.MANIFEST_NAME}: no 'image_shards' listed "
                         f"(a generation of triplet format version "
                         f"{manifest.get('format_version', 1)}; this trainer reads version "
                         f"{records.TRIPLET_FORMAT_VERSION}: mine it again)")
    ids, encoded = [], []
    ds = tf.data.TFRecordDataset(paths).map(records.parse_image_example)
    for rec in ds.as_numpy_iterator():
        ids.append(rec[records.IMAGE_ID])
        encoded.append(rec[records.ENCODED])
    if not ids:
        raise ValueError(f"{generation_dir}: its image shards {manifest['image_shards']} hold "
                         "no images")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{generation_dir}: image shards hold duplicate image ids")
    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(np.array(ids, dtype=object), tf.string),
        tf.constant(np.array(encoded, dtype=object), tf.string))
    return tf.lookup.StaticHashTable(initializer, default_value="")


def triplet_dataset(generation_dir: str, preprocess: PreprocessConfig, batch_size: int,
                    seed: int, start_batch: int = 0, shuffle_buffer: int = 2048,
                    augment: aug.AugmentConfig | None = None) -> tf.data.Dataset:
    """Endless, seeded, shuffled batches (x [B, 3, H, W, 3] float32, dummy y [B]).

    The stream is a pure function of (generation, seed): `start_batch` resumes it exactly where
    a previous run stopped. With `augment`, each image's augmentation seed comes from its
    position in the stream, so resuming reproduces it too.
    """
    manifest = io_utils.read_manifest(generation_dir)
    files = generation_shards(generation_dir, manifest)
    if manifest.get("num_triplets") == 0:
        raise ValueError(f"{generation_dir}: the generation holds no triplets (no anchor-positive "
                         "pair found a negative under the mining rule); nothing to train on")
    image_table = generation_images(generation_dir, manifest)
    ds = tf.data.TFRecordDataset(files)
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().skip(int(start_batch) * int(batch_size))

    def load(index, serialized):
        parsed = records.parse_triplet_example(serialized)
        images = []
        for r, role in enumerate(records.ROLES):
            image_id = parsed[f"{role}/id"]
            encoded = image_table.lookup(image_id)
            found = tf.debugging.Assert(tf.strings.length(encoded) > 0, [
                "triplet record refers to image id", image_id,
                f"which the image shards of {generation_dir} do not hold"])
            with tf.control_dependencies([found]):
                image = decode_image(encoded)
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
