"""Embeds a folder of images, or image TFRecords, into an .npz file with image ids.

  python -m facenet_tf.embed --model DIR --input FOLDER_OR_TFRECORD_GLOB --output emb.npz

The .npz holds `embeddings` [N, D] float32, `image_ids` (path relative to the folder, or the
record's image id), `identities` (first folder / record identity) and `model_fingerprint`.
"""

import io
import os

import numpy as np
import tensorflow as tf
from absl import logging

from facenet_tf import export, io_utils
from facenet_tf.data import records
from facenet_tf.evaluation import embedding


def embed_folder(embedder, folder: str, batch_size: int = 64, flip: bool = False) -> dict:
    paths = embedding.list_images(folder)
    if not paths:
        raise ValueError(f"{folder}: no images found")
    ids = [os.path.relpath(p, folder) for p in paths]
    emb = embedding.embed_files(embedder, paths, batch_size=batch_size, flip=flip)
    return {"embeddings": emb, "image_ids": np.array(ids),
            "identities": np.array([i.split(os.sep)[0] if os.sep in i else "" for i in ids])}


def embed_tfrecords(embedder, pattern: str, batch_size: int = 64, flip: bool = False) -> dict:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"{pattern}: no TFRecord files match")
    parsed = [records.parse_image_example(s) for s in tf.data.TFRecordDataset(files)]
    ids = [p[records.IMAGE_ID].numpy().decode() for p in parsed]
    emb = embedding.embed_encoded_images(
        embedder, (p[records.ENCODED].numpy() for p in parsed), total=len(parsed),
        batch_size=batch_size, flip=flip, names=ids)
    return {"embeddings": emb, "image_ids": np.array(ids),
            "identities": np.array([p[records.IDENTITY].numpy().decode() for p in parsed])}


def write_npz(path: str, arrays: dict, fingerprint: str) -> None:
    buf = io.BytesIO()
    np.savez(buf, model_fingerprint=np.array(fingerprint), **arrays)
    io_utils.write_bytes_atomic(path, buf.getvalue())


def main(argv):
    from absl import flags
    del argv
    f = flags.FLAGS
    embedder = export.load_embedder(f.model)
    if tf.io.gfile.isdir(f.input):
        arrays = embed_folder(embedder, f.input, f.batch_size, f.flip)
    else:
        arrays = embed_tfrecords(embedder, f.input, f.batch_size, f.flip)
    write_npz(f.output, arrays, embedder.fingerprint)
    logging.info("wrote %d embeddings to %s", len(arrays["image_ids"]), f.output)


def _define_flags():
    from absl import flags
    flags.DEFINE_string("model", None, "SavedModel dir or .keras file.", required=True)
    flags.DEFINE_string("input", None, "Image folder, or a glob of image TFRecords.",
                        required=True)
    flags.DEFINE_string("output", None, "Output .npz file.", required=True)
    flags.DEFINE_integer("batch_size", 64, "Images per model call.")
    flags.DEFINE_bool("flip", False, "Average with the mirror image's embedding.")


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main)
