"""Face verification metrics: LFW's 10-fold accuracy, VAL@FAR, ROC AUC and EER.

Distances are SQUARED L2 between embeddings; a pair is predicted "same" when its distance is
<= the threshold (the paper's TA/FA definitions, section 4).
"""

import numpy as np
from sklearn import metrics as skmetrics
from sklearn import model_selection

FAR_TARGETS = (1e-3, 1e-2)


def _as_arrays(distances, issame):
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    s = np.asarray(issame, dtype=bool).reshape(-1)
    if d.shape != s.shape:
        raise ValueError(f"distances ({d.size}) and issame ({s.size}) differ in length")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{int(np.sum(~np.isfinite(d)))} distances are not finite")
    return d, s


def best_threshold(distances, issame) -> float:
    """The accuracy-maximising threshold on these pairs.

    Accuracy only changes at the data's distances: among the distinct distances (and "below
    all of them") the smallest best one is taken, and the threshold is placed midway between
    it and the next larger distinct distance.
    """
    d, s = _as_arrays(distances, issame)
    values = np.unique(d)
    # Pairs with distance <= values[i]: same pairs accepted (TA) and diff pairs accepted (FA).
    ta = np.searchsorted(np.sort(d[s]), values, side="right")
    fa = np.searchsorted(np.sort(d[~s]), values, side="right")
    correct = ta + (np.sum(~s) - fa)
    below_all = np.sum(~s)
    i = int(np.argmax(correct))
    if below_all > correct[i]:
        return float(values[0] - 1e-6) if values.size else 0.0
    return float((values[i] + values[i + 1]) / 2) if i + 1 < values.size else float(values[i])


def accuracy_at(distances, issame, threshold: float) -> float:
    d, s = _as_arrays(distances, issame)
    return float(np.mean((d <= threshold) == s))


def val_at_far(distances, issame, far_target: float) -> tuple:
    """(VAL, FAR, threshold) at the largest threshold whose FAR is <= far_target.

    FAR(t) = |diff pairs with d <= t| / |diff|, VAL(t) = |same pairs with d <= t| / |same|;
    the threshold sits just below the (k+1)-th smallest diff distance, k = floor(target * |diff|).
    """
    d, s = _as_arrays(distances, issame)
    same, diff = d[s], np.sort(d[~s])
    if same.size == 0 or diff.size == 0:
        raise ValueError("VAL@FAR needs both same and different pairs")
    k = int(np.floor(far_target * diff.size + 1e-9))
    if k >= diff.size:
        return 1.0, 1.0, float(diff[-1])
    cut = diff[k]
    accepted_diff = int(np.sum(diff < cut))
    threshold = float(np.max(d[d < cut])) if np.any(d < cut) else float(cut - 1e-6)
    return float(np.mean(same < cut)), accepted_diff / diff.size, threshold


def equal_error_rate(distances, issame) -> float:
    """The error rate where the false accept rate equals the false reject rate (interpolated)."""
    d, s = _as_arrays(distances, issame)
    fpr, tpr, _ = skmetrics.roc_curve(s, -d)
    fnr = 1.0 - tpr
    i = int(np.argmax(fpr >= fnr))
    if i == 0:
        return float(fpr[0])
    # Linear interpolation between ROC points i-1 and i of the crossing of fpr and fnr.
    gap0, gap1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
    w = gap0 / (gap0 - gap1) if gap0 != gap1 else 0.0
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def fold_assignment(num_pairs: int, num_folds: int = 10, seed: int = 0) -> np.ndarray:
    """A seeded fold index per pair (sklearn's shuffled KFold), for files without folds."""
    folds = np.zeros(num_pairs, dtype=np.int64)
    splitter = model_selection.KFold(n_splits=num_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(num_pairs))):
        folds[test] = k
    return folds


def evaluate_pairs(distances, issame, folds=None, num_folds: int = 10, seed: int = 0,
                   reference_thresholds=None) -> dict:
    """The LFW protocol: per fold, the threshold learnt on the other folds is applied to it.

    folds: a fold index per pair (e.g. a View 2 file's 10 consecutive folds of 600); None ->
    a seeded `num_folds`-fold split. VAL@FAR, ROC AUC and EER are computed over all pairs.
    reference_thresholds: another model's "fold_thresholds" on the same pairs and folds; the
    result then also holds "reference_accuracy_mean", these distances judged at them (how a
    copy of that model, e.g. its int8 conversion, decides when deployed with its thresholds:
    a paired comparison, free of the threshold re-learning that moves a few pairs either way).
    """
    d, s = _as_arrays(distances, issame)
    if folds is None:
        folds = fold_assignment(d.size, num_folds, seed)
    folds = np.asarray(folds).reshape(-1)
    if folds.shape != d.shape:
        raise ValueError(f"folds ({folds.size}) and distances ({d.size}) differ in length")
    accuracies, thresholds = [], []
    for k in np.unique(folds):
        test = folds == k
        t = best_threshold(d[~test], s[~test])
        thresholds.append(t)
        accuracies.append(accuracy_at(d[test], s[test], t))
    result = {
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "fold_accuracies": [float(a) for a in accuracies],
        "fold_thresholds": [float(t) for t in thresholds],
        "threshold_mean": float(np.mean(thresholds)),
        "threshold_std": float(np.std(thresholds)),
        "roc_auc": float(skmetrics.roc_auc_score(s, -d)),
        "eer": equal_error_rate(d, s),
        "num_pairs": int(d.size),
        "num_same": int(np.sum(s)),
        "num_diff": int(np.sum(~s)),
        "num_folds": int(np.unique(folds).size),
    }
    if reference_thresholds is not None:
        fold_ids = np.unique(folds)
        if len(reference_thresholds) != fold_ids.size:
            raise ValueError(f"reference_thresholds: {len(reference_thresholds)} given for "
                             f"{fold_ids.size} folds")
        result["reference_accuracy_mean"] = float(np.mean([
            accuracy_at(d[folds == k], s[folds == k], t)
            for k, t in zip(fold_ids, reference_thresholds)]))
    for target in FAR_TARGETS:
        val, far, threshold = val_at_far(d, s, target)
        key = f"val_at_far_{target:.0e}".replace("e-0", "e-")
        result[key] = val
        result[key.replace("val_at", "actual")] = far
        result[key + "_threshold"] = threshold
    return result


