"""Compares two face images: squared L2 distance and same/different at the model's threshold.

  python -m facenet_tf.compare --model DIR IMG1 IMG2 [--threshold T]
"""

import json

from facenet_tf import export
from facenet_tf.evaluation import embedding, verification


def compare(embedder, path1: str, path2: str, threshold: float | None = None) -> dict:
    emb = embedding.embed_files(embedder, [path1, path2], progress_every_s=1e9)
    d = float(verification.squared_l2(emb[:1], emb[1:])[0])
    t = threshold if threshold is not None else embedder.threshold
    return {"image1": path1, "image2": path2, "distance": d, "threshold": t,
            "same": None if t is None else d <= t}


def main(argv):
    from absl import app, flags
    f = flags.FLAGS
    if len(argv) != 3:
        raise app.UsageError("give exactly two image paths")
    result = compare(export.load_embedder(f.model), argv[1], argv[2], f.threshold)
    print(json.dumps(result, indent=2))
    if result["same"] is None:
        print("the model has no recommended threshold: pass --threshold to decide")


def _define_flags():
    from absl import flags
    flags.DEFINE_string("model", None, "SavedModel dir or .keras file.", required=True)
    flags.DEFINE_float("threshold", None, "Squared-L2 threshold (default: the model's).")


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main)
