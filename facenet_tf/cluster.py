"""Clusters the faces in a folder of photos (the paper's section 5.6) and writes the clusters.

  python -m facenet_tf.cluster --model DIR --output clusters.json [--threshold T] \
      [--contact_sheet clusters.png] PHOTO_FOLDER

Every face found (MTCNN, then aligned) is clustered; each cluster (largest first) lists its
faces as photo, face rank and box; photos without a face are listed as skipped. If every photo
is in an identity sub-folder, NMI and AMI against them are reported too. --contact_sheet draws
one row of face thumbnails per cluster. --nodetect_faces clusters the files whole.
"""

import json

from absl import app, flags

from facenet_tf import _cli
from facenet_tf.common import io_utils
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.evaluation import clustering
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import workflows


def main(argv):
    f = flags.FLAGS
    if len(argv) != 2:
        raise app.UsageError("give one folder")
    io_utils.require_dir(argv[1])  # before the model loads
    embedder = load_embedder(f.model)
    result = workflows.cluster_folder(
        embedder, argv[1], f.threshold, f.linkage,
        detector=FaceDetector() if f.detect_faces else None,
        align=batch_embed.align_config_for(embedder, f.margin, f.align_method),
        contact_sheet=f.contact_sheet)
    if f.output:
        io_utils.write_json_atomic(f.output, result)
    for c in result["clusters"]:
        print(f"cluster {c['cluster']} ({len(c['members'])}): {' '.join(c['images'])}")
    for s in result["skipped"]:
        print(f"skipped {s['photo']}: {s['reason']}")
    summary = {k: v for k, v in result.items() if k not in ("clusters", "skipped")}
    print(json.dumps(summary, indent=2))


def _define_flags():
    flags.DEFINE_string("model", None, "SavedModel dir, .keras or .tflite file.", required=True)
    flags.DEFINE_string("output", None, "Write the clusters listing (JSON) here.")
    flags.DEFINE_string("contact_sheet", None, "Write a PNG with one row of face thumbnails "
                        "per cluster here.")
    flags.DEFINE_float("threshold", None, "Squared-L2 merge threshold (default: the model's, "
                       f"else {workflows.DEFAULT_CLUSTER_THRESHOLD}).")
    flags.DEFINE_enum("linkage", "average", list(clustering.LINKAGES), "Agglomerative linkage.")
    flags.DEFINE_bool("detect_faces", True, "Cluster every face of each photo (MTCNN); "
                      "--nodetect_faces clusters the files whole.")
    _cli.define_face_crop_flags()


def run():
    """The `facenet-cluster` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
