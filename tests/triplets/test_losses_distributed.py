"""OnlineTripletLoss under MirroredStrategy (2 logical CPUs) equals one device on the global batch.

The two-device run happens in a subprocess: logical devices must be configured before any other
TensorFlow op, which a shared pytest process cannot guarantee. The reference single-device run
is in the same subprocess, on the same data and initial weights.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

SCRIPT = r'''
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import keras
import numpy as np
from facenet_tf.triplets import losses

SPECS = [dict(strategy="semi_hard", alpha=0.5, seed=3), dict(strategy="hard", alpha=0.5)]
rng = np.random.RandomState(0)
x = rng.randn(32, 6).astype(np.float32)
# Batch 1: each replica's half holds one image per identity, so only global mining finds pairs.
y = np.concatenate([np.tile(np.arange(8), 2), rng.randint(0, 3, size=16)]).astype(np.int64)


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    out = keras.layers.UnitNormalization()(keras.layers.Dense(4)(inputs))
    return keras.Model(inputs, out)


def run(strategy, spec):
    with strategy.scope():
        model = build()
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=losses.OnlineTripletLoss(**spec),
                      metrics=losses.triplet_metrics(**spec))
    w0 = [w.numpy() for w in model.weights]
    # fit on a dataset, not train_on_batch: under MirroredStrategy Keras 3.15's train_on_batch
    # hands every replica the whole batch instead of splitting it.
    def one_batch(lo):
        return tf.data.Dataset.from_tensor_slices((x[lo:lo + 16], y[lo:lo + 16])).batch(16)
    one_step = model.fit(one_batch(0), epochs=1, verbose=0, shuffle=False).history
    w1 = [w.numpy() for w in model.weights]
    fit = model.fit(one_batch(16), epochs=1, verbose=0, shuffle=False).history
    return {"replicas": strategy.num_replicas_in_sync,
            "step1": {k: float(v[0]) for k, v in one_step.items()},
            "grads1": [((a - b) / 0.5).tolist() for a, b in zip(w0, w1)],
            "fit": {k: float(v[0]) for k, v in fit.items()},
            "weights2": [w.numpy().tolist() for w in model.weights]}


out = {}
for spec in SPECS:
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out[spec["strategy"]] = {"mirrored": run(mirrored, spec),
                             "single": run(tf.distribute.get_strategy(), spec)}
    half = build()
    out[spec["strategy"]]["half_loss"] = float(
        losses.OnlineTripletLoss(**spec)(y[:8], half(x[:8])))
print("RESULT" + json.dumps(out))
'''


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("strategy", ["semi_hard", "hard"])
def test_mirrored_loss_gradients_and_metrics_equal_single_device(results, strategy):
    r = results[strategy]
    mirrored, single = r["mirrored"], r["single"]
    assert mirrored["replicas"] == 2 and single["replicas"] == 1
    # Mining sees the global batch: each replica's half alone has no anchor-positive pair.
    assert r["half_loss"] == 0.0
    assert single["step1"]["loss"] > 0.0 and single["step1"]["num_triplets"] > 0
    for key in single["step1"]:
        np.testing.assert_allclose(mirrored["step1"][key], single["step1"][key], atol=1e-5,
                                   err_msg=key)
    for got, want in zip(mirrored["grads1"], single["grads1"]):
        assert np.abs(np.asarray(want)).max() > 1e-4  # a real gradient, not zeros on both sides
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    for key in single["fit"]:
        np.testing.assert_allclose(mirrored["fit"][key], single["fit"][key], atol=1e-5,
                                   err_msg=key)
    for got, want in zip(mirrored["weights2"], single["weights2"]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
