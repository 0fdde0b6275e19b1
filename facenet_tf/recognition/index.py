"""Nearest-face search over a gallery's embeddings: exact (the matrix product of
facenet_tf.triplets.distances, the reference) or a FAISS index for large galleries.

Kinds (distances are squared L2 in every kind):
- "exact": squared_l2_matrix against every face; no file;
- "flat": FAISS IndexFlatL2, exact too (FAISS's own BLAS path);
- "hnsw": an HNSW graph (HNSW_M links a node) over the faces projected by PCA to
  HNSW_PCA_DIM dimensions, whose HNSW_REFINE_FACTOR x k nearest are re-ranked by their exact
  distance over the full vectors (FAISS IndexRefineFlat); 4 D' + 8 M + 4 D bytes a face
  (D' = HNSW_PCA_DIM; embeddings of at most HNSW_PCA_DIM dimensions, and galleries of fewer
  than 2 D faces, skip the projection and the re-ranking: 4 D + 8 M). At 1M faces the
  projection bought the recall that a wider search over the full vectors cost too much speed
  for (docs/recognition.md);
- "hnsw_sq8": an HNSW graph over 8-bit scalar codes of the full vectors, (D + 8 M) bytes a
  face;
- "ivf_sq8": an inverted file of 4 sqrt(N) k-means lists over 8-bit codes (IVF_NPROBE lists
  searched), D bytes a face plus the lists.
"auto" is "exact" up to EXACT_UP_TO faces and "hnsw" above (benchmarks/bench_gallery.py
measured both; docs/recognition.md). An index is saved as bytes (faiss.serialize_index),
which the gallery writes beside its data and rebuilds when its data changes.
"""

import math

import faiss
import numpy as np

from facenet_tf.recognition.decision import EXACT_CHUNK_ENTRIES
from facenet_tf.triplets import distances

KINDS = ("exact", "flat", "hnsw", "hnsw_sq8", "ivf_sq8")
AUTO = "auto"
# "auto": exact search up to this many faces, HNSW above (benchmarks/bench_gallery.py).
EXACT_UP_TO = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 100
HNSW_EF_SEARCH = 256
HNSW_PCA_DIM = 128
HNSW_REFINE_FACTOR = 2
# Faces the PCA of "hnsw" is fitted on (a seeded sample when there are more).
PCA_TRAIN_FACES = 100_000
IVF_NPROBE = 32
# Training vectors per IVF list (FAISS warns below 39).
IVF_TRAIN_PER_LIST = 64


def choose_kind(num_faces: int, kind: str = AUTO) -> str:
    """The kind of index for a gallery of num_faces faces: `kind` itself, or for "auto"
    "exact" up to EXACT_UP_TO faces and "hnsw" above."""
    if kind == AUTO:
        return "exact" if num_faces <= EXACT_UP_TO else "hnsw"
    if kind not in KINDS:
        raise ValueError(f"index kind {kind!r}: expected {AUTO!r} or one of {KINDS}")
    return kind


def _projects(kind: str, num_faces: int, dim: int) -> bool:
    """Whether an index of this kind projects the faces (PCA) before its graph."""
    return kind == "hnsw" and dim > HNSW_PCA_DIM and num_faces >= 2 * dim


def _factory(kind: str, num_faces: int, projects: bool) -> str:
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"{f'PCA{HNSW_PCA_DIM},' if projects else ''}HNSW{HNSW_M},Flat"
    if kind == "hnsw_sq8":
        return f"HNSW{HNSW_M},SQ8"
    return f"IVF{ivf_lists(num_faces)},SQ8"


def ivf_lists(num_faces: int) -> int:
    """Inverted lists of an ivf_sq8 index over num_faces faces: 4 sqrt(N), at least 1 and
    at most N / IVF_TRAIN_PER_LIST so that each list has training vectors."""
    return max(1, min(int(4 * math.sqrt(num_faces)), num_faces // IVF_TRAIN_PER_LIST))


class FaceIndex:
    """Nearest faces among `embeddings` [N, D] (float32, unit rows) by squared L2:
    FaceIndex.build(embeddings, kind) (kind: one of KINDS, or "auto" by size), then
    search(queries, k) -> (distances, rows), nearest first."""

    def __init__(self, kind: str, embeddings: np.ndarray, faiss_index=None):
        self.kind = kind
        self.embeddings = embeddings
        self.faiss_index = faiss_index
        self._sq_norms = (np.sum(np.square(embeddings, dtype=np.float32), axis=1)
                          if kind == "exact" else None)

    @classmethod
    def build(cls, embeddings, kind: str = AUTO, seed: int = 0) -> "FaceIndex":
        """An index of `embeddings` of the given kind ("auto": choose_kind). ivf_sq8 trains
        its k-means and codes, and hnsw its PCA, on a seeded sample of the embeddings."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        kind = choose_kind(len(embeddings), kind)
        if kind == "exact":
            return cls(kind, embeddings)
        n, dim = embeddings.shape
        if kind == "ivf_sq8" and n < IVF_TRAIN_PER_LIST:
            raise ValueError(f"an ivf_sq8 index needs at least {IVF_TRAIN_PER_LIST} faces, "
                             f"got {n}")
        projects = _projects(kind, n, dim)
        index = faiss.index_factory(dim, _factory(kind, n, projects), faiss.METRIC_L2)
        if kind.startswith("hnsw"):
            graph = faiss.downcast_index(index.index if projects else index)
            graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        if projects:
            index = faiss.IndexRefineFlat(index)
        if not index.is_trained:
            sample = np.random.RandomState(seed).permutation(n)[
                :IVF_TRAIN_PER_LIST * ivf_lists(n) if kind == "ivf_sq8" else PCA_TRAIN_FACES]
            index.train(embeddings[np.sort(sample)])
        if n:
            index.add(embeddings)
        return cls(kind, embeddings, index)

    def __len__(self) -> int:
        return len(self.embeddings)

    def search(self, queries, k: int, ef_search: int | None = None):
        """(distances [Q, k] float32 squared L2, face rows [Q, k] int64), nearest first;
        rows are -1 (distance inf) past the number of faces. ef_search: the HNSW kinds'
        breadth of search instead of HNSW_EF_SEARCH (the benchmark's sweep)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        num_q, n = queries.shape[0], len(self)
        if k <= 0 or n == 0:
            return (np.full((num_q, max(k, 0)), np.inf, np.float32),
                    np.full((num_q, max(k, 0)), -1, np.int64))
        if self.kind == "exact":
            return self._exact_search(queries, k)
        if self.kind.startswith("hnsw"):
            refined = isinstance(self.faiss_index, faiss.IndexRefine)
            candidates = k * HNSW_REFINE_FACTOR if refined else k
            params = faiss.SearchParametersHNSW(
                efSearch=max(ef_search or HNSW_EF_SEARCH, candidates))
            if refined:
                params = faiss.IndexRefineSearchParameters(k_factor=HNSW_REFINE_FACTOR,
                                                           base_index_params=params)
        elif self.kind == "ivf_sq8":
            params = faiss.SearchParametersIVF(nprobe=IVF_NPROBE)
        else:
            params = None
        dist, rows = self.faiss_index.search(queries, k, params=params)
        dist = np.where(rows < 0, np.inf, dist).astype(np.float32)
        return dist, rows.astype(np.int64)

    def _exact_search(self, queries, k):
        n = len(self)
        kk = min(k, n)
        dist_out = np.full((queries.shape[0], k), np.inf, np.float32)
        rows_out = np.full((queries.shape[0], k), -1, np.int64)
        chunk = max(1, EXACT_CHUNK_ENTRIES // n)
        for start in range(0, queries.shape[0], chunk):
            q = queries[start:start + chunk]
            d = distances.squared_l2_matrix(q, self.embeddings, dtype=np.float32,
                                            reference_sq_norms=self._sq_norms)
            part = (np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk < n
                    else np.broadcast_to(np.arange(n), d.shape))
            part_d = np.take_along_axis(d, part, axis=1)
            order = np.lexsort((part, part_d), axis=1)
            rows_out[start:start + len(q), :kk] = np.take_along_axis(part, order, axis=1)
            dist_out[start:start + len(q), :kk] = np.take_along_axis(part_d, order, axis=1)
        return dist_out, rows_out

    def to_bytes(self) -> bytes:
        """The FAISS index serialised (faiss.serialize_index); b"" for "exact"."""
        if self.faiss_index is None:
            return b""
        return faiss.serialize_index(self.faiss_index).tobytes()

    @classmethod
    def from_bytes(cls, kind: str, data: bytes, embeddings) -> "FaceIndex":
        """An index read back from to_bytes; ValueError if the bytes are not a FAISS index of
        these embeddings' count and dimension."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if kind == "exact":
            return cls(kind, embeddings)
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as e:
            raise ValueError(f"not a readable FAISS index ({str(e).splitlines()[-1]})") from None
        if index.ntotal != len(embeddings) or index.d != embeddings.shape[1]:
            raise ValueError(f"a FAISS index of {index.ntotal} x {index.d}, not of the "
                             f"gallery's {len(embeddings)} x {embeddings.shape[1]} faces")
        return cls(kind, embeddings, index)

    def bytes_per_face(self) -> float:
        """Memory of the search structure per face: the serialised FAISS index, or the
        float32 vectors for "exact"."""
        n = max(len(self), 1)
        if self.faiss_index is None:
            return self.embeddings.nbytes / n
        return len(faiss.serialize_index(self.faiss_index)) / n


def merge_shard_results(parts, k: int):
    """The k nearest over a gallery split into shards, from each shard's own answer:
    parts = [(distances [q, k'], rows [q, k'] with -1 for none, the shard's first row)].
    Returns (distances, rows) [q, k] in whole-gallery rows; distance ties go to the lower
    row, as exact search breaks them (what a coordinator in front of shard servers does)."""
    d = np.concatenate([p[0] for p in parts], axis=1)
    r = np.concatenate([np.where(p[1] >= 0, p[1] + p[2], -1) for p in parts], axis=1)
    order = np.lexsort((r, d), axis=1)[:, :k]
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(r, order, axis=1)
