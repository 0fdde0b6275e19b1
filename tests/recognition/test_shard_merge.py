"""Shards searched alone and merged by distance (index.merge_shard_results, which
benchmarks/bench_gallery_scale.py measures for docs/scaling.md) give exact search's answers
over the whole gallery."""

import numpy as np

from facenet_tf.recognition.index import FaceIndex, merge_shard_results


def _brute_force(queries, faces, k):
    """The k nearest faces of each query by a plain loop: (squared L2, row), ties by row."""
    out_d, out_r = [], []
    for q in queries:
        d = [(float(np.sum((q - f) ** 2)), row) for row, f in enumerate(faces)]
        d.sort()
        out_d.append([x for x, _ in d[:k]])
        out_r.append([r for _, r in d[:k]])
    return np.array(out_d), np.array(out_r)


def test_merged_shards_equal_brute_force_over_the_whole_gallery():
    rng = np.random.RandomState(3)
    faces = rng.randn(230, 8).astype(np.float32)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    faces[101] = faces[7]  # a tie across shards: the lower row comes first
    queries = np.concatenate([faces[7:8], rng.randn(11, 8).astype(np.float32)])
    k = 6
    bounds = [0, 50, 101, 180, 230]
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        d, r = FaceIndex.build(faces[lo:hi], "exact").search(queries, k)
        parts.append((d, r, lo))
    merged_d, merged_r = merge_shard_results(parts, k)
    want_d, want_r = _brute_force(queries, faces, k)
    np.testing.assert_array_equal(merged_r, want_r)
    np.testing.assert_allclose(merged_d, want_d, atol=1e-5)
    assert list(merged_r[0, :2]) == [7, 101]


def test_a_shard_with_fewer_faces_than_k_pads_and_still_merges():
    rng = np.random.RandomState(4)
    faces = rng.randn(9, 4).astype(np.float32)
    queries = rng.randn(3, 4).astype(np.float32)
    parts = [FaceIndex.build(faces[lo:hi], "exact").search(queries, 5) + (lo,)
             for lo, hi in ((0, 2), (2, 9))]
    assert (parts[0][1] == -1).any()  # the 2-face shard pads its answers
    merged_d, merged_r = merge_shard_results(parts, 5)
    want_d, want_r = _brute_force(queries, faces, 5)
    np.testing.assert_array_equal(merged_r, want_r)
    np.testing.assert_allclose(merged_d, want_d, rtol=1e-5, atol=1e-5)
