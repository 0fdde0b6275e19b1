"""Online mining (P x K batches, in-batch selection) through facenet_tf.training.loop.train.

Also runnable as a script: `test_online.py RUN CONFIG_JSON OUT_NPZ` trains in a fresh TF
runtime (needed for logical CPU replicas) and saves the loss history and final weights.
"""

import json
import os
import subprocess
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.realpath(__file__)))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests import _triplet_oracle as oracle  # noqa: E402
from tests.conftest import make_tiny_embedding_model  # noqa: E402
from tests.training import _helpers  # noqa: E402

K = 2
BATCH = 8  # P = 4 identities of K = 2 images


def tiny():
    return make_tiny_embedding_model(_helpers.TINY_SHAPE, embedding_dim=8, seed=0)


def _config(dataset, model_dir, **kw):
    base = dict(train_data=dataset, model_dir=str(model_dir), mining="online", strategy="hard",
                alpha=0.5, batch_size=BATCH, images_per_identity=K, steps=5,
                checkpoint_every_steps=1, optimizer="adagrad", learning_rate=0.1, verbose=0)
    base.update(kw)
    return base


def _train(config_dict):
    from facenet_tf.training import loop
    from facenet_tf.training.config import TrainConfig
    return loop.train(TrainConfig(**config_dict), network_fn=tiny)


def _checkpoint_variables(path):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(path)
    # The weights are stored under the optimizer (its trainable variables), with its slots.
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
            if name.startswith("optimizer/")}


def _batches(dataset, config_dict, count):
    """The first `count` P x K batches the trainer draws (same seed and preprocessing)."""
    from facenet_tf.data.readers import pk_batches
    from facenet_tf.training import builders
    from facenet_tf.training.config import TrainConfig
    preprocess = builders.preprocess_config(TrainConfig(**config_dict), _helpers.TINY_SHAPE)
    ds = pk_batches(dataset, BATCH // K, K, preprocess, seed=config_dict.get("seed", 0))
    return list(ds.take(count).as_numpy_iterator())


def _oracle_hard_loss(embeddings, labels, alpha):
    """Mean hinge over the hardest-negative triplets of every anchor-positive pair (plain loops)."""
    d = oracle.oracle_distances(embeddings)
    triplets = oracle.oracle_hard(d, list(labels))
    assert triplets
    return sum(max(d[a][p] - d[a][n] + alpha, 0.0) for a, p, n in triplets) / len(triplets)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _helpers.tiny_dataset(str(tmp_path_factory.mktemp("data")), num_identities=6,
                                 images_per_identity=3)


@pytest.fixture(scope="module")
def straight_run(dataset, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("straight") / "run"
    config = _config(dataset, model_dir)
    return config, _train(config)


def test_online_training_runs_checkpoints_and_exports(dataset, straight_run):
    import tensorflow as tf
    config, result = straight_run
    model_dir = config["model_dir"]
    assert result["step"] == 5
    assert [h["step"] for h in result["history"]] == [1, 2, 3, 4, 5]
    losses = [h["loss"] for h in result["history"]]
    assert all(np.isfinite(losses))
    for h in result["history"]:
        # hard mining: every ordered pair (P * K * (K - 1) = 8) gets a triplet.
        assert h["num_triplets"] == BATCH * (K - 1)
        assert 0 <= h["fraction_active"] <= 1

    # Step 1's loss is that of batch 0 under the initial weights: recompute it independently.
    images, labels = _batches(dataset, config, 1)[0]
    embeddings = np.asarray(tiny()(images), np.float64)
    want = _oracle_hard_loss(embeddings.tolist(), labels.tolist(), config["alpha"])
    np.testing.assert_allclose(losses[0], want, rtol=1e-4)

    state = json.loads(open(os.path.join(model_dir, "train_state.json")).read())
    assert state["step"] == 5 and os.path.exists(state["checkpoint"] + ".index")
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5]
    assert os.path.exists(os.path.join(result["export_dir"], "saved_model.pb"))

    # TensorBoard scalars under the same tags, with the values of the history.
    logged = {}
    tb_dir = os.path.join(model_dir, "tensorboard")
    for name in os.listdir(tb_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(tb_dir, name)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                logged[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    for h in result["history"]:
        np.testing.assert_allclose(logged[("train/loss", h["step"])], h["loss"], rtol=1e-6)
    assert ("train/learning_rate", 5) in logged


def test_online_resume_continues_the_data_stream(dataset, straight_run, tmp_path):
    config, result = straight_run
    straight = [h["loss"] for h in result["history"]]
    # Checkpoints every 2 steps: steps=3 runs 2 steps, then 1; the re-run continues with 2 more.
    first = _train(_config(dataset, tmp_path / "run", steps=3, checkpoint_every_steps=2))
    assert first["step"] == 3 and [h["step"] for h in first["history"]] == [2, 3]
    again = _train(_config(dataset, tmp_path / "run", steps=5, checkpoint_every_steps=2))
    assert again["step"] == 5 and [h["step"] for h in again["history"]] == [2, 3, 5]
    # Every step trained on the same batch as in the uninterrupted run (Keras reports an
    # interval's mean loss), and ended with the same weights and optimizer state.
    np.testing.assert_allclose([h["loss"] for h in again["history"]],
                               [np.mean(straight[:2]), straight[2], np.mean(straight[3:])],
                               rtol=1e-5)
    want = _checkpoint_variables(json.load(open(os.path.join(config["model_dir"],
                                                             "train_state.json")))["checkpoint"])
    got = _checkpoint_variables(
        json.load(open(tmp_path / "run" / "train_state.json"))["checkpoint"])
    assert want.keys() == got.keys() and want
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)


def test_pk_stream_ignores_the_global_seed_and_starts_at_start_batch(dataset):
    """The cause of the online-mode crash: Dataset.shuffle with a tensor seed under global seed 0."""
    import tensorflow as tf

    from facenet_tf.data.preprocess import PreprocessConfig
    from facenet_tf.data.readers import pk_batches

    def labels(global_seed, start_batch=0):
        tf.random.set_seed(global_seed)
        ds = pk_batches(dataset, 2, 2, PreprocessConfig((8, 8)), seed=3, num_epochs=3,
                        start_batch=start_batch)
        return [b[1].tolist() for b in ds.as_numpy_iterator()]

    reference = labels(7)
    assert len(reference) == 9  # 6 identities / P=2, per pass
    assert labels(0) == reference
    assert labels(0, start_batch=4) == reference[4:]


def _run_subprocess(config_dict, out):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=_helpers.REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, os.path.realpath(__file__), "RUN",
                             json.dumps(config_dict), str(out)], env=env, cwd=_helpers.REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_cpu_replicas_make_the_same_first_online_step_as_one(dataset, tmp_path):
    outs, procs = {}, {}
    for replicas in (1, 2):
        config = _config(dataset, tmp_path / f"run{replicas}", steps=1, optimizer="sgd",
                         momentum=0.0, learning_rate=0.5, num_cpu_replicas=replicas)
        outs[replicas] = tmp_path / f"r{replicas}.npz"
        procs[replicas] = _run_subprocess(config, outs[replicas])
    for replicas, proc in procs.items():
        log, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, log[-3000:]
    one, two = (dict(np.load(outs[r])) for r in (1, 2))
    assert two["replicas"] == 2 and one["replicas"] == 1
    weights = sorted(k for k in one if k.startswith("w"))
    init = [np.asarray(w) for w in tiny().get_weights()]
    assert max(np.abs(one[k] - init[int(k[1:])]).max() for k in weights) > 1e-4
    # Each replica holds 2 of the 4 identities: only mining over the gathered global batch
    # gives the one-replica loss and update.
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    for k in weights:
        np.testing.assert_allclose(two[k], one[k], atol=1e-6, err_msg=k)


def _script(config_json, out):
    from facenet_tf.training import distribution, loop
    from facenet_tf.training.config import TrainConfig
    config = TrainConfig(**json.loads(config_json))
    distribute_strategy = distribution.make_distribute_strategy(config.distribution,
                                                                config.num_cpu_replicas)
    captured = {}

    def embedder():
        model = tiny()
        captured["model"] = model
        return model

    result = loop.train(config, network_fn=embedder, distribute_strategy=distribute_strategy)
    np.savez(out, loss=result["history"][0]["loss"],
             replicas=distribute_strategy.num_replicas_in_sync,
             **{f"w{i}": w for i, w in enumerate(captured["model"].get_weights())})


if __name__ == "__main__":
    assert sys.argv[1] == "RUN", sys.argv
    _script(*sys.argv[2:])
