"""Clusters the faces of a folder (the paper's section 5.6) and writes the clusters as a listing.

  python -m facenet_tf.cluster --model DIR --output clusters.json [--threshold T] FOLDER

The listing maps each cluster (largest first) to its image paths relative to FOLDER. If the
folder holds identity sub-folders, NMI and AMI against them are reported too.
"""

import json

from absl import app, flags

from facenet_tf import cli, io_utils, workflows
from facenet_tf.evaluation import clustering
from facenet_tf.serving.loader import load_embedder


def main(argv):
    f = flags.FLAGS
    if len(argv) != 2:
        raise app.UsageError("give one folder")
    result = workflows.cluster_folder(load_embedder(f.model), argv[1], f.threshold, f.linkage)
    if f.output:
        io_utils.write_json_atomic(f.output, result)
    for c in result["clusters"]:
        print(f"cluster {c['cluster']} ({len(c['images'])}): {' '.join(c['images'])}")
    summary = {k: v for k, v in result.items() if k != "clusters"}
    print(json.dumps(summary, indent=2))


def _define_flags():
    flags.DEFINE_string("model", None, "SavedModel dir or .keras file.", required=True)
    flags.DEFINE_string("output", None, "Write the clusters listing (JSON) here.")
    flags.DEFINE_float("threshold", None, "Squared-L2 merge threshold (default: the model's, "
                       f"else {workflows.DEFAULT_CLUSTER_THRESHOLD}).")
    flags.DEFINE_enum("linkage", "average", list(clustering.LINKAGES), "Agglomerative linkage.")


def run():
    """The `facenet-cluster` command."""
    _define_flags()
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
