"""Is the person of one photo in the other? Squared L2 distance of two photos' faces and
same/different at the model's threshold.

  python -m facenet_tf.compare --model DIR PHOTO1 PHOTO2 [--threshold T] [--face1 I] [--face2 J]

Every face of both photos is found (MTCNN) and aligned; the output (JSON, then one line)
lists them (index, box, score; indices in detector-score order) and compares the
best-matching pair, the two faces, one per photo, at the smallest distance. --face1 / --face2
pick a face of a photo by its index instead. A photo without a face is an error naming it.
--nodetect_faces compares the two files whole.
"""

import json
import re

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
                                                                 f.align_method),
                              face1=f.face1, face2=f.face2)
    # Indented JSON, each list of numbers (a box) on one line.
    print(re.sub(r"\[\s+([-\d.,\s]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]",
                 json.dumps(result, indent=2)))
    print(workflows.verification_summary(result))
    if result["same"] is None:
        print("the model has no recommended threshold: pass --threshold to decide")


def _define_flags():
    flags.DEFINE_string("model", None, "SavedModel dir, .keras or .tflite file.", required=True)
    flags.DEFINE_float("threshold", None, "Squared-L2 threshold (default: the model's).")
    flags.DEFINE_bool("detect_faces", True, "Find the faces of each photo (MTCNN) and compare "
                      "the best-matching pair; --nodetect_faces compares the files whole.")
    flags.DEFINE_integer("face1", None, "Compare this face of the first photo (its index in "
                         "the output's faces1) instead of the best-matching one.", lower_bound=0)
    flags.DEFINE_integer("face2", None, "Compare this face of the second photo (its index in "
                         "the output's faces2) instead of the best-matching one.", lower_bound=0)
    _cli.define_face_crop_flags()


def run():
    """The `facenet-compare` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
