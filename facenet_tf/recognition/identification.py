"""Identification metrics: a gallery of known people, probes to name, and strangers.

On an identity-per-folder set, the gallery holds the first k images of each identity and the
probes are the other images (genuine probes: their person is enrolled); the distractors are
probes of people who are not enrolled (the identities with one image, or a separate folder).
Each probe is compared with every enrolled person by the gallery's decision rule
(facenet_tf.recognition.decision), exactly.

- Closed set (genuine probes only): rank-k, the fraction whose true person is among the k
  nearest; the CMC curve is rank-k against k.
- Open set (Best-Rowden et al., "Unconstrained Face Recognition: Identifying a Person of
  Interest from a Media Collection", 2014, after Grother and Phillips): at a distance
  threshold t, the detection and identification rate DIR(t) is the fraction of genuine probes
  whose nearest person is the right one AND at distance <= t; the false alarm rate FAR(t) is
  the fraction of distractors whose nearest person is at distance <= t (a stranger named).
  DIR at FAR f takes the largest t with FAR(t) <= f.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

from facenet_tf.common import io_utils
from facenet_tf.data import image_files
from facenet_tf.evaluation import plots
from facenet_tf.evaluation.protocols import identity_labels
from facenet_tf.inference import batch_embed
from facenet_tf.recognition import calibration as calibration_lib
from facenet_tf.recognition import decision

RANKS = (1, 5)
FARS = (0.01, 0.001)
CMC_MAX_RANK = 20
RELIABILITY_BINS = 10


def split_gallery_probes(labels, gallery_size: int, singletons_are_distractors: bool = True):
    """(gallery, genuine probes, distractors): index arrays into `labels` (in their order).

    Per identity, its first `gallery_size` images (in the order given) are enrolled and the
    rest are genuine probes; an identity with gallery_size images or fewer is enrolled whole
    and has no probe. With singletons_are_distractors, an identity with one image is a
    distractor instead of being enrolled."""
    if gallery_size < 1:
        raise ValueError(f"gallery_size must be >= 1, got {gallery_size}")
    labels = np.asarray(labels).astype(str)
    gallery, probes, distractors = [], [], []
    by_identity = {}
    for i, label in enumerate(labels):
        by_identity.setdefault(label, []).append(i)
    for rows in by_identity.values():
        if singletons_are_distractors and len(rows) == 1:
            distractors.extend(rows)
            continue
        gallery.extend(rows[:gallery_size])
        probes.extend(rows[gallery_size:])
    as_array = lambda rows: np.array(sorted(rows), np.int64)  # noqa: E731
    return as_array(gallery), as_array(probes), as_array(distractors)


@dataclasses.dataclass
class Trials:
    """The outcome of every probe, genuine probes first: `distance` [N] to its nearest
    person, `named` [N] that person's name, `genuine` [N] whether the probe's person is
    enrolled, `correct` [N] whether the nearest person is the probe's own, and `rank` [G]
    the rank (1 = nearest) of each genuine probe's own person."""
    distance: np.ndarray
    named: np.ndarray
    genuine: np.ndarray
    correct: np.ndarray
    rank: np.ndarray

    def balanced_weights(self) -> np.ndarray:
        """Trial weights giving genuine probes and strangers half the total each (the prior
        of a face being someone enrolled is 1/2), summing to 1."""
        g = self.genuine.astype(np.float64)
        n_g, n_s = g.sum(), (1 - g).sum()
        if n_g == 0 or n_s == 0:
            return np.full(g.size, 1.0 / max(g.size, 1))
        return 0.5 * g / n_g + 0.5 * (1 - g) / n_s


def identification_trials(gallery_embeddings, gallery_labels, probe_embeddings, probe_labels,
                          distractor_embeddings, rule: str) -> Trials:
    """Compares every probe (genuine ones, then distractors) with every enrolled person
    under `rule`. Genuine probes' labels must be enrolled."""
    people = decision.People.from_labels(gallery_labels, gallery_embeddings)
    probe_labels = np.asarray(probe_labels).astype(str)
    if not np.isin(probe_labels, people.names).all():
        raise ValueError("a genuine probe's identity is not in the gallery")
    own = np.searchsorted(people.names, probe_labels)
    dim = np.asarray(gallery_embeddings).shape[1]
    queries = np.concatenate([np.asarray(probe_embeddings, np.float32).reshape(-1, dim),
                              np.asarray(distractor_embeddings, np.float32).reshape(-1, dim)])
    d = decision.person_distances(queries, gallery_embeddings, people, rule)
    nearest = np.argmin(d, axis=1)  # first of ties: the smallest person id
    n_g = probe_labels.size
    own_d = d[np.arange(n_g), own]
    ids = np.arange(len(people))[None, :]
    rank = 1 + np.sum((d[:n_g] < own_d[:, None]) |
                      ((d[:n_g] == own_d[:, None]) & (ids < own[:, None])), axis=1)
    genuine = np.arange(len(queries)) < n_g
    correct = np.zeros(len(queries), bool)
    correct[:n_g] = nearest[:n_g] == own
    return Trials(distance=d[np.arange(len(queries)), nearest].astype(np.float64),
                  named=people.names[nearest], genuine=genuine, correct=correct, rank=rank)


def open_set_rates(trials: Trials, threshold: float) -> dict:
    """DIR and FAR at a distance threshold (a face is named when its distance <= it)."""
    accepted = trials.distance <= threshold
    g = trials.genuine
    return {"threshold": float(threshold),
            "dir": float(np.mean(accepted[g] & trials.correct[g])) if g.any() else None,
            "far": float(np.mean(accepted[~g])) if (~g).any() else None}


def identification_metrics(trials: Trials, ranks=RANKS, fars=FARS,
                           max_rank: int = CMC_MAX_RANK) -> dict:
    """rank_K for each K of `ranks`, the CMC curve (rank 1..max_rank), and for each FAR f of
    `fars` DIR at the largest threshold with FAR <= f (when there are distractors)."""
    result = {"num_genuine_probes": int(trials.genuine.sum()),
              "num_distractor_probes": int((~trials.genuine).sum())}
    if trials.rank.size:
        cmc = [float(np.mean(trials.rank <= r)) for r in range(1, max_rank + 1)]
        result["cmc"] = cmc
        for r in ranks:
            result[f"rank_{r}"] = float(np.mean(trials.rank <= r))
    strangers = trials.distance[~trials.genuine]
    if strangers.size:
        result["dir_at_far"] = {
            f"{far:g}": open_set_rates(trials, calibration_lib.threshold_at_far(strangers, far))
            for far in fars}
    return result


def reliability(confidence, correct, weights=None, bins: int = RELIABILITY_BINS) -> dict:
    """How well confidences match outcomes: per confidence bin (equal width on [0, 1]) the
    mean confidence, the observed rate of right names and the weight of trials; the Brier
    score (weighted mean squared error of confidence against outcome) and the expected
    calibration error (weighted mean |confidence - rate| over bins)."""
    p = np.asarray(confidence, np.float64)
    y = np.asarray(correct, np.float64)
    w = np.full(p.size, 1.0 / max(p.size, 1)) if weights is None else np.asarray(weights)
    w = w / w.sum()
    which = np.minimum((p * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        weight = float(w[m].sum())
        mean_p = float(np.sum(w[m] * p[m]) / weight)
        rate = float(np.sum(w[m] * y[m]) / weight)
        table.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "trials": int(m.sum()),
                      "weight": weight, "confidence": mean_p, "right": rate})
        ece += weight * abs(mean_p - rate)
    return {"bins": table, "brier": float(np.sum(w * (p - y) ** 2)), "ece": float(ece)}


def fit_calibration(trials: Trials, fingerprint: str, rule: str, far: float,
                    note: str = "") -> calibration_lib.Calibration:
    """A Calibration from trials of identities kept out of evaluation: Platt confidence on
    the balanced trials (prior 1/2 of a face being someone enrolled) and the threshold that
    names a fraction `far` of the strangers."""
    intercept, slope = calibration_lib.fit_platt(trials.distance, trials.correct,
                                                 trials.balanced_weights())
    threshold = calibration_lib.threshold_at_far(trials.distance[~trials.genuine], far)
    return calibration_lib.Calibration(fingerprint=fingerprint, rule=rule,
                                       threshold=round(threshold, 4), intercept=intercept,
                                       slope=slope, note=note)


def _embed(embedder, paths, detector, align, batch_size, flip):
    """Embeddings of the images (with a detector: of each one's main face) and the paths
    kept (images without a face are dropped, with a warning)."""
    if detector is None:
        return batch_embed.embed_files(embedder, paths, batch_size=batch_size, flip=flip), paths
    table = batch_embed.embed_photo_faces(embedder, detector, paths, align=align, keep="main",
                                          batch_size=batch_size, flip=flip)
    for s in table.skipped:
        logging.warning("identification: left out %s: %s", s["photo"], s["reason"])
    return table.embeddings, table.photos


def evaluate_identification_folder(embedder, images_root: str, *, gallery_size: int = 1,
                                   distractors_root: str | None = None, calibration=None,
                                   threshold: float | None = None, detector=None, align=None,
                                   batch_size: int = 64, flip: bool = False,
                                   plots_dir: str | None = None,
                                   output_json: str | None = None,
                                   fit_calibration_far: float | None = None) -> dict:
    """Identification on an identity-per-folder set (see the module doc): rank-1, rank-5,
    CMC (plots_dir/cmc.png), DIR at FAR 1% and 0.1%, and DIR/FAR at the decision threshold
    (`threshold`, else the calibration's). calibration: a recognition Calibration (default:
    the model's, calibration.for_model), whose rule decides; when it has a confidence fit,
    its reliability on these trials is reported too. With a detector each image's main face
    is used (images without one are left out). fit_calibration_far: also fit a calibration
    on these trials (result["fitted_calibration"]), its threshold at that FAR."""
    paths = image_files.list_images(images_root)
    if not paths:
        raise ValueError(f"{images_root}: no images found")
    labels = np.array(identity_labels(paths, images_root))
    gallery, probes, distractors = split_gallery_probes(
        labels, gallery_size, singletons_are_distractors=distractors_root is None)
    extra = image_files.list_images(distractors_root) if distractors_root else []
    if distractors_root and not extra:
        raise ValueError(f"{distractors_root}: no images found")
    if not len(probes):
        raise ValueError(f"{images_root}: no identity has more than {gallery_size} images, "
                         "so there is no probe")
    rows = list(gallery) + list(probes) + list(distractors)
    all_paths = [paths[i] for i in rows] + extra
    emb, kept = _embed(embedder, all_paths, detector, align, batch_size, flip)
    by_path = dict(zip(kept, emb))
    role = (["gallery"] * len(gallery) + ["probe"] * len(probes)
            + ["distractor"] * (len(distractors) + len(extra)))
    role_of = dict(zip(all_paths, role))
    label_of = dict(zip(paths, labels))

    def part(name):
        chosen = [p for p in all_paths if role_of[p] == name and p in by_path]
        return (np.stack([by_path[p] for p in chosen]) if chosen
                else np.zeros((0, embedder.embedding_dim), np.float32),
                np.array([label_of.get(p, "") for p in chosen], str))

    (g_emb, g_lab), (p_emb, p_lab), (d_emb, _) = part("gallery"), part("probe"), \
        part("distractor")
    enrolled = set(g_lab)
    keep = np.array([label in enrolled for label in p_lab], bool)
    calibration = calibration or calibration_lib.for_model(embedder.fingerprint,
                                                           embedder.threshold)
    rule = calibration.rule
    trials = identification_trials(g_emb, g_lab, p_emb[keep], p_lab[keep], d_emb, rule)
    result = identification_metrics(trials)
    result.update({"images_root": images_root, "distractors_root": distractors_root,
                   "gallery_size": gallery_size, "num_enrolled_identities": len(enrolled),
                   "num_gallery_faces": len(g_emb), "num_images_without_face":
                       len(all_paths) - len(kept), "rule": rule,
                   "model": embedder.source, "model_fingerprint": embedder.fingerprint,
                   "calibration_note": calibration.note})
    t = threshold if threshold is not None else calibration.threshold
    if t is not None:
        result["at_threshold"] = open_set_rates(trials, t)
        result["at_threshold"]["source"] = "--threshold" if threshold is not None else \
            "calibration"
    if calibration.calibrated:
        result["reliability"] = reliability(calibration.confidence(trials.distance),
                                            trials.correct, trials.balanced_weights())
    if fit_calibration_far is not None:
        result["fitted_calibration"] = fit_calibration(
            trials, embedder.fingerprint, rule, fit_calibration_far,
            note=f"fitted on {images_root} (gallery_size {gallery_size}), "
                 f"threshold at FAR {fit_calibration_far:g}").to_dict()
    if plots_dir and "cmc" in result:
        tf.io.gfile.makedirs(plots_dir)
        result["cmc_plot"] = plots.cmc_png(result["cmc"], os.path.join(plots_dir, "cmc.png"),
                                           title=f"CMC, {len(enrolled)} people enrolled, "
                                                 f"{gallery_size} image"
                                                 f"{'' if gallery_size == 1 else 's'} each")
    if output_json:
        io_utils.write_json_atomic(output_json, result)
    return result
