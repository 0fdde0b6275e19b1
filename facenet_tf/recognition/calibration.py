"""A model's identity-decision settings for galleries: the decision rule, the distance
threshold under which a face is named, and the fit that turns a distance into a calibrated
confidence (the probability that the name is right).

A calibration belongs to one model (its weights' fingerprint). Those measured for models this
project ships are files in facenet_tf/recognition/calibrations/FINGERPRINT.json, written by
`python -m experiments.gallery_lfw_dev` (docs/recognition.md: how they are fitted and how
reliable they are on held-out people); a gallery may hold its own (Gallery.set_calibration).
A model with neither gets `uncalibrated(...)`: its own recommended (pair-verification)
threshold, no confidence, and a note saying so.

Confidence is Platt scaling: p = 1 / (1 + exp(-(intercept + slope * distance))), a logistic
regression of "the top-1 person is the face's true identity" on the top-1 distance, fitted
(scikit-learn) on trials of identities kept out of every evaluation.
"""

import dataclasses
import os

import numpy as np
from sklearn.linear_model import LogisticRegression

from facenet_tf.common import io_utils
from facenet_tf.recognition.decision import DEFAULT_RULE, check_rule

CALIBRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calibrations")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """fingerprint: the model's; rule: facenet_tf.recognition.decision rule the numbers are
    for; threshold: a face is named when its top-1 distance is <= threshold (None: no
    threshold known); intercept/slope: the Platt fit (None: no confidence); note: where the
    numbers come from; measured: what the fit was measured to do (free-form, for reports)."""
    fingerprint: str
    rule: str
    threshold: float | None
    intercept: float | None = None
    slope: float | None = None
    note: str = ""
    measured: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check_rule(self.rule)

    @property
    def calibrated(self) -> bool:
        return self.intercept is not None and self.slope is not None

    def confidence(self, distances):
        """Calibrated probability that each top-1 name is right (float64 array), or None
        when this calibration has no fit."""
        if not self.calibrated:
            return None
        z = self.intercept + self.slope * np.asarray(distances, np.float64)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500.0, 500.0)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration") -> "Calibration":
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = {"fingerprint", "rule", "threshold"} - set(d)
        if missing:
            raise ValueError(f"{source}: missing {sorted(missing)}")
        return cls(**{k: v for k, v in d.items() if k in fields})


def read_calibration(path: str) -> Calibration:
    """A calibration JSON file (as write_calibration writes it)."""
    return Calibration.from_dict(io_utils.read_json(path), source=path)


def write_calibration(path: str, calibration: Calibration) -> None:
    io_utils.write_json_atomic(path, calibration.to_dict())


def uncalibrated(fingerprint: str, model_threshold: float | None) -> Calibration:
    """For a model without a measured calibration: the default rule at the model's own
    threshold (measured for pairs of faces, not for a gallery), no confidence."""
    shown = "none" if model_threshold is None else f"{model_threshold:g}"
    return Calibration(
        fingerprint=fingerprint, rule=DEFAULT_RULE, threshold=model_threshold,
        note=(f"no gallery calibration for model {fingerprint}: the threshold is the model's "
              f"own pair-verification threshold ({shown}) and no confidence is given; "
              "fit one with `python -m facenet_tf.evaluate --identification DIR "
              "--fit_calibration FILE` and enrol with --calibration FILE"))


def packaged_calibration(fingerprint: str) -> Calibration | None:
    """The calibration shipped for this model fingerprint, if there is one."""
    path = os.path.join(CALIBRATIONS_DIR, f"{fingerprint}.json")
    if not os.path.exists(path):
        return None
    calibration = read_calibration(path)
    if calibration.fingerprint != fingerprint:
        raise ValueError(f"{path}: holds model {calibration.fingerprint}, not {fingerprint}")
    return calibration


def for_model(fingerprint: str, model_threshold: float | None) -> Calibration:
    """The shipped calibration of this model, else uncalibrated()."""
    return packaged_calibration(fingerprint) or uncalibrated(fingerprint, model_threshold)


def fit_platt(distances, correct, weights=None) -> tuple[float, float]:
    """(intercept, slope) of the logistic regression of `correct` (bool) on `distances`,
    unregularised, each trial weighted by `weights`."""
    x = np.asarray(distances, np.float64).reshape(-1, 1)
    y = np.asarray(correct, bool)
    if y.all() or not y.any():
        raise ValueError("calibration needs trials with both right and wrong names "
                         f"({int(y.sum())} right of {y.size})")
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)
    model.fit(x, y, sample_weight=None if weights is None else np.asarray(weights, np.float64))
    return float(model.intercept_[0]), float(model.coef_[0, 0])


def threshold_at_far(stranger_distances, far: float) -> float:
    """The largest distance threshold that names at most a fraction `far` of strangers (a
    face is named when its top-1 distance is <= the threshold): just below the (m+1)-th
    smallest stranger distance, m = floor(far x strangers)."""
    d = np.sort(np.asarray(stranger_distances, np.float64))
    if d.size == 0:
        raise ValueError("no stranger trials to set a threshold on")
    m = int(np.floor(far * d.size + 1e-9))
    return float(np.nextafter(d[m], -np.inf)) if m < d.size else float("inf")
