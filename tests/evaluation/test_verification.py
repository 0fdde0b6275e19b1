"""Verification metrics against brute-force loops and hand-computed cases."""

import numpy as np
import pytest

from facenet_tf.evaluation import verification as V


def _brute_threshold(d, s):
    """Tries every candidate threshold with a plain loop; same tie rule (smallest, midpoint)."""
    cands = sorted(set(d.tolist()))
    best_acc, best_i = -1, None
    below = sum(1 for x, y in zip(d, s) if not y)  # threshold below all: every pair "diff"
    for i, t in enumerate(cands):
        correct = sum(1 for x, y in zip(d, s) if (x <= t) == y)
        if correct > best_acc:
            best_acc, best_i = correct, i
    if below > best_acc:
        return cands[0] - 1e-6
    if best_i + 1 < len(cands):
        return (cands[best_i] + cands[best_i + 1]) / 2
    return cands[best_i]


def _brute_val_at_far(d, s, target):
    """Largest VAL over all thresholds (every distance) whose FAR is <= target."""
    n_same = sum(s)
    n_diff = len(s) - n_same
    best = 0.0
    for t in sorted(set(d.tolist())):
        fa = sum(1 for x, y in zip(d, s) if x <= t and not y)
        ta = sum(1 for x, y in zip(d, s) if x <= t and y)
        if fa / n_diff <= target:
            best = max(best, ta / n_same)
    return best


def _hand_built_set(seed):
    # Same pairs around 0.8, different around 1.6, overlapping; quantised so ties occur.
    rng = np.random.RandomState(seed)
    same = np.round(rng.normal(0.8, 0.3, 300), 2)
    diff = np.round(rng.normal(1.6, 0.3, 300), 2)
    d = np.clip(np.concatenate([same, diff]), 0, 4)
    s = np.concatenate([np.ones(300, bool), np.zeros(300, bool)])
    return d, s


def test_ten_fold_accuracy_matches_brute_force():
    d, s = _hand_built_set(0)
    folds = np.arange(d.size) % 10
    result = V.evaluate_pairs(d, s, folds=folds)
    accs, ths = [], []
    for k in range(10):
        train = [i for i in range(d.size) if folds[i] != k]
        test = [i for i in range(d.size) if folds[i] == k]
        t = _brute_threshold(d[train], s[train])
        ths.append(t)
        accs.append(sum(1 for i in test if (d[i] <= t) == s[i]) / len(test))
    assert result["accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert result["accuracy_std"] == pytest.approx(np.std(accs), abs=1e-12)
    assert result["threshold_mean"] == pytest.approx(np.mean(ths), abs=1e-12)
    assert result["num_pairs"] == 600 and result["num_folds"] == 10


def test_reference_thresholds_judge_other_distances_at_them():
    """A second model's distances scored at the first's per-fold thresholds: the plain loop
    applies each fold's brute-force threshold (learnt on the first model's other folds) to the
    second model's pairs of that fold."""
    d, s = _hand_built_set(0)
    other = d + np.random.RandomState(5).normal(0, 0.05, d.size)
    folds = np.arange(d.size) % 10
    first = V.evaluate_pairs(d, s, folds=folds)
    second = V.evaluate_pairs(other, s, folds=folds,
                              reference_thresholds=first["fold_thresholds"])
    accs = []
    for k in range(10):
        train = [i for i in range(d.size) if folds[i] != k]
        t = _brute_threshold(d[train], s[train])
        test = [i for i in range(d.size) if folds[i] == k]
        accs.append(sum(1 for i in test if (other[i] <= t) == s[i]) / len(test))
    assert second["reference_accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-12)
    # The model judged at its own thresholds is the first result's accuracy again.
    again = V.evaluate_pairs(d, s, folds=folds, reference_thresholds=first["fold_thresholds"])
    assert again["reference_accuracy_mean"] == pytest.approx(first["accuracy_mean"], abs=1e-12)
    with pytest.raises(ValueError, match="3 given for 10 folds"):
        V.evaluate_pairs(d, s, folds=folds, reference_thresholds=[1.0, 1.1, 1.2])


def test_val_at_far_matches_brute_force():
    d, s = _hand_built_set(1)
    # 300 diff pairs: FAR 1e-2 allows 3 false accepts, 1e-3 allows none.
    result = V.evaluate_pairs(d, s)
    assert result["val_at_far_1e-2"] == pytest.approx(_brute_val_at_far(d, s, 1e-2))
    assert result["val_at_far_1e-3"] == pytest.approx(_brute_val_at_far(d, s, 1e-3))
    assert result["actual_far_1e-2"] <= 1e-2
    # A bigger set so 1e-3 allows a few false accepts.
    rng = np.random.RandomState(5)
    d2 = np.concatenate([rng.uniform(0, 2, 500), rng.uniform(1, 4, 4000)])
    s2 = np.concatenate([np.ones(500, bool), np.zeros(4000, bool)])
    val, far, t = V.val_at_far(d2, s2, 1e-3)
    assert val == pytest.approx(_brute_val_at_far(d2, s2, 1e-3))
    assert far <= 1e-3 and np.sum((d2 <= t) & ~s2) == 4


def test_seeded_split_is_deterministic_and_covers_all():
    folds = V.fold_assignment(103, 10, seed=7)
    assert sorted(np.bincount(folds).tolist()) == [10] * 7 + [11] * 3
    assert np.array_equal(folds, V.fold_assignment(103, 10, seed=7))
    assert not np.array_equal(folds, V.fold_assignment(103, 10, seed=8))


def test_hand_computed_auc_and_eer():
    # same: 0.1, 0.4, 0.35 ; diff: 0.8, 0.3, 0.9.
    d = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.9])
    s = np.array([1, 1, 1, 0, 0, 0], bool)
    # AUC = P(same distance < diff distance) over the 9 (same, diff) combinations: 7/9.
    # (0.4 > 0.3 and 0.35 > 0.3 are the two misordered ones.)
    result = V.evaluate_pairs(d, s, folds=np.array([0, 1, 2, 0, 1, 2]))
    assert result["roc_auc"] == pytest.approx(7 / 9)
    # Sweeping the threshold: FAR/FRR = (0,2/3) at 0.1, (1/3,2/3) at 0.3, (1/3,1/3) at 0.35.
    assert result["eer"] == pytest.approx(1 / 3)


def test_perfect_separation():
    d = np.array([0.2, 0.3, 1.5, 1.7])
    s = np.array([True, True, False, False])
    assert V.best_threshold(d, s) == pytest.approx(0.9)
    assert V.val_at_far(d, s, 1e-3)[0] == 1.0
    assert V.equal_error_rate(d, s) == 0.0


def test_bad_inputs_named():
    with pytest.raises(ValueError, match="differ in length"):
        V.evaluate_pairs([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="not finite"):
        V.evaluate_pairs([0.1, np.nan], [True, False])
