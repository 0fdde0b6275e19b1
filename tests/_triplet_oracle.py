"""Plain-loop oracles of FaceNet triplet selection (section 3.2), shared by the mining tests.

Written independently of facenet_tf.triplets.mining: Python loops over float64 distances, ties broken by
the lowest index.
"""


def oracle_distances(emb):
    n = len(emb)
    d = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            d[i][j] = float(sum((float(x) - float(y)) ** 2 for x, y in zip(emb[i], emb[j])))
    return d


def oracle_angular(emb):
    n = len(emb)
    d = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                dot = sum(float(x) * float(y) for x, y in zip(emb[i], emb[j]))
                ni = sum(float(x) ** 2 for x in emb[i]) ** 0.5
                nj = sum(float(y) ** 2 for y in emb[j]) ** 0.5
                d[i][j] = max(1.0 - dot / (ni * nj), 0.0)
    return d


def negatives_of(labels, a):
    return [n for n in range(len(labels)) if labels[n] != labels[a]]


def oracle_pairs(labels):
    """Ordered anchor-positive pairs whose anchor has at least one negative."""
    out = []
    for a in range(len(labels)):
        if not negatives_of(labels, a):
            continue
        for p in range(len(labels)):
            if p != a and labels[p] == labels[a]:
                out.append((a, p))
    return out


def oracle_band(d, labels, a, p, alpha):
    return [n for n in negatives_of(labels, a) if d[a][p] < d[a][n] < d[a][p] + alpha]


def oracle_semi_hard_hardest(d, labels, alpha, fallback="skip"):
    out = []
    for a, p in oracle_pairs(labels):
        band = oracle_band(d, labels, a, p, alpha)
        if band:
            out.append((a, p, min(band, key=lambda n: (d[a][n], n))))
        elif fallback == "hardest_beyond":
            beyond = [n for n in negatives_of(labels, a) if d[a][n] > d[a][p]]
            if beyond:
                out.append((a, p, min(beyond, key=lambda n: (d[a][n], n))))
    return out


def oracle_hard(d, labels, hardest_positive=False):
    out = []
    for a in range(len(labels)):
        negs = negatives_of(labels, a)
        poss = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        if not negs or not poss:
            continue
        n = min(negs, key=lambda j: (d[a][j], j))
        if hardest_positive:
            poss = [min(poss, key=lambda j: (-d[a][j], j))]
        out.extend((a, p, n) for p in poss)
    return out


def oracle_all(d, labels, alpha):
    return [(a, p, n) for a, p in oracle_pairs(labels) for n in negatives_of(labels, a)
            if d[a][p] - d[a][n] + alpha > 0]


def oracle_tfa(d, labels):
    out = []
    for a, p in oracle_pairs(labels):
        negs = negatives_of(labels, a)
        outside = [n for n in negs if d[a][n] > d[a][p]]
        if outside:
            out.append((a, p, min(outside, key=lambda n: (d[a][n], n))))
        else:
            out.append((a, p, min(negs, key=lambda n: (-d[a][n], n))))
    return out
