"""Squared L2 distance, the paper's dissimilarity, in the one place it is computed: row-wise and
as a matrix, in TensorFlow (losses and mining, differentiable) and in NumPy (evaluation,
clustering, search)."""

import numpy as np
import tensorflow as tf


def tf_squared_l2(a, b):
    """Row-wise ||a_i - b_i||^2 of two [..., D] tensors, as float32 [...]."""
    a = tf.cast(tf.convert_to_tensor(a), tf.float32)
    b = tf.cast(tf.convert_to_tensor(b), tf.float32)
    return tf.reduce_sum(tf.square(a - b), axis=-1)


def tf_squared_l2_matrix(embeddings):
    """All pairwise squared L2 distances of [N, D] embeddings, float32 [N, N]: exact 0 diagonal,
    never negative, finite gradients.

    Uses the Gram expansion (no square root, so gradients stay finite for identical rows); the
    result is computed in float32 whatever the input dtype (mixed precision safe).
    """
    e = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    sq = tf.reduce_sum(tf.square(e), axis=1)
    d = sq[:, None] - 2.0 * tf.matmul(e, e, transpose_b=True) + sq[None, :]
    d = tf.maximum(d, 0.0)
    return tf.linalg.set_diag(d, tf.zeros_like(sq))


def squared_l2(a, b) -> np.ndarray:
    """Row-wise squared L2 distances between two [N, D] arrays, float64 [N]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.sum(np.square(a - b), axis=-1)


def squared_l2_matrix(queries, references=None, dtype=np.float64,
                      reference_sq_norms=None) -> np.ndarray:
    """Squared L2 distances [Q, R] between every query and every reference row (the queries
    themselves when references is None), by the Gram expansion, never negative.

    reference_sq_norms: the references' squared norms [R], when the caller keeps them (a
    search over a fixed set saves computing them again for every batch of queries)."""
    q = np.asarray(queries, dtype=dtype)
    r = q if references is None else np.asarray(references, dtype=dtype)
    r_sq = (np.sum(r * r, axis=1) if reference_sq_norms is None
            else np.asarray(reference_sq_norms, dtype=dtype))
    d = np.sum(q * q, axis=1)[:, None] + r_sq[None, :] - 2.0 * (q @ r.T)
    return np.maximum(d, 0.0)
