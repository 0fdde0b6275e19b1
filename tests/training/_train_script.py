"""Subprocess entry for trainer tests that need a fresh TF runtime (logical devices, workers,
SIGKILL). Usage: _train_script.py train CONFIG_JSON | first_update REPLICAS OUT_NPZ."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))

from tests.conftest import make_tiny_embedding_model  # noqa: E402
from tests.training import _helpers  # noqa: E402


def tiny_embedder():
    return make_tiny_embedding_model(_helpers.TINY_SHAPE, embedding_dim=8, seed=0)


def train(config_json):
    import keras
    keras.config.disable_traceback_filtering()
    from facenet_tf.training import loop
    from facenet_tf.training.config import TrainConfig
    result = loop.train(TrainConfig(**json.loads(config_json)), network_fn=tiny_embedder)
    print("RESULT " + json.dumps({k: result[k] for k in ("step", "generation", "loss")}),
          flush=True)


def first_update(replicas, out):
    """One SGD step of the offline trainer on a fixed batch of 8 triplets; saves the weights."""
    import numpy as np

    from facenet_tf.training import builders, distribution
    from facenet_tf.training.config import TrainConfig
    distribute_strategy = distribution.make_distribute_strategy("mirrored", int(replicas))
    assert distribute_strategy.num_replicas_in_sync == max(1, int(replicas))
    config = TrainConfig(train_data="unused", model_dir="unused", optimizer="sgd",
                         momentum=0.0, learning_rate=0.5, alpha=0.5, batch_size=8)
    model, embedder, _ = builders.compile_model(config, distribute_strategy, tiny_embedder)
    x = np.random.RandomState(1).uniform(-1, 1, (8, 3) + _helpers.TINY_SHAPE).astype("float32")
    initial = [w.copy() for w in embedder.get_weights()]
    history = model.fit(x, np.zeros(8, "float32"), batch_size=8, epochs=1, shuffle=False,
                        verbose=0)
    np.savez(out, loss=history.history["loss"][0],
             **{f"w{i}": w for i, w in enumerate(embedder.get_weights())},
             **{f"init{i}": w for i, w in enumerate(initial)})


if __name__ == "__main__":
    {"train": train, "first_update": first_update}[sys.argv[1]](*sys.argv[2:])
