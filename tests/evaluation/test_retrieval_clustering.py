"""Retrieval and clustering metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from facenet_tf.evaluation import clustering, retrieval


def _points(xs):
    return np.array([[x, 0.0] for x in xs], dtype=np.float32)


def test_retrieval_hand_computed():
    # 1-D positions; labels A A A B B C.
    x = _points([0.0, 1.0, 5.0, 1.2, 6.0, 100.0])
    y = ["A", "A", "A", "B", "B", "C"]
    # Neighbour orders (nearest first), by hand:
    # q0 (A, R=2): 1(A) 3(B) 2(A)   -> p@1 1, R-prec 1/2, AP@R (1/1)/2 = 1/2
    # q1 (A, R=2): 3(B) 0(A) 2(A)   -> p@1 0, R-prec 1/2, AP@R (1/2)/2 = 1/4
    # q2 (A, R=2): 4(B) 3(B) 1(A)   -> p@1 0, R-prec 0,   AP@R 0
    # q3 (B, R=1): 1(A)             -> p@1 0, R-prec 0,   AP@R 0
    # q4 (B, R=1): 2(A)             -> p@1 0, R-prec 0,   AP@R 0
    # q5 (C, R=0): not scored.
    m = retrieval.retrieval_metrics(x, y)
    assert m["num_queries"] == 5 and m["num_images"] == 6
    assert m["precision_at_1"] == pytest.approx(1 / 5)
    assert m["r_precision"] == pytest.approx((0.5 + 0.5) / 5)
    assert m["map_at_r"] == pytest.approx((0.5 + 0.25) / 5)
    # Chunking must not change anything.
    assert retrieval.retrieval_metrics(x, y, chunk_size=2) == m


def test_retrieval_perfect_and_errors():
    x = _points([0, 0.1, 0.2, 10, 10.1])
    m = retrieval.retrieval_metrics(x, [1, 1, 1, 2, 2])
    assert m["precision_at_1"] == m["r_precision"] == m["map_at_r"] == 1.0
    with pytest.raises(ValueError, match="two or more"):
        retrieval.retrieval_metrics(x, [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="do not match"):
        retrieval.retrieval_metrics(x, [1, 2])


def test_agglomerative_threshold_on_squared_distance():
    # Groups {0, 0.5}, {3, 3.4}, {10}: within-group squared distances <= 0.25,
    # between groups >= 6.76.
    x = _points([0.0, 0.5, 3.0, 3.4, 10.0])
    ids = clustering.agglomerative_clusters(x, distance_threshold=1.0)
    assert ids[0] == ids[1] and ids[2] == ids[3]
    assert len({ids[0], ids[2], ids[4]}) == 3
    # Threshold 0.2 is below 0.25 (squared 0.5): the first group no longer merges, but
    # {3, 3.4} (squared 0.16) still does. On plain L2, 0.2 < 0.4 would split it.
    ids = clustering.agglomerative_clusters(x, distance_threshold=0.2)
    assert ids[0] != ids[1] and ids[2] == ids[3]
    assert np.unique(clustering.agglomerative_clusters(x, num_clusters=2)).size == 2
    with pytest.raises(ValueError, match="exactly one"):
        clustering.agglomerative_clusters(x)
    assert list(clustering.agglomerative_clusters(x[:1], distance_threshold=1.0)) == [0]


def _nmi_oracle(t, p):
    n = len(t)
    def entropy(labels):
        return -sum(c / n * math.log(c / n) for c in [labels.count(v) for v in set(labels)])
    mi = 0.0
    for a in set(t):
        for b in set(p):
            nab = sum(1 for i in range(n) if t[i] == a and p[i] == b)
            if nab:
                mi += nab / n * math.log(n * nab / (t.count(a) * p.count(b)))
    return mi / ((entropy(t) + entropy(p)) / 2)


def test_clustering_scores():
    t = [0, 0, 0, 1, 1, 2, 2, 2]
    p = [5, 5, 6, 6, 6, 7, 7, 7]
    s = clustering.clustering_scores(t, p)
    assert s["nmi"] == pytest.approx(_nmi_oracle(t, p))
    assert s["num_clusters"] == 3 and s["num_identities"] == 3
    perfect = clustering.clustering_scores(t, [9, 9, 9, 4, 4, 1, 1, 1])
    assert perfect["nmi"] == pytest.approx(1.0) and perfect["ami"] == pytest.approx(1.0)
    # AMI is ~0 for one all-in cluster (chance level), unlike purity-like scores.
    assert clustering.clustering_scores(t, [0] * 8)["ami"] == pytest.approx(0.0, abs=1e-9)
