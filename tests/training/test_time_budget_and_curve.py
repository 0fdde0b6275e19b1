"""The trainer's wall-clock budget (max_train_seconds) and held-out curve (eval_every_steps)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data.pairs import generate_pairs, write_pairs
from facenet_tf.evaluation.protocols import evaluate_pairs_file
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.training import loop, state as state_lib
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.run_dir import RunDir
from tests.conftest import make_image_folder, make_tiny_embedding_model
from tests.training import _helpers


def tiny():
    return make_tiny_embedding_model(_helpers.TINY_SHAPE, embedding_dim=8, seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    heldout = make_image_folder(str(root / "heldout"), num_identities=4, images_per_identity=3,
                                size=_helpers.TINY_SHAPE[:2], seed=7)
    pairs = str(root / "pairs.txt")
    write_pairs(pairs, generate_pairs(heldout, num_folds=2, pairs_per_fold=6, seed=0),
                num_folds=2)
    return {"dataset": _helpers.tiny_dataset(str(root)), "heldout": heldout, "pairs": pairs}


def _config(data, model_dir, **kw):
    base = dict(train_data=data["dataset"], model_dir=str(model_dir), batch_size=4,
                identities_per_subset=4, images_per_identity=4, verbose=0)
    base.update(kw)
    return TrainConfig(**base)


class FakeTime:
    def __init__(self):
        self.now = 100.0

    def monotonic(self):
        return self.now


def test_clock_counts_across_resumes_and_not_while_paused(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(state_lib, "time", fake)
    state = state_lib.TrainState(train_seconds=5.0)  # seconds of an earlier, resumed run
    clock = state_lib.TrainClock(state, limit=12.0)
    fake.now += 4.0
    assert not clock.spent() and state.train_seconds == 9.0
    with clock.paused():
        fake.now += 100.0  # validation
    assert not clock.spent() and state.train_seconds == 9.0
    fake.now += 3.0
    assert clock.spent() and state.train_seconds == 12.0
    assert not state_lib.TrainClock(state_lib.TrainState(), limit=None).spent()


FAKE_TIME = FakeTime()


class Tick(keras.layers.Layer):
    """Identity that moves FAKE_TIME on by `seconds` at every training step."""

    def __init__(self, seconds, **kw):
        super().__init__(**kw)
        self.seconds = seconds

    def call(self, x, training=False):
        if training:
            def tick():
                FAKE_TIME.now += self.seconds
                return np.float32(0.0)
            zero = tf.py_function(tick, [], tf.float32)
            zero.set_shape(())
            x = x + zero
        return x

    def get_config(self):
        return {**super().get_config(), "seconds": self.seconds}


def test_budget_stops_training_then_evaluates_and_exports(data, tmp_path, monkeypatch):
    FAKE_TIME.now = 100.0
    monkeypatch.setattr(state_lib, "time", FAKE_TIME)

    def ticking():  # a training step takes 10 s of the fake clock, nothing else takes any
        base = tiny()
        return keras.Model(base.input, Tick(10.0)(base.output))

    model_dir = tmp_path / "run"
    budget = dict(mining="online", strategy="semi_hard", images_per_identity=2, steps=6,
                  checkpoint_every_steps=4, eval_pairs=data["pairs"],
                  eval_images=data["heldout"])
    # 15 s: spent after step 2, which is still checkpointed, evaluated and exported.
    result = loop.train(_config(data, model_dir, max_train_seconds=15.0, **budget),
                        network_fn=ticking)
    assert result["step"] == 2
    assert [h["step"] for h in result["history"]] == [2]
    assert result["history"][0]["seconds"] > 0
    assert [e["step"] for e in result["evals"]] == [0, 2]
    assert os.path.exists(os.path.join(result["export_dir"], "saved_model.pb"))
    saved = io_utils.read_json(RunDir(str(model_dir)).train_state)
    assert (saved["step"], saved["train_seconds"]) == (2, 20.0)

    # Resumed with the same budget: already spent, so no further step.
    again = loop.train(_config(data, model_dir, max_train_seconds=15.0, **budget),
                       network_fn=ticking)
    assert again["step"] == 2 and len(again["history"]) == 1
    # A larger budget counts on from the recorded 20 s: one more step.
    more = loop.train(_config(data, model_dir, max_train_seconds=25.0, **budget),
                      network_fn=ticking)
    assert [h["step"] for h in more["history"]] == [2, 3]
    # Without a budget it goes on to --steps.
    rest = loop.train(_config(data, model_dir, **budget), network_fn=ticking)
    assert [h["step"] for h in rest["history"]] == [2, 3, 6]
    assert io_utils.read_json(RunDir(str(model_dir)).train_state)["train_seconds"] == 60.0


def test_eval_every_steps_scores_a_curve_without_changing_the_mining(data, tmp_path):
    model_dir = tmp_path / "run"
    config = _config(data, model_dir, steps=6, remine_every_steps=4, checkpoint_every_steps=3,
                     eval_every_steps=2, keep_generations=0, eval_pairs=data["pairs"],
                     eval_images=data["heldout"])
    result = loop.train(config, network_fn=tiny)
    assert [e["step"] for e in result["evals"]] == [0, 2, 4, 6]
    # Re-mined at steps 0 and 4 only, as without the curve.
    run = RunDir(str(model_dir))
    assert [io_utils.read_manifest(run.generation(g))["model_step"] for g in (0, 1)] == [0, 4]
    assert not os.path.exists(run.generation(2))
    # Checkpoint intervals end at the evaluations too.
    assert [h["step"] for h in result["history"]] == [2, 4, 6]
    # The oracle: the step-2 snapshot scored on its own.
    alone = evaluate_pairs_file(load_embedder(run.step_export(2)),
                                data["pairs"], data["heldout"])
    assert result["evals"][1]["accuracy_mean"] == pytest.approx(alone["accuracy_mean"])
    assert result["evals"][1]["roc_auc"] == pytest.approx(alone["roc_auc"])


@pytest.mark.parametrize("field, value, message", [
    ("max_train_seconds", 0.0, "max_train_seconds must be > 0"),
    ("eval_every_steps", 0, "eval_every_steps must be > 0"),
    ("eval_every_steps", 5, "eval_every_steps needs eval_pairs"),
])
def test_bad_budget_and_curve_settings_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(train_data="d", model_dir="m", **{field: value})


def test_budget_refuses_multi_worker():
    with pytest.raises(ValueError, match="max_train_seconds.*multi_worker"):
        TrainConfig(train_data="d", model_dir="m", max_train_seconds=60.0,
                    distribution="multi_worker")
