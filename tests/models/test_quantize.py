"""Byte embeddings: size, round-trip error, distance preservation, bad input."""

import numpy as np
import pytest

from facenet_tf.models.quantize import dequantize_embeddings, quantize_embeddings


def _unit(n, d, seed):
    x = np.random.RandomState(seed).randn(n, d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_128_floats_become_128_bytes():
    q = quantize_embeddings(_unit(5, 128, 0))
    assert q.dtype == np.int8 and q.shape == (5, 128) and q[0].nbytes == 128


def test_round_trip_error_is_half_a_step_inside_the_range():
    x = _unit(50, 128, 1)
    max_abs = 5 / np.sqrt(128)
    inside = np.abs(x) <= max_abs
    err = np.abs(dequantize_embeddings(quantize_embeddings(x)) - x)
    assert inside.mean() > 0.999
    assert err[inside].max() <= 0.5 * max_abs / 127 + 1e-7
    assert np.all(err[~inside] <= np.abs(x[~inside]) - max_abs + 1e-6)


def test_hand_computed_cases():
    x = np.array([[1.0, -1.0, 0.0, 0.5, 0.004]], np.float32)
    assert quantize_embeddings(x, max_abs=1.0).tolist() == [[127, -127, 0, 64, 1]]
    # 4-D: range min(1, 5/2) = 1; 0.25 -> 31.75 -> 32 -> 32/127.
    q = quantize_embeddings(np.array([0.25, -0.25, 0.5, 0.8], np.float32))
    assert q.tolist() == [32, -32, 64, 102]
    np.testing.assert_allclose(dequantize_embeddings(q), np.array([32, -32, 64, 102]) / 127)
    assert quantize_embeddings(np.full(100, 0.9, np.float32)).tolist() == [127] * 100


def test_squared_distances_move_little():
    a, b = _unit(200, 128, 2), _unit(200, 128, 3)
    d = np.sum((a - b) ** 2, axis=1)
    qa, qb = (dequantize_embeddings(quantize_embeddings(v)) for v in (a, b))
    dq = np.sum((qa - qb) ** 2, axis=1)
    assert np.abs(d - dq).max() < 0.015
    assert np.abs(d - dq).mean() < 0.004


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        quantize_embeddings(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        quantize_embeddings(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="int8"):
        dequantize_embeddings(np.zeros((2, 3), np.float32))
