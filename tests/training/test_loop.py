"""The generation loop end to end on a tiny dataset: real Beam mining, export, resume, NaN stop."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.training import loop
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.run_dir import RunDir
from facenet_tf.training.state import TrainingDiverged
from tests.conftest import make_tiny_embedding_model
from tests.training import _helpers


def tiny():
    return make_tiny_embedding_model(_helpers.TINY_SHAPE, embedding_dim=8, seed=0)


def _config(dataset, model_dir, **kw):
    base = dict(train_data=dataset, model_dir=str(model_dir), steps=4, remine_every_steps=2,
                checkpoint_every_steps=2, batch_size=4, identities_per_subset=4,
                images_per_identity=4, verbose=0)
    base.update(kw)
    return TrainConfig(**base)


def _optimizer_iterations(checkpoint_path):
    names = [n for n, _ in tf.train.list_variables(checkpoint_path)
             if n.startswith("optimizer/") and "iteration" in n]
    assert names, tf.train.list_variables(checkpoint_path)
    return int(tf.train.load_checkpoint(checkpoint_path).get_tensor(names[0]))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _helpers.tiny_dataset(str(tmp_path_factory.mktemp("data")))


def test_two_generations_then_resume_continues(dataset, tmp_path):
    model_dir = tmp_path / "run"
    result = loop.train(_config(dataset, model_dir), network_fn=tiny)
    assert (result["step"], result["generation"]) == (4, 1)
    assert [h["step"] for h in result["history"]] == [2, 4]
    assert [h["generation"] for h in result["history"]] == [0, 1]
    for h in result["history"]:
        assert np.isfinite(h["loss"]) and 0 <= h["fraction_active"] <= 1
    # Generation 1 was mined by the model as it was at step 2 (the re-mining checkpoint).
    gen0 = io_utils.read_manifest(RunDir(str(model_dir)).generation(0))
    gen1 = io_utils.read_manifest(RunDir(str(model_dir)).generation(1))
    assert (gen0["model_step"], gen1["model_step"]) == (0, 2)
    assert gen0["model_fingerprint"] != gen1["model_fingerprint"]
    assert os.path.exists(os.path.join(result["export_dir"], "saved_model.pb"))
    assert os.path.exists(model_dir / "run_info.json")
    assert any(f.startswith("events") for f in os.listdir(model_dir / "tensorboard"))

    state = io_utils.read_json(RunDir(str(model_dir)).train_state)
    assert _optimizer_iterations(state["checkpoint"]) == 4

    # Same directory, more steps: continues at step 4 in generation 1 -> 2, keeps the history.
    again = loop.train(_config(dataset, model_dir, steps=6), network_fn=tiny)
    assert (again["step"], again["generation"]) == (6, 2)
    assert [h["step"] for h in again["history"]] == [2, 4, 6]
    assert again["history"][:2] == result["history"]
    state = io_utils.read_json(RunDir(str(model_dir)).train_state)
    assert _optimizer_iterations(state["checkpoint"]) == 6
    # keep_generations=2 (default): generation 0 and the export it was mined from are gone;
    # generations 1 and 2 and the exports at steps 2 and 4 that mined them stay.
    assert sorted(os.listdir(model_dir / "triplets")) == ["gen-00001", "gen-00002"]
    assert sorted(os.listdir(model_dir / "exports")) == ["step-00000002", "step-00000004"]


def test_async_mining_mines_the_next_generation_with_the_weights_at_the_start(dataset,
                                                                              tmp_path):
    model_dir = tmp_path / "run"
    result = loop.train(_config(dataset, model_dir, steps=6, async_mining=True,
                                keep_generations=0), network_fn=tiny)
    assert (result["step"], result["generation"]) == (6, 2)
    # Generation k+1 is mined while k trains, by the weights at the start of k.
    steps = [io_utils.read_manifest(RunDir(str(model_dir)).generation(g))["model_step"]
             for g in range(3)]
    assert steps == [0, 0, 2]
    # Only the exports the miner used: none made while a background mining was still running.
    assert sorted(os.listdir(model_dir / "exports")) == ["step-00000000", "step-00000002"]


def test_prune_generations_keeps_the_newest_and_their_exports(tmp_path):
    model_dir = tmp_path / "run"
    for gen, model_step in enumerate([0, 10, 20, 30]):
        d = model_dir / "triplets" / f"gen-{gen:05d}"
        d.mkdir(parents=True)
        (d / "triplets-00000-of-00001.tfrecord").write_bytes(b"x")
        if gen != 0:  # generation 0 as a crash mid-prune left it: manifest already removed
            (d / "manifest.json").write_text(json.dumps({"model_step": model_step}))
    for step in (0, 5, 10, 20, 30):
        (model_dir / "exports" / f"step-{step:08d}").mkdir(parents=True)
    (model_dir / "exports" / "notes.txt").write_text("not an export")

    assert RunDir(str(model_dir)).prune_generations(3, keep=0) == []
    deleted = RunDir(str(model_dir)).prune_generations(3, keep=2)
    assert sorted(os.listdir(model_dir / "triplets")) == ["gen-00002", "gen-00003"]
    assert sorted(os.listdir(model_dir / "exports")) == ["notes.txt", "step-00000020",
                                                         "step-00000030"]
    assert len(deleted) == 2 + 3
    with pytest.raises(ValueError, match="keep_generations.*got 1"):
        TrainConfig(train_data="d", model_dir="m", keep_generations=1)


def test_steps_zero_exports_the_initial_model(dataset, tmp_path):
    from facenet_tf.inference.embedders import load_embedder
    result = loop.train(_config(dataset, tmp_path / "run", steps=0,
                                export_dir=str(tmp_path / "export")), network_fn=tiny)
    assert result["step"] == 0 and result["history"] == []
    pixels = np.random.RandomState(0).uniform(-1, 1, (3,) + _helpers.TINY_SHAPE)
    got = load_embedder(str(tmp_path / "export")).embed_pixels(pixels.astype("float32"))
    want = np.asarray(tiny()(pixels.astype("float32")))
    np.testing.assert_allclose(got, want, atol=1e-5)


class PoisonAfter(keras.layers.Layer):
    """Identity for the first `n` training calls, then NaN (a diverging run, on cue)."""

    def __init__(self, n, **kw):
        super().__init__(**kw)
        self.n = n

    def build(self, shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, x, training=False):
        if training:
            self.calls.assign_add(1.0)
        poison = keras.ops.where(self.calls > self.n, float("nan"), 0.0)
        return x + poison

    def get_config(self):
        return {**super().get_config(), "n": self.n}


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(dataset, tmp_path):
    def poisoned():
        base = tiny()
        out = PoisonAfter(5, name="poison")(base.output)
        return keras.Model(base.input, out)

    config = _config(dataset, tmp_path / "run", steps=10, remine_every_steps=10)
    with pytest.raises(TrainingDiverged, match="step 6.*step 4"):
        loop.train(config, network_fn=poisoned)
    state = io_utils.read_json(RunDir(str(tmp_path / "run")).train_state)
    assert state["step"] == 4 and [h["step"] for h in state["history"]] == [2, 4]
    reader = tf.train.load_checkpoint(state["checkpoint"])
    for name, _ in tf.train.list_variables(state["checkpoint"]):
        if name.startswith("model/") and "VARIABLE_VALUE" in name:
            assert np.all(np.isfinite(reader.get_tensor(name))), name


def test_final_export_carries_the_threshold_of_its_evaluation(tmp_path):
    from facenet_tf.data.pairs import generate_pairs, write_pairs
    from facenet_tf.evaluation import protocols
    from facenet_tf.inference.embedders import load_embedder
    from facenet_tf.recognition import workflows
    from tests.conftest import make_image_folder
    dataset = _helpers.tiny_dataset(str(tmp_path / "data"))
    heldout = make_image_folder(str(tmp_path / "heldout"), num_identities=4,
                                images_per_identity=3, size=_helpers.TINY_SHAPE[:2], seed=7)
    pairs_path = str(tmp_path / "pairs.txt")
    write_pairs(pairs_path, generate_pairs(heldout, num_folds=2, pairs_per_fold=6, seed=0),
                num_folds=2)
    export_dir = str(tmp_path / "export")
    result = loop.train(_config(dataset, tmp_path / "run", steps=2, export_dir=export_dir,
                                eval_pairs=pairs_path, eval_images=heldout), network_fn=tiny)
    assert [e["step"] for e in result["evals"]] == [0, 2] and result["eval"]["step"] == 2

    # The oracle: the served export evaluated on its own, as a user would.
    served = protocols.evaluate_pairs_file(load_embedder(export_dir), pairs_path, heldout)
    embedder = load_embedder(export_dir)
    assert embedder.threshold == pytest.approx(served["threshold_mean"], abs=1e-4)
    first = os.path.join(heldout, "person_00", "img_000.png")
    other = os.path.join(heldout, "person_01", "img_000.png")
    decision = workflows.verify(embedder, first, other)
    assert decision["threshold"] == embedder.threshold
    assert decision["same"] == (decision["distance"] <= embedder.threshold)
