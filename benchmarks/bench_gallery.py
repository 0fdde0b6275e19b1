"""Gallery search at scale: the approximate FAISS indexes of facenet_tf.recognition.index
against exact search (the matrix product of facenet_tf.triplets.distances), at 10k, 100k and
1M faces of 512-D pretrained FaceNet embeddings, in one run.

The faces: every lfw_dev photo aligned and embedded by the pretrained model (the held-out
protocol of experiments/protocol.py, embeddings cached by experiments.gallery_lfw_dev;
FACENET_TF_LFW_DEV_WORK names the prepared directory, default runs/lfw_dev), 10,492 faces of
4,786 people. QUERIES of them, of people with another photo, are the queries; the rest start
the gallery, and seeded face-like filler brings it to each size. A filler person is drawn
from a Gaussian with the mean and covariance of the real people's mean faces (scaled to unit
length); each of its 1 + Poisson(2) faces is that person plus the deviation of a real face
from its own person's mean (real within-person variation, not isotropic noise), scaled to
unit length. Random unit vectors in 512-D are all about 2 apart, unlike faces; mixtures of
real faces (tried first) land next to the faces they mix (median distance to the nearest
real face 0.39, against 0.92 between real faces), near-duplicates rather than new people.
The notes report how close this filler is to the real faces (nearest-neighbour distances).

Per size and index: recall@1 (the index's nearest face is exact search's, or as near), queries
per second in one batch of QUERIES and one query per call (each the best of 3 rounds; exact
search at 1M: of 2), bytes per face of the index, and seconds to build it; ratios against
exact search measured in the same run. HNSW is also searched at several efSearch (the breadth
of its search) on the same graph. At 1M only HNSW and the IVF index are built. The last row is
the gallery's whole decision at 1M (HNSW shortlist of SHORTLIST faces, people scored exactly).
The 1M gallery takes about 2 GB as float32 and each index is built once; run it alone, with
`nice`.

    nice python -m benchmarks.bench_gallery [--quick]      # --quick: 10k only
    nice python -m benchmarks.bench_gallery --sizes 1000000 --kinds_at_1m hnsw   # 1M, HNSW
"""

import os
import time

import numpy as np

from benchmarks import common
from experiments import gallery_lfw_dev
from experiments import protocol as lfw_protocol
from facenet_tf.common import io_utils
from facenet_tf.recognition import decision
from facenet_tf.recognition import index as index_lib
from facenet_tf.recognition.gallery import SHORTLIST_FACES

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000,)
KINDS = ("flat", "hnsw", "hnsw_sq8", "ivf_sq8")
# At 1M faces only these are built (each HNSW build takes many minutes on 2 shared cores;
# "flat" is a second exact search).
KINDS_AT_1M = ("hnsw", "ivf_sq8")
# HNSW search breadths measured on the same index (the library's HNSW_EF_SEARCH is one).
EF_SEARCH_SWEEP = (64, 128, 256, 512)
QUERIES = 1000
ONE_AT_A_TIME = 200
EXACT_ONE_AT_A_TIME = 50
SEED = 0
FILLER_CHUNK = 100_000
RECALL_TARGET = 0.99
SPEED_TARGET = 20.0


def lfw_faces():
    """(embeddings [N, 512], identities [N]) of every lfw_dev photo, pretrained model."""
    work = os.environ.get(lfw_protocol.LFW_WORK_ENV) or os.path.join(lfw_protocol.REPO_ROOT, "runs",
                                                        "lfw_dev")
    prepared = os.path.join(work, "protocol.json")
    params = (io_utils.read_json(prepared)["params"] if os.path.exists(prepared)
              else lfw_protocol.default_params())
    protocol = lfw_protocol.prepare_data(work, params)
    data = gallery_lfw_dev.embed_protocol(work, protocol, "pretrained")
    return data["embeddings"].astype(np.float32), data["labels"]


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def face_like_filler(real, labels, count: int, seed: int) -> np.ndarray:
    """`count` synthetic faces (see the module doc): people drawn from a Gaussian with the
    mean and covariance of the real people's (unit) mean faces, each face its person plus a
    real face's deviation from its own person's mean, scaled to unit length."""
    rng = np.random.RandomState(seed)
    names, person = np.unique(labels, return_inverse=True)
    sizes = np.bincount(person)
    means = np.zeros((len(names), real.shape[1]))
    np.add.at(means, person, real)
    means /= sizes[:, None]
    centres = _unit(means)
    mu = centres.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(centres - mu, rowvar=False)
                              + 1e-6 * np.eye(real.shape[1])).astype(np.float32)
    deviations = (real - means[person])[sizes[person] >= 2].astype(np.float32)
    out, made = [], 0
    while made < count:  # in chunks of FILLER_CHUNK faces, to bound the temporaries
        n_people = max(1, min(count - made, FILLER_CHUNK) // 3)
        people = _unit(mu + rng.randn(n_people, real.shape[1]).astype(np.float32) @ chol.T)
        faces_each = 1 + rng.poisson(2.0, n_people)
        rows = np.repeat(people, faces_each, axis=0)
        out.append(_unit(rows + deviations[rng.randint(0, len(deviations), len(rows))]))
        made += len(rows)
    return np.concatenate(out)[:count]


def _nn_distance(queries, base):
    d, _ = index_lib.FaceIndex.build(base, "exact").search(queries, 1)
    return float(np.median(d[:, 0]))


def _rate(fn, queries, one_at_a_time: int, repeats: int = 3):
    """(answers, queries/s in one batch, queries/s one per call), each rate the best of
    `repeats` rounds (the machine is shared: the fastest round is the least disturbed)."""
    batch_s, single_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        batched = fn(queries)
        batch_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for q in queries[:one_at_a_time]:
            fn(q[None])
        single_s.append(time.perf_counter() - t0)
    return batched, len(queries) / min(batch_s), one_at_a_time / min(single_s)


def run(quick: bool, sizes=None, kinds_at_1m=None) -> list:
    """The rows (benchmarks/common.py); sizes and kinds_at_1m default to SIZES (QUICK_SIZES
    with quick) and KINDS_AT_1M."""
    started = time.time()
    kinds_at_1m = KINDS_AT_1M if kinds_at_1m is None else tuple(kinds_at_1m)
    real, labels = lfw_faces()
    rng = np.random.RandomState(SEED)
    _, person, counts = np.unique(labels, return_inverse=True, return_counts=True)
    candidates = np.flatnonzero(counts[person] >= 2)
    query_rows = np.sort(rng.choice(candidates, QUERIES, replace=False))
    queries = real[query_rows]
    keep = np.ones(len(real), bool)
    keep[query_rows] = False
    base_real, base_labels = real[keep], labels[keep]
    sizes = tuple(sizes or (QUICK_SIZES if quick else SIZES))
    # One array for every size (a size is its first rows), so that 1M is held once.
    everything = np.concatenate([base_real, face_like_filler(
        base_real, base_labels, max(sizes) - len(base_real), SEED)])
    n = len(base_real)
    filler = face_like_filler(base_real, base_labels, n + 2000, SEED + 1)  # to describe it
    note_filler = (f"filler vs real: median NN distance of a real face to the other real "
                   f"faces {_nn_distance(base_real[:2000], base_real[2000:]):.3f}, of a "
                   f"filler face to the real faces {_nn_distance(filler[:2000], base_real):.3f}"
                   f", to {n - 2000:,} other filler faces "
                   f"{_nn_distance(filler[:2000], filler[2000:n]):.3f}; of a real face to "
                   f"{n - 2000:,} filler faces {_nn_distance(base_real[:2000], filler[:n]):.3f}")
    print(note_filler, flush=True)
    del filler
    rows = []
    for size in sizes:
        gallery = everything[:size]
        exact = index_lib.FaceIndex.build(gallery, "exact")
        (d_exact, r_exact), exact_batch, exact_single = _rate(
            lambda q: exact.search(q, 10), queries, EXACT_ONE_AT_A_TIME,
            repeats=2 if size >= 1_000_000 else 3)
        rows.append({"benchmark": "gallery", "metric": f"exact queries/s at {size:,} faces",
                     "value": round(exact_batch, 1), "baseline": None, "ratio": None,
                     "target": None, "notes": f"one at a time {exact_single:.1f}/s; "
                     f"{gallery.nbytes / len(gallery):.0f} bytes/face; distances."
                     "squared_l2_matrix, numpy float32 BLAS"})
        print(common.format_row(rows[-1]), flush=True)
        for kind in KINDS if size < 1_000_000 else kinds_at_1m:
            t0 = time.perf_counter()
            index = index_lib.FaceIndex.build(gallery, kind, seed=SEED)
            build_s = time.perf_counter() - t0
            sweep = EF_SEARCH_SWEEP if kind == "hnsw" else (None,)
            for ef in sweep:
                row = _index_row(index, kind, ef, gallery, queries, d_exact, exact_batch,
                                 exact_single, size)
                if ef in (None, index_lib.HNSW_EF_SEARCH):
                    row["notes"] += f"; built in {build_s:.1f} s"
                rows.append(row)
                print(common.format_row(rows[-1]), flush=True)
            if kind == "hnsw" and size == max(sizes):
                rows.append(_decision_row(index, gallery, queries, size, exact_batch))
                print(common.format_row(rows[-1]), flush=True)
            del index
    rows[0]["notes"] += f"; {note_filler}; run {time.time() - started:.0f} s"
    return rows


def _index_row(index, kind, ef, gallery, queries, d_exact, exact_batch, exact_single,
               size) -> dict:
    """One index's row: its rates, recall@1 against exact search, bytes per face. ef: the
    HNSW efSearch to search with (None: the library's own parameters)."""
    search = lambda q: index.search(q, 10, ef_search=ef)  # noqa: E731
    (d, r), batch, single = _rate(search, queries, ONE_AT_A_TIME)
    # Found: the index's first face is as near as exact search's (ties count).
    recall = float(np.mean(_true_distance(queries, gallery, r[:, 0]) <= d_exact[:, 0] + 1e-5))
    default = ef in (None, index_lib.HNSW_EF_SEARCH)
    label = kind if ef is None else f"{kind} efSearch {ef}"
    return {
        "benchmark": "gallery", "metric": f"{label} queries/s at {size:,} faces",
        "value": round(batch, 1), "baseline": round(exact_batch, 1),
        "ratio": round(batch / exact_batch, 2),
        "target": f">= {SPEED_TARGET:g}x, recall@1 >= {RECALL_TARGET}"
                  if size == 1_000_000 and kind == "hnsw" and default else None,
        "notes": f"recall@1 {recall:.4f}; one at a time {single:.0f}/s "
                 f"({common.fmt(single / exact_single)}x exact's {exact_single:.1f}/s); "
                 f"{index.bytes_per_face():.0f} bytes/face" + _params(kind, size, ef)}


def _true_distance(queries, gallery, rows):
    return np.sum((queries - gallery[rows]) ** 2, axis=1)


def _params(kind, size, ef=None):
    if kind.startswith("hnsw"):
        graph = (f"; M {index_lib.HNSW_M}, efConstruction {index_lib.HNSW_EF_CONSTRUCTION}, "
                 f"efSearch {ef or index_lib.HNSW_EF_SEARCH}")
        if kind == "hnsw":
            graph += (f"; over PCA to {index_lib.HNSW_PCA_DIM}-D, {index_lib.HNSW_REFINE_FACTOR}"
                      " x k re-ranked exactly")
        return graph
    if kind == "ivf_sq8":
        return f"; {index_lib.ivf_lists(size)} lists, nprobe {index_lib.IVF_NPROBE}"
    return ""


def _decision_row(index, gallery, queries, size, exact_batch):
    """The gallery's decision (facenet_tf.recognition.gallery): shortlist + exact person
    scores, faces grouped 3 to a person."""
    people = decision.People.from_labels(np.arange(len(gallery)) // 3, gallery)

    def decide(q):
        _, rows = index.search(q, SHORTLIST_FACES)
        return decision.candidate_distances(q, gallery, people, rows, decision.DEFAULT_RULE)

    _, batch, single = _rate(decide, queries, ONE_AT_A_TIME)
    rule = decision.DEFAULT_RULE
    return {"benchmark": "gallery", "metric": f"identify (hnsw shortlist + {rule}) "
            f"queries/s at {size:,} faces", "value": round(batch, 1),
            "baseline": round(exact_batch, 1), "ratio": round(batch / exact_batch, 2),
            "target": None, "notes": f"one at a time {single:.0f}/s; {SHORTLIST_FACES} faces "
            "shortlisted, their people scored exactly (3 faces a person)"}


if __name__ == "__main__":
    raise SystemExit(common.bench_main(run, __doc__, "10k faces only", options={
        "sizes": {"type": lambda s: [int(x) for x in s.split(",")],
                  "help": "gallery sizes, e.g. 1000000 (default: 10k, 100k and 1M)"},
        "kinds_at_1m": {"type": lambda s: s.split(","),
                        "help": f"indexes built at 1M faces (default: {','.join(KINDS_AT_1M)})"},
    }))
