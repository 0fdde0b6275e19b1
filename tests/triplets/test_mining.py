"""facenet_tf.triplets.mining against plain-loop oracles written here (FaceNet section 3.2 rules).

Random cases use embeddings on a 0.5 grid with tiny dimensions, so squared distances are exact
in float32 and float64 alike: ties, duplicated rows and band boundaries are hit exactly.
"""

import collections
import itertools

import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.triplets import distances, mining
from tests._triplet_oracle import (
    oracle_all,
    oracle_angular,
    oracle_band,
    oracle_distances,
    oracle_hard,
    oracle_pairs,
    oracle_semi_hard_hardest,
    oracle_tfa,
)

NUM_CASES = 60
ALPHAS = (0.2, 0.25, 0.5, 1.0)


# ----------------------------------------------------------------------------- random cases

def make_case(i):
    """Seeded case i: grid embeddings, mixed identity sizes; every kind of edge appears."""
    rng = np.random.RandomState(1000 + i)
    kind = i % 6
    n = 2 if kind == 0 else int(rng.randint(3, 13))
    dim = int(rng.randint(1, 4))
    emb = rng.randint(-2, 3, size=(n, dim)) * 0.5
    if kind == 1:
        labels = np.zeros(n, np.int64)  # one identity only
    elif kind == 2:
        labels = rng.permutation(n)  # every identity has one image
        labels[: n // 2] = labels[0]
    else:
        labels = rng.randint(0, max(2, n // 2), size=n)
    if kind == 3 and n > 3:
        emb[1] = emb[0]
        emb[n - 1] = emb[2]  # duplicated embeddings
    if kind == 4:
        labels[0] = 99  # an identity with one image
    alpha = ALPHAS[i % len(ALPHAS)]
    return emb.astype(np.float32), labels.astype(np.int64), alpha


CASES = [make_case(i) for i in range(NUM_CASES)]


@pytest.fixture(params=["candidates", "buckets"])
def semi_hard_path(request, monkeypatch):
    """Runs a semi_hard test through both implementations: the sorted candidate negatives that
    small and mid-training batches take, and the bucketing that dense batches take."""
    if request.param == "buckets":
        monkeypatch.setattr(mining, "_candidate_budget", lambda n: -1)
    return request.param


def as_list(triplets):
    t = np.asarray(triplets)
    assert t.dtype == np.int32 and t.ndim == 2 and t.shape[1] == 3
    return [tuple(int(v) for v in row) for row in t]


def test_cases_cover_edge_cases():
    kinds = {"n2": 0, "one_identity": 0, "singleton": 0, "duplicate": 0, "tie": 0}
    for emb, labels, _ in CASES:
        d = oracle_distances(emb.tolist())
        n = len(labels)
        kinds["n2"] += n == 2
        kinds["one_identity"] += len(set(labels.tolist())) == 1
        kinds["singleton"] += min(np.bincount(labels)[np.unique(labels)]) == 1
        kinds["duplicate"] += len({tuple(r) for r in emb.tolist()}) < n
        kinds["tie"] += any(d[a][x] == d[a][y] for a in range(n) for x in range(n)
                            for y in range(x + 1, n) if a not in (x, y))
    assert all(v >= 5 for v in kinds.values()), kinds


# ----------------------------------------------------------------------------- distances

def test_tf_squared_l2_matrix_matches_loop():
    rng = np.random.RandomState(0)
    emb = rng.randn(9, 5).astype(np.float32)
    got = distances.tf_squared_l2_matrix(emb).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.array(oracle_distances(emb.tolist())), rtol=1e-5,
                               atol=1e-5)


def test_pairwise_distances_exact_zero_diagonal_nonnegative_finite_gradients():
    rng = np.random.RandomState(1)
    base = (rng.randn(3, 16) * 30 + 100).astype(np.float32)
    emb = tf.Variable(np.concatenate([base, base, base[:1]]))  # identical rows, large norms
    with tf.GradientTape() as tape:
        d = distances.tf_squared_l2_matrix(emb)
        total = tf.reduce_sum(d)
    grad = tape.gradient(total, emb).numpy()
    d = d.numpy()
    assert np.all(np.diag(d) == 0.0)
    assert np.all(d >= 0.0)
    assert np.all(np.isfinite(grad))
    assert d[0, 3] < 1e-2 * d[0, 1]  # duplicates stay (near) zero despite the large norms


def test_pairwise_distances_float16_input_gives_float32():
    d = distances.tf_squared_l2_matrix(np.array([[0, 0], [3, 4]], np.float16))
    assert d.dtype == tf.float32
    np.testing.assert_array_equal(d.numpy(), [[0, 25], [25, 0]])


# ----------------------------------------------------------------------------- deterministic strategies

@pytest.mark.parametrize("fallback", ["skip", "hardest_beyond"])
def test_semi_hard_hardest_matches_oracle(fallback, semi_hard_path):
    for emb, labels, alpha in CASES:
        d = oracle_distances(emb.tolist())
        got = mining.select_triplets(emb, labels, "semi_hard", alpha=alpha, choose="hardest",
                                     fallback=fallback)
        assert as_list(got) == oracle_semi_hard_hardest(d, labels.tolist(), alpha, fallback)


@pytest.mark.parametrize("hardest_positive", [False, True])
def test_hard_matches_oracle_argmin(hardest_positive):
    for emb, labels, alpha in CASES:
        d = oracle_distances(emb.tolist())
        got = mining.select_triplets(emb, labels, "hard", alpha=alpha,
                                     hardest_positive=hardest_positive)
        assert as_list(got) == oracle_hard(d, labels.tolist(), hardest_positive)


def test_all_matches_oracle():
    for emb, labels, alpha in CASES:
        d = oracle_distances(emb.tolist())
        got = as_list(mining.select_triplets(emb, labels, "all", alpha=alpha))
        assert sorted(got) == oracle_all(d, labels.tolist(), alpha)
        assert [t[:2] for t in got] == sorted(t[:2] for t in got)  # ordered by anchor, positive


def test_tfa_semi_hard_matches_oracle_squared_and_l2():
    for emb, labels, alpha in CASES:
        d = oracle_distances(emb.tolist())
        want = oracle_tfa(d, labels.tolist())
        for distance in ("L2", "squared-L2"):
            got = mining.select_triplets(emb, labels, "tfa_semi_hard", distance=distance)
            assert as_list(got) == want


def test_tfa_semi_hard_angular_matches_oracle():
    for i in range(NUM_CASES):
        rng = np.random.RandomState(i)
        n = int(rng.randint(2, 12))
        emb = (rng.randn(n, 3) + 0.1).astype(np.float32)  # continuous: no ties, no zero rows
        labels = rng.randint(0, 3, size=n)
        d = oracle_angular(emb.tolist())
        got = mining.select_triplets(emb, labels, "tfa_semi_hard", distance="angular")
        assert as_list(got) == oracle_tfa(d, labels.tolist())


def test_hand_computed_semi_hard_and_hard(semi_hard_path):
    # 1-D: anchor 0 at 0, positive 1 at 1 (d_ap = 1); negatives at 0.5 (d = 0.25, hard),
    # 1.1 (d = 1.21, in the band (1, 1.5) for alpha = 0.5) and 3 (d = 9, easy).
    emb = np.array([[0.0], [1.0], [0.5], [1.1], [3.0]], np.float32)
    labels = np.array([7, 7, 1, 2, 3])
    semi = mining.select_triplets(emb, labels, "semi_hard", alpha=0.5, choose="hardest")
    assert as_list(semi)[0] == (0, 1, 3)
    hard = mining.select_triplets(emb, labels, "hard", alpha=0.5)
    assert as_list(hard)[0] == (0, 1, 2)
    # Anchor 1 (at 1): d_ap = 1; negatives 1.1 (0.01), 0.5 (0.25), 3 (4): none in (1, 1.5).
    assert [t for t in as_list(semi) if t[0] == 1] == []


# ----------------------------------------------------------------------------- random strategies

def test_semi_hard_random_picks_inside_band_for_exactly_the_band_pairs(semi_hard_path):
    for emb, labels, alpha in CASES:
        d = oracle_distances(emb.tolist())
        lab = labels.tolist()
        got = as_list(mining.select_triplets(emb, labels, "semi_hard", alpha=alpha, seed=3))
        want_pairs = [(a, p) for a, p in oracle_pairs(lab) if oracle_band(d, lab, a, p, alpha)]
        assert [t[:2] for t in got] == want_pairs
        for a, p, n in got:
            assert lab[n] != lab[a]
            assert d[a][p] < d[a][n] < d[a][p] + alpha  # the band inequalities


def test_semi_hard_random_fallback_takes_hardest_beyond_when_band_empty():
    for emb, labels, alpha in CASES:
        d = oracle_distances(emb.tolist())
        lab = labels.tolist()
        got = as_list(mining.select_triplets(emb, labels, "semi_hard", alpha=alpha, seed=5,
                                             fallback="hardest_beyond"))
        hardest = {t[:2]: t for t in oracle_semi_hard_hardest(d, lab, alpha, "hardest_beyond")}
        assert [t[:2] for t in got] == list(hardest)
        for a, p, n in got:
            if oracle_band(d, lab, a, p, alpha):
                assert d[a][p] < d[a][n] < d[a][p] + alpha
            else:
                assert (a, p, n) == hardest[(a, p)]


def test_random_strategy_valid_candidates():
    for emb, labels, _ in CASES:
        lab = labels.tolist()
        got = as_list(mining.select_triplets(emb, labels, "random", seed=11))
        assert [t[:2] for t in got] == oracle_pairs(lab)
        assert all(lab[n] != lab[a] for a, _, n in got)


@pytest.mark.parametrize("strategy", ["semi_hard", "random"])
def test_random_strategies_deterministic_per_seed_and_vary_with_seed(strategy, semi_hard_path):
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(6), 5)
    emb = (rng.randn(30, 4) * 0.3).astype(np.float32)
    a = mining.select_triplets(emb, labels, strategy, alpha=1.0, seed=42).numpy()
    b = mining.select_triplets(tf.constant(emb), tf.constant(labels), strategy, alpha=1.0,
                               seed=42).numpy()
    c = mining.select_triplets(emb, labels, strategy, alpha=1.0, seed=43).numpy()
    assert len(a) > 20
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("strategy,alpha", [("random", 0.2), ("semi_hard", 10.0)])
def test_random_choices_are_roughly_uniform(strategy, alpha, semi_hard_path):
    # Anchor 0 and positive 1 at the origin's neighbourhood; 4 negatives all in the band.
    emb = np.array([[0.0], [0.5], [1.0], [1.5], [2.0], [2.5]], np.float32)
    labels = np.array([0, 0, 1, 2, 3, 4])
    mine = tf.function(lambda seed: mining.select_triplets(emb, labels, strategy, alpha=alpha,
                                                           seed=seed))
    counts = np.zeros(6)
    for seed in range(200):
        for a, _, n in mine(tf.constant(seed)).numpy():
            if a == 0:
                counts[n] += 1
    assert counts[:2].sum() == 0
    assert np.all(counts[2:] > 200 * 0.25 * 0.6), counts


def test_larger_batches_match_oracles(semi_hard_path):
    # Many positives per anchor (many band edges), continuous distances, unequal identity sizes.
    for i in range(3):
        rng = np.random.RandomState(50 + i)
        labels = rng.randint(0, 5, size=60)
        emb = (rng.randn(60, 3) * 0.6).astype(np.float32)
        d = oracle_distances(emb.tolist())
        lab = labels.tolist()
        for fallback in ("skip", "hardest_beyond"):
            got = mining.select_triplets(emb, labels, "semi_hard", alpha=0.3, choose="hardest",
                                         fallback=fallback)
            assert as_list(got) == oracle_semi_hard_hardest(d, lab, 0.3, fallback)
        got = as_list(mining.select_triplets(emb, labels, "semi_hard", alpha=0.3, seed=i))
        assert [t[:2] for t in got] == [pair for pair in oracle_pairs(lab)
                                        if oracle_band(d, lab, *pair, 0.3)]
        assert all(n in oracle_band(d, lab, a, p, 0.3) for a, p, n in got)
        assert as_list(mining.select_triplets(emb, labels, "tfa_semi_hard")) == oracle_tfa(d, lab)
        got = as_list(mining.select_triplets(emb, labels, "all", alpha=0.3))
        assert sorted(got) == oracle_all(d, lab, 0.3)
        for (a, p, n), (a2, p2, n2) in zip(got, got[1:]):  # per pair: nearest negatives first
            assert (a, p) < (a2, p2) or ((a, p) == (a2, p2) and d[a][n] <= d[a][n2])


def band_frequency_test(emb, labels, alpha, seeds):
    """Chi-square-like statistic of semi_hard's random picks vs uniform over each loop band."""
    d = oracle_distances(emb.tolist())
    lab = labels.tolist()
    bands = {pair: oracle_band(d, lab, *pair, alpha) for pair in oracle_pairs(lab)}
    mine = tf.function(lambda seed: mining.select_triplets(emb, labels, "semi_hard", alpha=alpha,
                                                           seed=seed))
    counts = collections.defaultdict(collections.Counter)
    for seed in range(seeds):
        for a, p, n in mine(tf.constant(seed)).numpy():
            counts[(int(a), int(p))][int(n)] += 1
    stat = dof = 0.0
    for pair, band in bands.items():
        assert sum(counts[pair].values()) == (seeds if band else 0)
        assert set(counts[pair]) <= set(band)
        if len(band) > 1:
            expected = seeds / len(band)
            stat += sum((counts[pair][n] - expected) ** 2 / expected for n in band)
            dof += len(band) - 1
    return stat, dof


def test_semi_hard_random_is_uniform_within_each_band(semi_hard_path):
    # 2-D grid points (exact distances, many ties on band edges), 4 identities x 5, wide bands:
    # every pair's band member must come up about seeds / |band| times.
    rng = np.random.RandomState(7)
    emb = (rng.randint(-3, 4, size=(20, 2)) * 0.5).astype(np.float32)
    labels = np.repeat(np.arange(4), 5)
    stat, dof = band_frequency_test(emb, labels, alpha=4.0, seeds=300)
    assert dof >= 200
    # Pairs of one anchor are correlated, so the bound is loose: a sampler biased towards a
    # bucket or a column index exceeds it many times over.
    assert stat < dof + 6 * np.sqrt(2 * dof), (stat, dof)


# ----------------------------------------------------------------------------- API behaviour

def test_inside_tf_function_with_dynamic_shapes_matches_eager(semi_hard_path):
    spec = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int64)]
    fns = {s: tf.function(lambda e, y, s=s: mining.select_triplets(e, y, s, alpha=0.5, seed=7),
                          input_signature=spec) for s in mining.STRATEGIES}
    for emb, labels, _ in CASES[:6]:
        for s, fn in fns.items():
            eager = mining.select_triplets(emb, labels, s, alpha=0.5, seed=7).numpy()
            np.testing.assert_array_equal(fn(emb, labels).numpy(), eager)


def test_strategies_constant_and_column_labels():
    assert set(mining.STRATEGIES) == {"semi_hard", "hard", "all", "random", "tfa_semi_hard"}
    emb, labels, alpha = CASES[7]
    flat = mining.select_triplets(emb, labels, "hard", alpha=alpha).numpy()
    col = mining.select_triplets(emb, labels[:, None], "hard", alpha=alpha).numpy()
    np.testing.assert_array_equal(flat, col)


def test_bad_inputs_raise_clear_errors():
    emb = np.zeros((4, 2), np.float32)
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="unknown triplet strategy 'semihard'"):
        mining.select_triplets(emb, labels, "semihard")
    with pytest.raises(ValueError, match="no option 'hardest_positive'"):
        mining.select_triplets(emb, labels, "semi_hard", hardest_positive=True)
    with pytest.raises(ValueError, match="choose='median'"):
        mining.select_triplets(emb, labels, "semi_hard", choose="median")
    with pytest.raises(ValueError, match="4 rows but labels have 3"):
        mining.select_triplets(emb, labels[:3], "hard")
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        mining.select_triplets(np.zeros(4), labels, "hard")
    with pytest.raises(tf.errors.InvalidArgumentError, match="embeddings contain NaN"):
        mining.select_triplets(np.full((4, 2), np.nan, np.float32), labels, "hard")


def test_empty_results_have_shape_t_by_3():
    for strategy in mining.STRATEGIES:
        for labels in ([0, 0, 0], [0, 1, 2]):
            t = mining.select_triplets(np.eye(3, dtype=np.float32), labels, strategy, seed=0)
            assert t.shape == (0, 3) and t.dtype == tf.int32


def test_pairs_enumeration_helper_is_consistent():
    # Guards the oracle itself: ordered pairs, both directions, only anchors with a negative.
    assert oracle_pairs([0, 0, 1]) == [(0, 1), (1, 0)]
    assert oracle_pairs([0, 0, 0]) == []
    assert sorted(itertools.permutations(range(2))) == oracle_pairs([5, 5, 6, 6])[:2]


def test_large_python_and_tensor_seeds_are_accepted_and_deterministic():
    emb, labels, _ = CASES[9]
    big = 2**40 + 17
    a = mining.select_triplets(emb, labels, "random", seed=big).numpy()
    np.testing.assert_array_equal(a, mining.select_triplets(emb, labels, "random", seed=big))
    pair = mining.select_triplets(emb, labels, "random", seed=tf.constant([17, 512])).numpy()
    np.testing.assert_array_equal(a, pair)  # the int seed is split into two 31-bit words
