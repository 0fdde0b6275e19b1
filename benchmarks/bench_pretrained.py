"""Embedding throughput of the converted pretrained FaceNet against the original frozen graph
through tf.compat.v1 (batch fixed at 1), on the same standardised faces in the same run.

Three ways to run the converted model, at batch 1 and 64:
- keras_call: `model(x, training=False)` in a tf.function, the training form (batch norm as
  separate ops, weights as variables); reported, no target;
- inference_fn: `facenet_tf.models.inference.inference_function(model)` (batch norm folded,
  weights frozen to constants, XLA for batches <= 8), what `facenet_tf.export` serves;
- saved_model: the `embed` signature of the project's export, loaded with tf.saved_model.load.

Ceiling: the graph costs 2.84 GFLOP per image (TF profiler) and this machine's float32
matmul peak is about 245 GFLOP/s, so about 86 images/s.

python -m benchmarks.bench_pretrained [--quick]
"""

import glob
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks import common
from facenet_tf.data.preprocess import preprocess_encoded
from facenet_tf.models import frozen_graph

CEILING_IMAGES_PER_S = 245e9 / 2.84e9
SHARED_LFW = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
                          os.pardir, "shared", "data", "lfw_dev", "images")


def _faces(n, seed=0):
    """n standardised 160x160 faces: real LFW images if present, else seeded noise."""
    paths = sorted(glob.glob(os.path.join(SHARED_LFW, "*", "*.jpg")))
    if not paths:
        return np.random.RandomState(seed).randn(n, 160, 160, 3).astype(np.float32), "noise"
    chosen = np.random.RandomState(seed).choice(len(paths), n, replace=len(paths) < n)
    cfg = frozen_graph.PRETRAINED_PREPROCESS
    return np.stack([preprocess_encoded(tf.io.read_file(paths[i]), cfg).numpy()
                     for i in chosen]), "LFW"


def _rate(fn, images, batch, repeats):
    """images/s of fn over `images` in batches of `batch` (after one warm-up batch)."""
    fn(images[:batch])
    start = time.perf_counter()
    done = 0
    for _ in range(repeats):
        for i in range(0, len(images) - batch + 1, batch):
            fn(images[i:i + batch])
            done += batch
    return done / (time.perf_counter() - start)


def run(quick: bool) -> list:
    n = 64 if quick else 128
    repeats = 1 if quick else 2
    images, source = _faces(n)
    graph_def = frozen_graph.load_frozen_graph_def()
    frozen = frozen_graph.FrozenGraphRunner(graph_def)
    model = frozen_graph.build_pretrained_model(graph_def=graph_def)
    keras_fn = tf.function(lambda x: model(x, training=False))
    from facenet_tf.models.inference import inference_function
    inference_fn = inference_function(model)
    from facenet_tf.serving.saved_model import export_saved_model
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(model, os.path.join(tmp, "sm"), frozen_graph.PRETRAINED_PREPROCESS)
        loaded = tf.saved_model.load(os.path.join(tmp, "sm"))
    embed = loaded.signatures["embed"]
    saved_fn = lambda x: embed(pixels=tf.constant(x))["embeddings"]  # noqa: E731

    def paired(fn, batch):
        """(graph b1 rate, fn rate), measured in alternating rounds so that load drifts hit
        both alike."""
        imgs = images[: n // 2] if batch == 1 else images
        graph, mine = [], []
        for _ in range(2 * repeats):
            graph.append(_rate(frozen, images[: n // 2], 1, 1))
            mine.append(_rate(lambda x: np.asarray(fn(x)), imgs, batch, 1))
        return float(np.mean(graph)), float(np.mean(mine))

    rows = []
    baselines = []
    for name, fn in (("keras_call", keras_fn), ("inference_fn", inference_fn),
                     ("saved_model", saved_fn)):
        for batch, target in ((1, 1.0), (64, 1.5)):
            target = None if name == "keras_call" else target
            graph_b1, rate = paired(fn, batch)
            baselines.append(graph_b1)
            rows.append({"benchmark": "pretrained", "metric": f"{name}_b{batch}_images_per_s",
                         "value": round(rate, 2), "baseline": round(graph_b1, 2),
                         "ratio": round(rate / graph_b1, 2),
                         "target": f">= {target}x" if target else None,
                         "notes": f"vs frozen graph batch 1 (alternating rounds); "
                                  f"{rate / CEILING_IMAGES_PER_S:.0%} of ceiling"})
    graph_b1 = float(np.mean(baselines))
    rows.insert(0, {"benchmark": "pretrained", "metric": "frozen_graph_compat_v1_b1_images_per_s",
                    "value": round(graph_b1, 2), "baseline": None, "ratio": None, "target": None,
                    "notes": f"{source} faces; {graph_b1 / CEILING_IMAGES_PER_S:.0%} of the "
                             f"{CEILING_IMAGES_PER_S:.0f} img/s ceiling"})
    frozen.close()
    return rows


def main(argv=None):
    return common.bench_main(run, __doc__, "fewer images and repeats", argv)


if __name__ == "__main__":
    sys.exit(main())
