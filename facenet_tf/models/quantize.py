"""Compact embeddings (the paper's section 5.3): one signed byte per dimension.

A component of a unit D-dimensional embedding is rarely beyond a few times 1/sqrt(D), so
the byte range covers [-max_abs, max_abs] with max_abs = min(1, 5 / sqrt(D)) by default
(0.44 for 128-D; rarer larger components are clipped). The range depends only on D, so a
128-D embedding takes exactly 128 bytes and needs no stored scale.
"""

import numpy as np


def default_max_abs(dim: int) -> float:
    """The clipping range used for D-dimensional unit embeddings."""
    return float(min(1.0, 5.0 / np.sqrt(dim)))


def quantize_embeddings(x, max_abs: float | None = None) -> np.ndarray:
    """float [N, D] (or [D]) unit embeddings -> int8 of the same shape."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"embeddings must be [N, D] or [D], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or inf")
    scale = 127.0 / (max_abs or default_max_abs(x.shape[-1]))
    return np.clip(np.rint(x * scale), -127, 127).astype(np.int8)


def dequantize_embeddings(q, max_abs: float | None = None) -> np.ndarray:
    """int8 [N, D] from quantize_embeddings (same max_abs) -> float32 [N, D]."""
    q = np.asarray(q)
    if q.dtype != np.int8:
        raise ValueError(f"quantised embeddings must be int8, got {q.dtype}")
    return q.astype(np.float32) * np.float32((max_abs or default_max_abs(q.shape[-1])) / 127.0)
