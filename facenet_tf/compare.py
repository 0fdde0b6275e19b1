"""Compares two face images: squared L2 distance and same/different at the model's threshold.

  python -m facenet_tf.compare --model DIR IMG1 IMG2 [--threshold T]
"""

import json

from absl import app, flags

from facenet_tf import cli, workflows
from facenet_tf.serving.loader import load_embedder


def main(argv):
    f = flags.FLAGS
    if len(argv) != 3:
        raise app.UsageError("give exactly two image paths")
    result = workflows.compare(load_embedder(f.model), argv[1], argv[2], f.threshold)
    print(json.dumps(result, indent=2))
    if result["same"] is None:
        print("the model has no recommended threshold: pass --threshold to decide")


def _define_flags():
    flags.DEFINE_string("model", None, "SavedModel dir or .keras file.", required=True)
    flags.DEFINE_float("threshold", None, "Squared-L2 threshold (default: the model's).")


def run():
    """The `facenet-compare` command."""
    _define_flags()
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
