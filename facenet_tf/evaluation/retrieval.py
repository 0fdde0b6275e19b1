"""Leave-one-out retrieval metrics over a labelled embedding set: precision@1, R-precision, MAP@R.

Each image queries all the others by squared L2 distance (ties broken by index). R is the number
of other images of the query's identity; queries with R = 0 (one-image identities) are not
scored, but those images stay in the gallery as distractors. MAP@R follows Musgrave et al.,
"A Metric Learning Reality Check" (2020): mean over the first R ranks of precision@i at the
ranks that are correct.
"""

import numpy as np

from facenet_tf.triplets import distances


def retrieval_metrics(embeddings, labels, chunk_size: int = 1024) -> dict:
    """precision_at_1, r_precision and map_at_r, averaged over queries with R >= 1."""
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError(f"embeddings {x.shape} and labels ({y.size}) do not match")
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    r_all = counts[inverse] - 1
    max_r = int(r_all.max()) if y.size else 0
    p1, rprec, mapr = [], [], []
    for start in range(0, y.size, chunk_size):
        q = slice(start, min(start + chunk_size, y.size))
        dist = distances.squared_l2_matrix(x[q], x, dtype=np.float32)
        rows = np.arange(q.start, q.stop)
        dist[rows - q.start, rows] = np.inf  # a query never retrieves itself
        k = min(max(max_r, 1), y.size - 1)
        if k <= 0:
            break
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        hits = y[order] == y[rows, None]
        for row, r in enumerate(r_all[q]):
            if r == 0:
                continue
            h = hits[row, :r]
            p1.append(float(hits[row, 0]))
            rprec.append(float(h.mean()))
            precision_at_i = np.cumsum(h) / np.arange(1, r + 1)
            mapr.append(float(np.sum(precision_at_i * h) / r))
    if not p1:
        raise ValueError("no identity has two or more images: nothing to retrieve")
    return {"precision_at_1": float(np.mean(p1)), "r_precision": float(np.mean(rprec)),
            "map_at_r": float(np.mean(mapr)), "num_queries": len(p1),
            "num_images": int(y.size)}
