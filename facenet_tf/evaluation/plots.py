"""Evaluation plots as PNG files (matplotlib's Agg canvas, written atomically)."""

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skmetrics

from facenet_tf.common import io_utils


def _save(fig, path: str) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    io_utils.write_bytes_atomic(path, buf.getvalue())
    return path


def roc_png(distances, issame, path: str, title: str = "ROC") -> str:
    """The ROC curve (true accept rate vs false accept rate, log FAR axis) as a PNG."""
    fpr, tpr, _ = skmetrics.roc_curve(np.asarray(issame, bool), -np.asarray(distances))
    auc = skmetrics.auc(fpr, tpr)
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    ax.plot(np.maximum(fpr, 1e-4), tpr, label=f"AUC {auc:.4f}")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("validation rate (VAL)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def distance_histogram_png(distances, issame, path: str, threshold: float | None = None,
                           title: str = "squared L2 distances") -> str:
    """Histograms of same-identity and different-identity pair distances as a PNG."""
    d = np.asarray(distances, dtype=np.float64)
    s = np.asarray(issame, bool)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    bins = np.linspace(0.0, max(4.0, float(d.max()) if d.size else 4.0), 81)
    ax.hist(d[s], bins=bins, alpha=0.6, label=f"same ({int(s.sum())})")
    ax.hist(d[~s], bins=bins, alpha=0.6, label=f"different ({int((~s).sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("squared L2 distance")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def cmc_png(cmc, path: str, title: str = "CMC") -> str:
    """The cumulative match characteristic (identification rate at rank 1..K) as a PNG."""
    cmc = np.asarray(cmc, dtype=np.float64)
    ranks = np.arange(1, cmc.size + 1)
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    ax.plot(ranks, cmc, marker="o", markersize=3, label=f"rank-1 {cmc[0]:.2%}")
    ax.set_xlim(1, max(2, cmc.size))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(max(0.0, float(cmc.min()) - 0.02) if cmc.size else 0.0, 1.002)
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)
