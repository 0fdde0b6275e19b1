"""docs/data.md's tensorflow-datasets example: the same folder through tfds.ImageFolder."""

import os

import numpy as np
import tensorflow_datasets as tfds

from facenet_tf.data import readers
from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.pipelines import build_dataset as job
from tests.conftest import make_image_folder


def test_image_folder_sees_the_same_images_and_labels(tmp_path):
    # tfds.ImageFolder wants <root>/<split>/<label>/<image>; our input folder is one split.
    faces = make_image_folder(tmp_path / "root" / "train", num_identities=3,
                              images_per_identity=2, size=(20, 16))
    builder = tfds.ImageFolder(str(tmp_path / "root"))
    tfds_images = {}
    names = builder.info.features["label"].names
    for ex in builder.as_dataset(split="train", shuffle_files=False).as_numpy_iterator():
        file_name = os.path.basename(ex["image/filename"].decode())
        tfds_images[f"{names[ex['label']]}/{file_name}"] = (ex["image"], ex["label"])

    out = str(tmp_path / "built")
    job.build_dataset(faces, out, num_shards=1)
    config = PreprocessConfig(image_size=(20, 16))
    ours = {e["image_id"].decode(): e for e in readers.image_dataset(
        out, config, with_metadata=True).as_numpy_iterator()}
    assert ours.keys() == tfds_images.keys()
    for image_id, (pixels, label) in tfds_images.items():
        assert ours[image_id]["label"] == label  # both number sorted folder names
        np.testing.assert_allclose(ours[image_id]["image"],
                                   (pixels.astype(np.float32) - 127.5) / 128.0, atol=1e-5)
