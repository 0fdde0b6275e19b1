"""Fixtures for the Beam jobs: a tiny dataset directory in build_dataset's format, tiny models."""

import os

import numpy as np
import pytest

from tests.conftest import make_tiny_embedding_model

IMAGE_SIZE = 32  # the tiny model's input, so preprocessing neither crops nor resizes


def write_tiny_dataset(root, counts, num_shards=2, seed=0, corrupt_record=False,
                       corrupt_image=False):
    """Writes a dataset dir like build_dataset's: images-*.tfrecord shards + manifest.json.

    counts: images per identity (identity i is "person_{i:02d}", label i); each identity has
    its own random base image plus noise, as 32x32 RGB PNGs. corrupt_record appends bytes that
    are not a tf.train.Example; corrupt_image adds a well-formed record whose PNG is garbage.
    Returns the dataset directory.
    """
    import tensorflow as tf

    from facenet_tf.common import io_utils
    from facenet_tf.data import readers, records
    rng = np.random.RandomState(seed)
    os.makedirs(root, exist_ok=True)
    recs = []
    for label, count in enumerate(counts):
        identity = f"person_{label:02d}"
        base = rng.randint(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
        for j in range(count):
            pixels = np.clip(base + rng.randint(-40, 41, size=base.shape), 0, 255)
            png = tf.io.encode_png(pixels.astype(np.uint8)).numpy()
            recs.append(records.ImageRecord(png, "png", label, identity, f"{identity}/{j:03d}.png",
                                            IMAGE_SIZE, IMAGE_SIZE))
    if corrupt_image:
        recs.append(records.ImageRecord(b"\x89PNG not really", "png", 0, "person_00",
                                        "person_00/broken.png", IMAGE_SIZE, IMAGE_SIZE))
    names = [records.shard_name(records.IMAGE_SHARD_PREFIX, i, num_shards)
             for i in range(num_shards)]
    for i, name in enumerate(names):
        with tf.io.TFRecordWriter(os.path.join(root, name)) as writer:
            for rec in recs[i::num_shards]:
                writer.write(records.image_example(rec).SerializeToString())
            if corrupt_record and i == 0:
                writer.write(b"definitely not a tf.train.Example \xff\xfe")
    per_identity = {f"person_{i:02d}": c for i, c in enumerate(counts)}
    io_utils.write_json_atomic(os.path.join(root, io_utils.MANIFEST_NAME), {
        "format": readers.DATASET_FORMAT,
        "version": readers.DATASET_VERSION,
        "label_map": {f"person_{i:02d}": i for i in range(len(counts))},
        "images_per_identity": per_identity,
        "num_images": sum(counts),
        "num_identities": len(counts),
        "shards": names,
    })
    return str(root)


def save_tiny_model(path, seed=0):
    """Saves the shared tiny embedding model (32x32x3 -> 8-D, L2-normalised) as .keras."""
    model = make_tiny_embedding_model(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), seed=seed)
    model.save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.keras")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """6 identities with 4 images each plus one identity with a single image."""
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "ds", [4, 4, 4, 4, 4, 4, 1])
