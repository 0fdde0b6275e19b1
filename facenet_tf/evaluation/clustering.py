"""Agglomerative clustering of face embeddings (the paper's section 5.6) and its scores."""

import numpy as np
from sklearn import cluster as skcluster
from sklearn import metrics as skmetrics

from facenet_tf.triplets import distances

LINKAGES = ("average", "complete", "single")


def agglomerative_clusters(embeddings, distance_threshold: float | None = None,
                           num_clusters: int | None = None, linkage: str = "average") -> np.ndarray:
    """Cluster ids per embedding: merge clusters while their linkage distance (SQUARED L2, so on
    the same scale as the verification threshold) is below `distance_threshold`, or until
    `num_clusters` remain. Exactly one of the two must be given."""
    if (distance_threshold is None) == (num_clusters is None):
        raise ValueError("give exactly one of distance_threshold and num_clusters")
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {x.shape}")
    if x.shape[0] == 1:
        return np.zeros(1, dtype=np.int64)
    model = skcluster.AgglomerativeClustering(
        n_clusters=num_clusters, distance_threshold=distance_threshold, metric="precomputed",
        linkage=linkage)
    return model.fit_predict(distances.squared_l2_matrix(x)).astype(np.int64)


def clustering_scores(labels_true, labels_pred) -> dict:
    """NMI and AMI (sklearn) of predicted clusters against identities, plus the counts."""
    t = np.asarray(labels_true).reshape(-1)
    p = np.asarray(labels_pred).reshape(-1)
    if t.size != p.size:
        raise ValueError(f"{t.size} true labels but {p.size} cluster ids")
    return {"nmi": float(skmetrics.normalized_mutual_info_score(t, p)),
            "ami": float(skmetrics.adjusted_mutual_info_score(t, p)),
            "num_clusters": int(np.unique(p).size),
            "num_identities": int(np.unique(t).size),
            "num_images": int(t.size)}
