"""How a person's enrolled faces are combined into one distance to a face: the identity
decision of a gallery (facenet_tf.recognition.gallery) and of the identification metrics
(facenet_tf.recognition.identification).

A person enrolled with n faces x_1..x_n is at distance s(q) from a face q, by rule:
- "nearest": min_i d(q, x_i), the nearest of the person's faces;
- "top2_mean": the mean of the two smallest d(q, x_i) (the one distance when n = 1);
- "centroid": d(q, c), c the person's mean embedding scaled back to unit length;
- "mean": the mean of all d(q, x_i).
d is the squared L2 distance (facenet_tf.triplets.distances). With one face per person every
rule is d(q, x_1). docs/recognition.md has the measurement that chose DEFAULT_RULE.
"""

import dataclasses

import numpy as np

from facenet_tf.triplets import distances

RULES = ("nearest", "top2_mean", "centroid", "mean")
# Measured on lfw_dev (experiments/gallery_lfw_dev.py, docs/recognition.md).
DEFAULT_RULE = "centroid"
# Entries of one exact distance matrix (queries x faces, float32): 128 MB.
EXACT_CHUNK_ENTRIES = 1 << 25


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"decision rule {rule!r}: expected one of {RULES}")
    return rule


@dataclasses.dataclass(frozen=True, eq=False)
class People:
    """The faces of a gallery grouped by person: `names` [P], and for each face its person
    (`face_person` [F], int). Built once per gallery version; `order` lists the face rows
    person by person, `starts`/`counts` mark each person's run in it."""
    names: np.ndarray
    face_person: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    centroids: np.ndarray  # float32 [P, D], unit length

    @classmethod
    def from_labels(cls, labels, embeddings) -> "People":
        labels = np.asarray(labels).astype(str)
        embeddings = np.asarray(embeddings, np.float32)
        if labels.shape[0] != embeddings.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {embeddings.shape[0]} faces")
        names, face_person = np.unique(labels, return_inverse=True)
        face_person = face_person.reshape(-1).astype(np.int64)
        order = np.argsort(face_person, kind="stable")
        counts = np.bincount(face_person, minlength=len(names))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        sums = np.zeros((len(names), embeddings.shape[1]), np.float64)
        np.add.at(sums, face_person, embeddings)
        norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return cls(names, face_person, order, starts, counts,
                   (sums / norms).astype(np.float32))

    def __len__(self) -> int:
        return len(self.names)


def reduce_segments(d: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                    rule: str) -> np.ndarray:
    """Per-segment scores of distance rows d [Q, n] whose columns come in runs (segment j:
    columns starts[j] .. starts[j] + counts[j] - 1, every count >= 1), for the face rules
    ("nearest", "top2_mean", "mean"): [Q, segments]."""
    if rule == "mean":
        return np.add.reduceat(d, starts, axis=1) / counts[None, :]
    first = np.minimum.reduceat(d, starts, axis=1)
    if rule == "nearest":
        return first
    # The second smallest: the smallest once the minimum is masked (kept when it is tied).
    at_min = d == np.repeat(first, counts, axis=1)
    ties = np.add.reduceat(at_min, starts, axis=1)
    second = np.minimum.reduceat(np.where(at_min, np.inf, d), starts, axis=1)
    second = np.where((ties >= 2) | (counts[None, :] == 1), first, second)
    return (first + second) / 2.0


def person_distances(queries, embeddings, people: People, rule: str) -> np.ndarray:
    """float32 [Q, P]: every query face's distance to every person under `rule` (exact)."""
    check_rule(rule)
    queries = np.asarray(queries, np.float32)
    out = np.empty((queries.shape[0], len(people)), np.float32)
    chunk = max(1, EXACT_CHUNK_ENTRIES // max(len(embeddings), 1))
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        if rule == "centroid":
            out[start:start + len(q)] = distances.squared_l2_matrix(q, people.centroids,
                                                                    dtype=np.float32)
            continue
        d = distances.squared_l2_matrix(q, embeddings[people.order], dtype=np.float32)
        out[start:start + len(q)] = reduce_segments(d, people.starts, people.counts, rule)
    return out


def candidate_distances(queries, embeddings, people: People, candidates, rule: str):
    """Exact person distances for a shortlist: candidates [Q, C] face rows (-1 = none, as
    FAISS pads). Returns (person ids [Q, M], distances [Q, M]) with M the most candidate
    people of any query, padded with -1 / inf, each row sorted nearest first (ties by id)."""
    check_rule(rule)
    queries = np.asarray(queries, np.float32)
    candidates = np.asarray(candidates, np.int64)
    num_q, num_p = queries.shape[0], len(people)
    q_of = np.repeat(np.arange(num_q), candidates.shape[1])
    flat = candidates.reshape(-1)
    keep = flat >= 0
    pairs = np.unique(q_of[keep] * num_p + people.face_person[flat[keep]])
    if pairs.size == 0:
        return np.full((num_q, 1), -1, np.int64), np.full((num_q, 1), np.inf, np.float32)
    q_of, persons = pairs // num_p, pairs % num_p
    if rule == "centroid":
        scores = distances.squared_l2(queries[q_of], people.centroids[persons])
    else:
        counts = people.counts[persons]
        ends = np.cumsum(counts)
        offsets = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)
        rows = people.order[np.repeat(people.starts[persons], counts) + offsets]
        d = distances.squared_l2(np.repeat(queries[q_of], counts, axis=0), embeddings[rows])
        scores = reduce_segments(d[None, :], ends - counts, counts, rule)[0]
    order = np.lexsort((persons, scores, q_of))
    q_of, persons, scores = q_of[order], persons[order], scores[order]
    per_query = np.bincount(q_of, minlength=num_q)
    width = max(int(per_query.max()) if num_q else 0, 1)
    rank = np.arange(len(q_of)) - np.repeat(np.cumsum(per_query) - per_query, per_query)
    ids = np.full((num_q, width), -1, np.int64)
    dist = np.full((num_q, width), np.inf, np.float32)
    ids[q_of, rank] = persons
    dist[q_of, rank] = scores
    return ids, dist


def top_people(person_dist: np.ndarray, top_k: int):
    """(person ids [Q, k], distances [Q, k]) of the k nearest people per row, nearest first
    (ties by person id)."""
    ids = np.argsort(person_dist, axis=1, kind="stable")[:, :top_k]
    return ids, np.take_along_axis(person_dist, ids, axis=1)
