"""Image files on disk (local or gs://): which files are images, and their bytes in a format
TensorFlow decodes."""

import os

import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data import images
from facenet_tf.data.preprocess import DECODABLE_MAGIC

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".pgm", ".ppm", ".pnm",
                    ".tif", ".tiff", ".webp")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_encoded(path: str) -> bytes:
    """A file's bytes in a format TF decodes (PGM, TIFF, ... converted to PNG with Pillow)."""
    data = io_utils.read_bytes(path)
    if data.startswith(DECODABLE_MAGIC):
        return data
    try:
        return images.normalize_image(data).encoded
    except images.BadImageError as e:
        raise images.BadImageError(f"{path}: {e}") from None


def list_images(root: str) -> list:
    """Image files under `root` (recursively), sorted, as paths; an error naming `root` if it
    is not a directory."""
    io_utils.require_dir(root)
    out = []
    for dirpath, _, files in tf.io.gfile.walk(root):
        out.extend(os.path.join(dirpath, f) for f in files if is_image_file(f))
    return sorted(out)
