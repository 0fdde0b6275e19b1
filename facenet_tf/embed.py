"""Embeds the faces in a folder of photos (or image TFRecords) into an .npz file.

  python -m facenet_tf.embed --model DIR --input PHOTO_FOLDER --output faces.npz \
      [--projector_dir D]    # then: tensorboard --logdir D, tab Projector
  python -m facenet_tf.embed --model DIR --input 'data/faces/images-*.tfrecord' --output emb.npz

For a folder, every face found (MTCNN, then aligned) is one row: `embeddings` [F, D] float32,
`image_ids` (the photo, relative to the folder), `face_index` (the face's rank in its photo),
`boxes` (x1, y1, x2, y2 pixels), `scores`, `is_main`, `identities` (the photo's first folder),
and the photos with no face in `skipped_images` / `skipped_reasons`. --nodetect_faces embeds
each file whole instead (pre-cropped faces). TFRecords (dataset records) are embedded whole.
"""

import tensorflow as tf
from absl import flags, logging

from facenet_tf import _cli
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import workflows


def main(argv):
    del argv
    f = flags.FLAGS
    if not tf.io.gfile.isdir(f.input):
        workflows.tfrecord_files(f.input)  # the error, before the model loads
    embedder = load_embedder(f.model)
    if tf.io.gfile.isdir(f.input):
        detector = FaceDetector() if f.detect_faces else None
        align = batch_embed.align_config_for(embedder, f.margin, f.align_method)
        arrays = workflows.embed_folder(embedder, f.input, f.batch_size, f.flip,
                                        detector=detector, align=align,
                                        projector_dir=f.projector_dir)
    else:
        arrays = workflows.embed_tfrecords(embedder, f.input, f.batch_size, f.flip)
    workflows.write_npz(f.output, arrays, embedder.fingerprint)
    skipped = arrays.get("skipped_images", [])
    for name, reason in zip(skipped, arrays.get("skipped_reasons", [])):
        logging.warning("skipped %s: %s", name, reason)
    print(f"wrote {len(arrays['image_ids'])} embeddings to {f.output}"
          + (f"; {len(skipped)} photos skipped (listed in the file)" if len(skipped) else ""))


def _define_flags():
    flags.DEFINE_string("model", None, "SavedModel dir, .keras or .tflite file.", required=True)
    flags.DEFINE_string("input", None, "Photo folder, or a glob of image TFRecords.",
                        required=True)
    flags.DEFINE_string("output", None, "Output .npz file.", required=True)
    flags.DEFINE_bool("detect_faces", True, "Find and align the faces of each photo (MTCNN); "
                      "--nodetect_faces embeds each file whole.")
    _cli.define_face_crop_flags()
    flags.DEFINE_string("projector_dir", None, "Also write a TensorBoard projector log of the "
                        "faces here (tensorboard --logdir DIR).")
    flags.DEFINE_integer("batch_size", 64, "Faces per model call.")
    flags.DEFINE_bool("flip", False, "Average with the mirror image's embedding.")


def run():
    """The `facenet-embed` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
