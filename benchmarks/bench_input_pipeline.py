"""Input pipeline images/s (TFRecords -> decode, crop, augment, 160x160 P x K batches) vs the
training-step images/s of NN4 and Inception-ResNet-v1, measured in the same run.

    python -m benchmarks.bench_input_pipeline [--quick]

Target: input >= 2x the step rate, so training is never input-bound. The two are measured one
after the other, each with the whole machine; during real training they share the CPU.
Data: LFW deep-funneled (250x250 JPEGs) from ../shared/data if present, else synthetic
250x250 JPEG faces (quick mode always uses the synthetic set).
"""

import os
import sys
import tempfile
import time

import numpy as np

from benchmarks import common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LFW = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "lfw_dev", "images")
MODELS = ("nn4", "inception_resnet_v1")
TARGET = 2.0


def _synthetic_folder(root, identities, per_identity, seed=0):
    from PIL import Image
    rng = np.random.RandomState(seed)
    for i in range(identities):
        os.makedirs(os.path.join(root, f"id_{i:03d}"))
        base = rng.randint(0, 256, (250, 250, 3))
        for j in range(per_identity):
            pixels = np.clip(base + rng.randint(-30, 31, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, f"id_{i:03d}", f"{j}.jpg"),
                                         quality=90)
    return root


def input_rate(dataset_dir, p, k, num_batches, seed=0):
    """Images/s of pk_batches with augmentation at 160x160, after one warm-up batch."""
    from facenet_tf.data import augment, readers
    from facenet_tf.data.preprocess import PreprocessConfig
    ds = readers.pk_batches(dataset_dir, p, k, PreprocessConfig((160, 160), crop_fraction=0.7),
                             seed=seed, augment=augment.AugmentConfig())
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
        images, _ = next(it)
    elapsed = time.perf_counter() - start
    return num_batches * p * k / elapsed


def train_step_rate(name, batch_size, num_steps, seed=0):
    """Images/s of forward + backward + Adagrad update on random standardised images."""
    import tensorflow as tf

    from facenet_tf import models
    model = models.build_model(name, seed=seed)
    shape = models.default_input_shape(name)
    optimizer = tf.keras.optimizers.Adagrad(0.05)
    rng = np.random.RandomState(seed)
    images = tf.constant(rng.uniform(-1, 1, (batch_size, *shape)).astype(np.float32))
    labels = tf.constant(np.repeat(np.arange(batch_size // 4), 4)[:batch_size])

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            emb = model(x, training=True)
            d = tf.reduce_sum(tf.square(emb[:, None] - emb[None]), -1)
            same = tf.cast(tf.equal(y[:, None], y[None]), tf.float32)
            loss = tf.reduce_mean(same * d - (1 - same) * tf.minimum(d, 0.2))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    step(images, labels)  # trace + first step
    start = time.perf_counter()
    for _ in range(num_steps):
        step(images, labels).numpy()
    return num_steps * batch_size / (time.perf_counter() - start), shape


def run(quick: bool) -> list:
    from facenet_tf.pipelines import build_dataset
    p, k = (8, 4) if quick else (30, 4)
    with tempfile.TemporaryDirectory() as tmp:
        if not quick and os.path.isdir(LFW):
            source, data_note = LFW, "LFW deep-funneled 250x250 JPEG"
        else:
            source = _synthetic_folder(os.path.join(tmp, "faces"), 16 if quick else 64, 6)
            data_note = "synthetic 250x250 JPEG"
        out = os.path.join(tmp, "built")
        build_dataset.build_dataset(source, out, num_shards=8)
        rate_in = input_rate(out, p, k, num_batches=3 if quick else 15)

    rows = []
    for name in MODELS:
        batch = 16 if quick else 64
        base = {"benchmark": "input_pipeline",
                "metric": f"input images/s vs {name} train images/s"}
        try:
            rate_train, shape = train_step_rate(name, batch, num_steps=1 if quick else 3)
        except ImportError as e:  # the models package may not be there yet
            rows.append({**base, "value": rate_in, "baseline": None, "ratio": None,
                         "target": TARGET, "notes": f"skipped model: {e}"})
            continue
        rows.append({**base, "value": rate_in, "baseline": rate_train,
                     "ratio": rate_in / rate_train, "target": TARGET,
                     "notes": f"input: pk_batches P={p} K={k}, augment, 160x160, {data_note}; "
                              f"train: batch {batch} at {shape[0]}x{shape[1]}, fwd+bwd+Adagrad"})
    return rows


def main(argv=None):
    return common.bench_main(run, __doc__, "small data, few steps", argv)


if __name__ == "__main__":
    sys.exit(main())
