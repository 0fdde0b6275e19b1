"""Embeds a folder of images, or image TFRecords, into an .npz file with image ids.

  python -m facenet_tf.embed --model DIR --input FOLDER_OR_TFRECORD_GLOB --output emb.npz

The .npz holds `embeddings` [N, D] float32, `image_ids` (path relative to the folder, or the
record's image id), `identities` (first folder / record identity) and `model_fingerprint`.
"""

import tensorflow as tf
from absl import flags, logging

from facenet_tf import cli, workflows
from facenet_tf.serving.loader import load_embedder


def main(argv):
    del argv
    f = flags.FLAGS
    embedder = load_embedder(f.model)
    if tf.io.gfile.isdir(f.input):
        arrays = workflows.embed_folder(embedder, f.input, f.batch_size, f.flip)
    else:
        arrays = workflows.embed_tfrecords(embedder, f.input, f.batch_size, f.flip)
    workflows.write_npz(f.output, arrays, embedder.fingerprint)
    logging.info("wrote %d embeddings to %s", len(arrays["image_ids"]), f.output)


def _define_flags():
    flags.DEFINE_string("model", None, "SavedModel dir or .keras file.", required=True)
    flags.DEFINE_string("input", None, "Image folder, or a glob of image TFRecords.",
                        required=True)
    flags.DEFINE_string("output", None, "Output .npz file.", required=True)
    flags.DEFINE_integer("batch_size", 64, "Images per model call.")
    flags.DEFINE_bool("flip", False, "Average with the mirror image's embedding.")


def run():
    """The `facenet-embed` command."""
    _define_flags()
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
