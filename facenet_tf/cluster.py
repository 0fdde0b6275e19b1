"""Clusters the faces of a folder (the paper's section 5.6) and writes the clusters as a listing.

  python -m facenet_tf.cluster --model DIR --output clusters.json [--threshold T] FOLDER

The listing maps each cluster (largest first) to its image paths relative to FOLDER. If the
folder holds identity sub-folders, NMI and AMI against them are reported too.
"""

import json
import os

from facenet_tf import export, io_utils
from facenet_tf.evaluation import clustering, embedding

DEFAULT_THRESHOLD = 1.0


def cluster_folder(embedder, folder: str, threshold: float | None = None,
                   linkage: str = "average", batch_size: int = 64) -> dict:
    paths = embedding.list_images(folder)
    if not paths:
        raise ValueError(f"{folder}: no images found")
    t = threshold if threshold is not None else (embedder.threshold or DEFAULT_THRESHOLD)
    emb = embedding.embed_files(embedder, paths, batch_size=batch_size)
    ids = clustering.agglomerative_clusters(emb, distance_threshold=t, linkage=linkage)
    rel = [os.path.relpath(p, folder) for p in paths]
    groups = {}
    for r, c in zip(rel, ids):
        groups.setdefault(int(c), []).append(r)
    ordered = sorted(groups.values(), key=lambda g: (-len(g), g[0]))
    result = {"folder": folder, "threshold": t, "linkage": linkage,
              "model_fingerprint": embedder.fingerprint, "num_images": len(paths),
              "clusters": [{"cluster": i, "images": g} for i, g in enumerate(ordered)]}
    if all(os.sep in r for r in rel):
        result.update(clustering.clustering_scores([r.split(os.sep)[0] for r in rel], ids))
    return result


def main(argv):
    from absl import app, flags
    f = flags.FLAGS
    if len(argv) != 2:
        raise app.UsageError("give one folder")
    result = cluster_folder(export.load_embedder(f.model), argv[1], f.threshold, f.linkage)
    if f.output:
        io_utils.write_json_atomic(f.output, result)
    for c in result["clusters"]:
        print(f"cluster {c['cluster']} ({len(c['images'])}): {' '.join(c['images'])}")
    summary = {k: v for k, v in result.items() if k != "clusters"}
    print(json.dumps(summary, indent=2))


def _define_flags():
    from absl import flags
    flags.DEFINE_string("model", None, "SavedModel dir or .keras file.", required=True)
    flags.DEFINE_string("output", None, "Write the clusters listing (JSON) here.")
    flags.DEFINE_float("threshold", None, "Squared-L2 merge threshold (default: the model's, "
                       f"else {DEFAULT_THRESHOLD}).")
    flags.DEFINE_enum("linkage", "average", list(clustering.LINKAGES), "Agglomerative linkage.")


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main)
