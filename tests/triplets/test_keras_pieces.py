"""The Keras pieces on data that is not faces: P x K batches of in-memory arrays and the online
triplet loss, through plain `model.fit`, on scikit-learn's bundled 8x8 digits."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import facenet_tf as fn


def test_pk_batches_from_arrays_hold_p_labels_of_k_examples_each():
    x = np.arange(60, dtype=np.float32).reshape(30, 2)
    y = np.repeat(np.arange(6), 5)
    y[-1] = 99  # a label with one example: never drawn
    batches = list(fn.pk_batches_from_arrays(x, y, p=3, k=4, seed=7, num_batches=20))
    again = list(fn.pk_batches_from_arrays(x, y, p=3, k=4, seed=7, num_batches=20))
    other = list(fn.pk_batches_from_arrays(x, y, p=3, k=4, seed=8, num_batches=20))
    for (bx, by), (ax, ay) in zip(batches, again):
        assert np.array_equal(bx, ax) and np.array_equal(by, ay)
    assert any(not np.array_equal(b[1], o[1]) for b, o in zip(batches, other))
    for bx, by in batches:
        bx, by = bx.numpy(), by.numpy()
        blocks = by.reshape(3, 4)
        assert all(len(set(block)) == 1 for block in blocks)  # K rows of one label
        assert len({block[0] for block in blocks}) == 3       # P distinct labels
        assert 99 not in by
        for row, label in zip(bx, by):  # every row is an example of its label
            i = int(row[0]) // 2
            assert y[i] == label and np.array_equal(x[i], row)


def test_pk_batches_from_arrays_reject_too_few_labels():
    with pytest.raises(ValueError, match="p=4"):
        fn.pk_batches_from_arrays(np.zeros((6, 1)), [0, 0, 1, 1, 2, 2], p=4, k=2, seed=0)


def _precision_at_1(embeddings, labels):
    """Leave-one-out nearest neighbour by squared L2, as a plain loop (the oracle)."""
    hits = 0
    for i in range(len(embeddings)):
        d = [np.sum((embeddings[i] - embeddings[j]) ** 2) if j != i else np.inf
             for j in range(len(embeddings))]
        hits += labels[int(np.argmin(d))] == labels[i]
    return hits / len(embeddings)


def test_model_fit_with_the_online_loss_learns_an_embedding_of_digits():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1200], order[1200:1500]
    keras.utils.set_random_seed(0)
    network = keras.Sequential([
        keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(16),
        keras.layers.UnitNormalization()])
    before = _precision_at_1(network.predict(x[test], verbose=0), y[test])
    network.compile(optimizer=keras.optimizers.Adam(1e-2),
                    loss=fn.OnlineTripletLoss(strategy="semi_hard", alpha=0.2, seed=0))
    batches = fn.pk_batches_from_arrays(x[train], y[train], p=10, k=8, seed=0)
    history = network.fit(batches, steps_per_epoch=60, epochs=2, verbose=0)
    after = _precision_at_1(network.predict(x[test], verbose=0), y[test])
    assert np.all(np.isfinite(history.history["loss"]))
    assert after > before + 0.03 and after > 0.9, (before, after)
