"""What a gallery beyond one machine would run, measured at the size one machine here holds
(docs/scaling.md, "A gallery or collection beyond one machine", takes its numbers from here):

- every kind of facenet_tf.recognition.index.FaceIndex (exact, hnsw, hnsw_sq8, ivf_sq8) and
  IVF-PQ, the compressed index a 100M-face gallery needs (FAISS "IVF{lists},PQ64": 64 bytes of
  code a face, sqrt(N) lists), alone and with an exact re-ranking of its REFINE_FACTOR x k nearest candidates
  from the float vectors ("...,RFlat") or from 8-bit codes ("...,Refine(SQ8)"): queries/s in
  one batch of QUERIES and one query a call, recall@1 against exact search, bytes a face in
  RAM (the serialised index; the float vectors for exact), seconds to build, and for the
  inverted files the CPU nanoseconds a scanned code costs (the figure that scales to 100M);
- sharding: the gallery split into SHARDS parts, each searched on its own and the answers
  merged by distance (what a coordinator in front of shard servers does): the merged exact
  answers against exact search over the whole gallery, and the merged IVF-PQ answers' recall.

The faces: lfw_dev's pretrained embeddings (benchmarks.bench_gallery.lfw_faces: the cache of
experiments.gallery_lfw_dev under FACENET_TF_LFW_DEV_WORK) brought to SIZE with
bench_gallery's face-like filler (seeded); QUERIES real faces of people with another photo
are the queries (their own rows left out of the gallery).

    nice python -m benchmarks.bench_gallery_scale [--quick]     # --quick: 100k faces

FAISS runs on THREADS thread(s) (the rates are a core's); the machine's load average is in
the notes.
"""

import os
import time

import faiss
import numpy as np

from benchmarks import common
from benchmarks.bench_gallery import face_like_filler, lfw_faces
from facenet_tf.recognition.index import (
    IVF_NPROBE,
    FaceIndex,
    ivf_lists,
    merge_shard_results,
)

SIZE, QUICK_SIZE = 1_000_000, 100_000
QUERIES = 1000
ONE_AT_A_TIME = 100
K = 10
SHARDS = 4
PQ_BYTES = 64
REFINE_FACTOR = 8
# IVF-PQ: sqrt(N) lists (FAISS's lower end: the k-means must train in minutes on 2 shared
# cores), each of NPROBES of them searched (the shards: the last); training vectors: TRAIN_PER_LIST a list, at least MIN_TRAIN
# (PQ trains 256 centroids a sub-quantizer; FAISS asks for 39 points a centroid).
NPROBES = (16, 64)
TRAIN_PER_LIST = 64
MIN_TRAIN = 16_384
# FAISS threads: one, so that rates are a core's (OpenMP teams spin badly on a machine whose
# cores other jobs hold) and the arithmetic for 100M counts cores.
THREADS = 1
SEED = 0
FACE_INDEX_KINDS = ("exact", "hnsw", "hnsw_sq8", "ivf_sq8")
# --quick: exact search and IVF-PQ only (HNSW builds take many minutes on 2 shared cores;
# benchmarks/bench_gallery measures FaceIndex's kinds).
QUICK_FACE_INDEX_KINDS = ("exact",)
PQ_KINDS = {"ivf_pq64": "", "ivf_pq64_rflat": "RFlat", "ivf_pq64_rsq8": "SQ8"}


def faces_and_queries(size: int):
    """(gallery [size, D] float32: real faces then filler, queries [QUERIES, D])."""
    real, labels = lfw_faces()
    rng = np.random.RandomState(SEED)
    _, person, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rows = np.sort(rng.choice(np.flatnonzero(counts[person] >= 2), QUERIES, replace=False))
    keep = np.ones(len(real), bool)
    keep[rows] = False
    base = real[keep]
    filler = face_like_filler(base, labels[keep], size - len(base), SEED)
    return np.ascontiguousarray(np.concatenate([base, filler])), real[rows]


class PQIndex:
    """A FAISS IVF-PQ index (optionally re-ranked), searched like a FaceIndex. `trained`: an
    empty trained IVF-PQ to copy (shards and variants share one training, as FAISS's own
    recipe for distributed indexes does)."""

    def __init__(self, trained, faces, refine: str, nprobe: int):
        self.refine, self.nprobe = refine, nprobe
        base = faiss.clone_index(trained)
        if refine == "RFlat":
            self.faiss_index = faiss.IndexRefineFlat(base)
        elif refine == "SQ8":
            codes = faiss.IndexScalarQuantizer(faces.shape[1], faiss.ScalarQuantizer.QT_8bit)
            codes.train(faces[training_rows(len(faces))])
            self.faiss_index = faiss.IndexRefine(base, codes)
        else:
            self.faiss_index = base
        self.faiss_index.add(faces)

    def search(self, queries, k):
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        if self.refine:
            params = faiss.IndexRefineSearchParameters(k_factor=REFINE_FACTOR,
                                                       base_index_params=params)
        d, r = self.faiss_index.search(np.ascontiguousarray(queries, np.float32), k,
                                       params=params)
        return np.where(r < 0, np.inf, d).astype(np.float32), r.astype(np.int64)

    def bytes_per_face(self):
        return len(faiss.serialize_index(self.faiss_index)) / self.faiss_index.ntotal


def pq_lists(num_faces: int) -> int:
    return max(1, int(np.sqrt(num_faces)))


def training_rows(num_faces: int):
    train = max(TRAIN_PER_LIST * pq_lists(num_faces), MIN_TRAIN)
    return np.sort(np.random.RandomState(SEED).permutation(num_faces)[:train])


def train_pq(faces):
    """An empty IVF-PQ trained on a seeded sample of `faces`."""
    index = faiss.index_factory(faces.shape[1], f"IVF{pq_lists(len(faces))},PQ{PQ_BYTES}")
    index.train(faces[training_rows(len(faces))])
    return index


def build(kind: str, faces, trained=None, nprobe: int = NPROBES[-1]):
    if kind in PQ_KINDS:
        return PQIndex(trained, faces, PQ_KINDS[kind], nprobe)
    return FaceIndex.build(faces, kind, seed=SEED)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def rates(index, queries):
    """(answers, queries/s in one batch, ms a query one per call, CPU microseconds a query in
    the batch: the process's CPU time, which other jobs on the machine do not inflate)."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    answers = index.search(queries, K)
    batch_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    t0 = time.perf_counter()
    for q in queries[:ONE_AT_A_TIME]:
        index.search(q[None], K)
    return (answers, len(queries) / batch_s,
            1000 * (time.perf_counter() - t0) / ONE_AT_A_TIME, 1e6 * cpu_s / len(queries))


def recall_at_1(faces, queries, rows, exact_d):
    """Share of queries whose first answer is exact search's nearest face (or as near)."""
    true = np.sum((queries - faces[np.maximum(rows[:, 0], 0)]) ** 2, axis=1)
    return float(np.mean((rows[:, 0] >= 0) & (true <= exact_d[:, 0] + 1e-5)))


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def run(quick: bool) -> list:
    faiss.omp_set_num_threads(THREADS)
    size = QUICK_SIZE if quick else SIZE
    faces, queries = faces_and_queries(size)
    print(f"{len(faces):,} faces x {faces.shape[1]}, {len(queries)} queries", flush=True)
    trained, train_s = timed(train_pq, faces)
    print(f"IVF-PQ trained in {train_s:.0f} s", flush=True)
    rows, exact = [], None
    configs = ([(kind, None) for kind in (QUICK_FACE_INDEX_KINDS if quick else FACE_INDEX_KINDS)]
               + [(kind, nprobe) for nprobe in NPROBES for kind in PQ_KINDS])
    for kind, nprobe in configs:
        index, build_s = timed(build, kind, faces, trained, *([nprobe] if nprobe else []))
        (d, r), batch_rate, single_ms, cpu_us = rates(index, queries)
        notes = (f"{index.bytes_per_face():.0f} bytes/face in RAM; {cpu_us:,.0f} CPU us a "
                 f"query in the batch, {single_ms:.2f} ms a query one per call; built in "
                 f"{build_s:.0f} s")
        if exact is None:
            exact = (d, r, batch_rate)
        else:
            notes = f"recall@1 {recall_at_1(faces, queries, r, exact[0]):.4f}; " + notes
        if kind in PQ_KINDS:
            notes += (f" + {train_s:.0f} s of training; "
                      + scan_note(len(faces), cpu_us, nprobe))
        elif kind == "ivf_sq8":
            notes += f"; {ivf_lists(len(faces))} lists, nprobe {IVF_NPROBE}"
        name = kind + (f", nprobe {nprobe}" if nprobe else "")
        rows.append({"benchmark": "gallery_scale", "metric": f"{name} queries/s at {size:,} "
                     f"faces (baseline: exact)", "value": round(batch_rate, 1),
                     "baseline": round(exact[2], 1), "ratio": round(batch_rate / exact[2], 2),
                     "target": None, "notes": f"{notes}; {len(queries)} queries in one batch, "
                                              f"top-{K}, {THREADS} FAISS thread; {load()}"})
        print(common.format_row(rows[-1]), flush=True)
        del index
    rows += sharded(faces, queries, exact, trained)
    return rows


def scan_note(num_faces: int, cpu_us: float, nprobe: int) -> str:
    """The inverted file's work: codes scanned a query and the CPU time each took."""
    lists = pq_lists(num_faces)
    scanned = nprobe * num_faces / lists
    return (f"{lists} lists: {scanned:,.0f} codes scanned a query, "
            f"{1e3 * cpu_us / scanned:.1f} CPU ns a code")


def sharded(faces, queries, exact, trained) -> list:
    """Each of SHARDS parts searched alone, the answers merged by distance (IVF-PQ shards
    share one training, as shard servers would)."""
    bounds = np.linspace(0, len(faces), SHARDS + 1).astype(int)
    out = []
    for kind in ("exact", "ivf_pq64_rflat"):
        parts, shard_s = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            index = build(kind, faces[lo:hi], trained)
            (d, r), s = timed(index.search, queries, K)
            parts.append((d, r, lo))
            shard_s.append(s)
            del index
        merged_d, merged_r = merge_shard_results(parts, K)
        rate = len(queries) / float(np.mean(shard_s))
        if kind == "exact":
            same = (f"merged top-{K} rows equal to exact search over all: "
                    f"{bool(np.array_equal(merged_r, exact[1]))}, distances within 1e-5: "
                    f"{bool(np.allclose(merged_d, exact[0], atol=1e-5))}")
        else:
            same = (f"recall@1 {recall_at_1(faces, queries, merged_r, exact[0]):.4f} after "
                    f"the merge (one training, {pq_lists(len(faces))} lists, nprobe "
                    f"{NPROBES[-1]} in each shard)")
        out.append({"benchmark": "gallery_scale", "metric": f"{kind} over {SHARDS} shards of "
                    f"{len(faces) // SHARDS:,}, merged: queries/s of one shard (baseline: "
                    "exact over all)", "value": round(rate, 1), "baseline": round(exact[2], 1),
                    "ratio": round(rate / exact[2], 2), "target": None,
                    "notes": f"{same}; shards searched one after another here (in parallel "
                             f"on shard servers); {THREADS} FAISS thread; {load()}"})
        print(common.format_row(out[-1]), flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(common.bench_main(run, __doc__, "100k faces"))
