"""A person's distance to a query under each decision rule, by a plain loop (the oracle of
the gallery's tests and of the public API's test)."""

import numpy as np


def person_distance_by_loop(query, faces, rule):
    """One person's distance to one query, by hand."""
    d = sorted(float(np.sum((query.astype(np.float64) - f) ** 2)) for f in faces)
    if rule == "nearest":
        return d[0]
    if rule == "top2_mean":
        return sum(d[:2]) / len(d[:2])
    if rule == "mean":
        return sum(d) / len(d)
    assert rule == "centroid", rule
    c = faces.astype(np.float64).sum(axis=0)
    c /= np.linalg.norm(c)
    return float(np.sum((query - c) ** 2))
