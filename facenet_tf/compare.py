"""Compares the faces of two photos: squared L2 distance and same/different at the model's
threshold.

  python -m facenet_tf.compare --model DIR PHOTO1 PHOTO2 [--threshold T]

Each photo's main face is found (MTCNN: the largest, most central one) and aligned; a photo
without a face is an error naming it. --nodetect_faces compares the two files whole.
"""

import json

from absl import app, flags

from facenet_tf import _cli
from facenet_tf.common import io_utils
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import workflows


def main(argv):
    f = flags.FLAGS
    if len(argv) != 3:
        raise app.UsageError("give exactly two image paths")
    for path in argv[1:]:
        io_utils.require_file(path)  # before the model loads
    embedder = load_embedder(f.model)
    result = workflows.verify(embedder, argv[1], argv[2], f.threshold,
                               detector=FaceDetector() if f.detect_faces else None,
                               align=batch_embed.align_config_for(embedder, f.margin,
                                                                f.align_method))
    print(json.dumps(result, indent=2))
    if result["same"] is None:
        print("the model has no recommended threshold: pass --threshold to decide")


def _define_flags():
    flags.DEFINE_string("model", None, "SavedModel dir, .keras or .tflite file.", required=True)
    flags.DEFINE_float("threshold", None, "Squared-L2 threshold (default: the model's).")
    flags.DEFINE_bool("detect_faces", True, "Compare the main face of each photo (MTCNN); "
                      "--nodetect_faces compares the files whole.")
    _cli.define_face_crop_flags()


def run():
    """The `facenet-compare` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
