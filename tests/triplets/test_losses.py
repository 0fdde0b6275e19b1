"""facenet_tf.triplets.losses: hand-computed values and gradient signs, loop oracles, Keras behaviour."""

import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.triplets import losses, mining
from tests._triplet_oracle import (
    oracle_distances,
    oracle_hard,
    oracle_semi_hard_hardest,
    oracle_tfa,
)


def np_triplet_loss(emb, triplets, alpha):
    out = []
    for a, p, n in triplets:
        d_ap = sum((x - y) ** 2 for x, y in zip(emb[a], emb[p]))
        d_an = sum((x - y) ** 2 for x, y in zip(emb[a], emb[n]))
        out.append(max(d_ap - d_an + alpha, 0.0))
    return out


def test_triplet_loss_hand_computed_values():
    a = np.array([[0.0, 0.0], [0.0, 0.0]], np.float32)
    p = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    n = np.array([[0.0, 2.0], [0.5, 0.0]], np.float32)
    # d_ap = 1; d_an = 4 -> [1 - 4 + 0.2]_+ = 0; d_an = 0.25 -> 1 - 0.25 + 0.2 = 0.95
    got = losses.triplet_loss(a, p, n, alpha=0.2).numpy()
    np.testing.assert_allclose(got, [0.0, 0.95], rtol=1e-6)


def test_triplet_loss_gradient_signs():
    a = tf.Variable([[0.0, 0.0]])
    p = tf.Variable([[1.0, 0.0]])
    n = tf.Variable([[0.5, 0.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.triplet_loss(a, p, n, alpha=0.2))
    ga, gp, gn = (g.numpy()[0] for g in tape.gradient(loss, [a, p, n]))
    # d/dp = 2 (p - a) = (2, 0): descent pulls p to a. d/dn = 2 (a - n) = (-1, 0): pushes n away.
    # d/da = 2 (n - p) = (-1, 0).
    np.testing.assert_allclose(gp, [2.0, 0.0])
    np.testing.assert_allclose(gn, [-1.0, 0.0])
    np.testing.assert_allclose(ga, [-1.0, 0.0])


def test_inactive_triplet_has_zero_gradient():
    a, p, n = (tf.Variable([v]) for v in ([0.0, 0.0], [1.0, 0.0], [0.0, 2.0]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.triplet_loss(a, p, n))
    for g in tape.gradient(loss, [a, p, n]):
        np.testing.assert_array_equal(g.numpy(), 0.0)


def test_offline_loss_is_per_example_and_matches_loop():
    rng = np.random.RandomState(0)
    y_pred = rng.randn(6, 3, 4).astype(np.float32) * 0.4
    loss = losses.OfflineTripletLoss(alpha=0.3)
    per_example = loss.call(None, tf.constant(y_pred)).numpy()
    want = np_triplet_loss(y_pred.reshape(18, 4).tolist(),
                           [(3 * i, 3 * i + 1, 3 * i + 2) for i in range(6)], 0.3)
    assert per_example.shape == (6,)
    np.testing.assert_allclose(per_example, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss(np.zeros(6), y_pred)), np.mean(want), rtol=1e-5)


def batch(seed, n=12, ids=4, dim=3):
    rng = np.random.RandomState(seed)
    return (rng.randn(n, dim) * 0.6).astype(np.float32), rng.randint(0, ids, size=n)


@pytest.mark.parametrize("strategy,options,oracle", [
    ("hard", {}, lambda d, y, alpha: oracle_hard(d, y)),
    ("semi_hard", {"choose": "hardest"}, oracle_semi_hard_hardest),
])
def test_online_loss_is_mean_over_oracle_triplets(strategy, options, oracle):
    loss = losses.OnlineTripletLoss(strategy, alpha=0.5, **options)
    for seed in range(10):
        emb, labels = batch(seed)
        triplets = oracle(oracle_distances(emb.tolist()), labels.tolist(), 0.5)
        want = np_triplet_loss(emb.astype(np.float64).tolist(), triplets, 0.5)
        got = float(loss(labels, emb))
        np.testing.assert_allclose(got, np.mean(want) if want else 0.0, rtol=1e-4, atol=1e-6)
        per_example = loss.call(tf.constant(labels[:, None]), tf.constant(emb)).numpy()
        assert per_example.shape == (12,)
        for i in range(12):  # example i carries its anchored triplets, scaled by N / T
            mine = [v for t, v in zip(triplets, want) if t[0] == i]
            np.testing.assert_allclose(per_example[i], sum(mine) * 12 / max(len(want), 1),
                                       rtol=1e-4, atol=1e-5)


def test_tfa_semi_hard_loss_matches_tensorflow_addons_rule():
    # tfa.losses.TripletSemiHardLoss: margin 1.0 on (non-squared) L2, mean over positive pairs.
    loss = losses.OnlineTripletLoss("tfa_semi_hard")
    assert loss.alpha == 1.0
    for seed in range(10):
        emb, labels = batch(seed + 20)
        d = oracle_distances(emb.astype(np.float64).tolist())
        triplets = oracle_tfa(d, labels.tolist())
        want = [max(1.0 + d[a][p] ** 0.5 - d[a][n] ** 0.5, 0.0) for a, p, n in triplets]
        np.testing.assert_allclose(float(loss(labels, emb)), np.mean(want), rtol=1e-4)


@pytest.mark.parametrize("strategy", mining.STRATEGIES)
@pytest.mark.parametrize("labels", [[3, 3, 3, 3], [0, 1, 2, 3], [5]])
def test_no_valid_triplet_gives_zero_loss_and_zero_gradients(strategy, labels):
    emb = tf.Variable(np.ones((len(labels), 3), np.float32))  # duplicated rows too
    loss = losses.OnlineTripletLoss(strategy, seed=0)
    with tf.GradientTape() as tape:
        value = loss(np.array(labels), emb)
    grad = tf.convert_to_tensor(tape.gradient(value, emb)).numpy()
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("strategy", mining.STRATEGIES)
def test_duplicated_embeddings_give_finite_loss_and_gradients(strategy):
    emb_np, labels = batch(3, n=10, ids=3)
    emb_np[1] = emb_np[0]
    emb_np[5] = emb_np[4]
    emb = tf.Variable(emb_np)
    with tf.GradientTape() as tape:
        value = losses.OnlineTripletLoss(strategy, seed=1)(labels, emb)
    grad = tf.convert_to_tensor(tape.gradient(value, emb)).numpy()
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))


def test_float16_inputs_are_computed_in_float32():
    emb, labels = batch(4)
    loss = losses.OnlineTripletLoss("hard", alpha=0.5)
    half = loss.call(tf.constant(labels), tf.constant(emb.astype(np.float16)))
    full = loss.call(tf.constant(labels), tf.constant(emb.astype(np.float16).astype(np.float32)))
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half.numpy(), full.numpy(), rtol=1e-6)
    off = losses.OfflineTripletLoss().call(None, tf.zeros([2, 3, 4], tf.float16))
    assert off.dtype == tf.float32


def test_online_loss_under_mixed_float16_keras_model_trains_without_nan():
    import keras
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((5,))
        x = keras.layers.Dense(4)(inputs)
        out = keras.layers.UnitNormalization(dtype="float32")(x)
        model = keras.Model(inputs, out)
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=losses.OnlineTripletLoss("semi_hard", seed=0, fallback="hardest_beyond"),
                      metrics=losses.triplet_metrics("semi_hard", seed=0,
                                                     fallback="hardest_beyond"))
        rng = np.random.RandomState(0)
        x_np = rng.randn(16, 5).astype(np.float32)
        y_np = np.repeat(np.arange(4), 4)
        hist = model.fit(x_np, y_np, batch_size=16, epochs=2, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(v) for v in hist["loss"])
    assert set(losses.STAT_NAMES) <= set(hist)


def test_triplet_stats_and_metrics_match_loop():
    emb, labels = batch(7)
    triplets = mining.select_triplets(emb, labels, "hard", alpha=0.5).numpy()
    e = emb.astype(np.float64)
    d_ap = [float(np.sum((e[a] - e[p]) ** 2)) for a, p, _ in triplets]
    d_an = [float(np.sum((e[a] - e[n]) ** 2)) for a, _, n in triplets]
    stats = losses.triplet_stats(emb, labels, triplets, alpha=0.5)
    assert float(stats["num_triplets"]) == len(triplets)
    np.testing.assert_allclose(float(stats["fraction_active"]),
                               np.mean([ap - an + 0.5 > 0 for ap, an in zip(d_ap, d_an)]))
    np.testing.assert_allclose(float(stats["mean_d_ap"]), np.mean(d_ap), rtol=1e-5)
    np.testing.assert_allclose(float(stats["mean_d_an"]), np.mean(d_an), rtol=1e-5)
    pairs = sum(1 for i in range(12) for j in range(12) if i != j and labels[i] == labels[j])
    assert float(stats["num_pairs"]) == pairs
    metrics = {m.name: m for m in losses.triplet_metrics("hard", alpha=0.5)}
    for m in metrics.values():
        m.update_state(labels, emb)
    for name in losses.STAT_NAMES:
        np.testing.assert_allclose(float(metrics[name].result()), float(stats[name]), rtol=1e-6)


def test_triplet_stats_with_no_triplets_are_zero():
    stats = losses.triplet_stats(np.ones((3, 2)), [0, 0, 0], np.zeros((0, 3), np.int32))
    assert {k: float(v) for k, v in stats.items()} == {
        "num_triplets": 0.0, "fraction_active": 0.0, "mean_d_ap": 0.0, "mean_d_an": 0.0,
        "num_pairs": 6.0}


def test_losses_serialise_and_reject_bad_options():
    import keras
    loss = losses.OnlineTripletLoss("semi_hard", alpha=0.3, seed=4, choose="hardest")
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (again.strategy, again.alpha, again.seed, again.options) == (
        "semi_hard", 0.3, 4, {"choose": "hardest"})
    assert keras.losses.deserialize(keras.losses.serialize(losses.OfflineTripletLoss(0.4))).alpha == 0.4
    with pytest.raises(ValueError, match="no option 'hardest_positive'"):
        losses.OnlineTripletLoss("semi_hard", hardest_positive=True)
    with pytest.raises(ValueError, match="unknown triplet stat"):
        losses.TripletStat("median_d")


def test_the_four_metrics_share_one_mining_per_step(monkeypatch):
    """triplet_metrics mines each batch once, not once per metric (the loss mines once too)."""
    import traceback

    import keras
    callers = []
    real = mining.select_triplets

    def counting(*args, **kwargs):
        callers.append(traceback.extract_stack()[-2].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(mining, "select_triplets", counting)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.UnitNormalization()(keras.layers.Dense(3)(inputs)))
    model.compile("adam", loss=losses.OnlineTripletLoss("hard"),
                  metrics=losses.triplet_metrics("hard"))
    x = np.random.RandomState(0).randn(8, 4).astype("float32")
    model.fit(x, np.repeat(np.arange(4), 2), batch_size=8, epochs=1, verbose=0)
    by_loss = callers.count("call")
    assert by_loss >= 1 and len(callers) == 2 * by_loss, callers
