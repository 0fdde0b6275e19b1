"""The identity decision and the search behind it, against plain loops written here: every
rule, the gallery's top-k answers, and the FAISS indexes against exact search."""

import logging
import os

import faiss
import numpy as np
import pytest

from facenet_tf.recognition import decision, index
from facenet_tf.recognition import gallery as gallery_lib
from tests.recognition._person_oracle import person_distance_by_loop


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _people_like(num_people, faces_per_person, dim, seed, spread=0.35):
    """Face-like clusters: each person a random direction, each face that plus noise."""
    rng = np.random.RandomState(seed)
    centres = _unit(rng.randn(num_people, dim))
    labels = np.repeat([f"p{i:03d}" for i in range(num_people)], faces_per_person)
    faces = _unit(np.repeat(centres, faces_per_person, axis=0)
                  + spread * rng.randn(num_people * faces_per_person, dim) / np.sqrt(dim) * 3)
    return faces, labels, centres


@pytest.mark.parametrize("rule", decision.RULES)
def test_person_distances_equal_a_loop_over_people(rule):
    rng = np.random.RandomState(1)
    faces = _unit(rng.randn(60, 8))
    labels = rng.choice(["ann", "bob", "cy", "dee", "eve"], 60)
    labels[:2] = "solo"  # a one-face person (index 0) ...
    faces[1] = faces[0]
    labels[1] = "twin"   # ... and two people with an identical face
    queries = _unit(rng.randn(9, 8))
    queries[0] = faces[0]
    people = decision.People.from_labels(labels, faces)
    got = decision.person_distances(queries, faces, people, rule)
    for j, name in enumerate(people.names):
        for i, q in enumerate(queries):
            want = person_distance_by_loop(q, faces[labels == name], rule)
            assert got[i, j] == pytest.approx(want, abs=1e-5)
    # The shortlist path scores the same people the same way.
    every_face = np.tile(np.arange(len(faces)), (len(queries), 1))
    ids, dist = decision.candidate_distances(queries, faces, people, every_face, rule)
    top_ids, top_dist = decision.top_people(got, len(people))
    np.testing.assert_allclose(dist, top_dist, atol=1e-5)
    assert (np.sort(ids, axis=1) == np.sort(top_ids, axis=1)).all()


def test_gallery_answers_equal_a_brute_force_loop(tmp_path):
    faces, labels, _ = _people_like(12, 3, 16, seed=2)
    rng = np.random.RandomState(3)
    faces_per = {name: faces[labels == name] for name in np.unique(labels)}
    g = gallery_lib.open_gallery(str(tmp_path / "g"), _FakeModel(16), create=True)
    for name in faces_per:  # unequal numbers of faces per person
        keep = faces_per[name][:1 + rng.randint(3)]
        g.add(name, keep)
        faces_per[name] = keep
    queries = _unit(faces[::5] + 0.2 * rng.randn(len(faces[::5]), 16))
    threshold = 0.9
    for rule in decision.RULES:
        ids, dist = g.rank_people(queries, 4, rule, "exact")
        for i, q in enumerate(queries):
            scores = sorted((person_distance_by_loop(q, f, rule), name)
                            for name, f in faces_per.items())
            assert [str(g._people.names[p]) for p in ids[i]] == [n for _, n in scores[:4]]
            np.testing.assert_allclose(dist[i], [s for s, _ in scores[:4]], atol=1e-5)
    answers = g.identify(queries, top_k=3, threshold=threshold)
    for q, answer in zip(queries, answers):
        scores = sorted((person_distance_by_loop(q, f, g.calibration.rule), n)
                        for n, f in faces_per.items())
        assert answer["candidates"] == [
            {"identity": n, "distance": pytest.approx(s, abs=1e-5)} for s, n in scores[:3]]
        assert answer["identity"] == (scores[0][1] if scores[0][0] <= threshold else None)


class _FakeModel:
    """What a gallery reads of a model to be created: fingerprint, source, dimension,
    threshold (no embedding happens in these tests)."""

    def __init__(self, dim, fingerprint="f" * 16):
        self.embedding_dim, self.fingerprint = dim, fingerprint
        self.source, self.threshold = "in-memory", 1.0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "hnsw_sq8", "ivf_sq8"])
def test_an_index_finds_the_exact_nearest_face(kind):
    faces, _, centres = _people_like(400, 5, 64, seed=4)
    rng = np.random.RandomState(5)
    queries = _unit(centres[rng.choice(len(centres), 200)] + 0.1 * rng.randn(200, 64))
    exact = index.FaceIndex.build(faces, "exact")
    approx = index.FaceIndex.build(faces, kind)
    d_exact, r_exact = exact.search(queries, 10)
    # The exact index is the loop's answer.
    loop = np.array([np.argmin(np.sum((faces - q) ** 2, axis=1)) for q in queries])
    assert (r_exact[:, 0] == loop).all()
    d, r = approx.search(queries, 10)
    recall_at_1 = np.mean(r[:, 0] == r_exact[:, 0])
    assert recall_at_1 >= (1.0 if kind == "flat" else 0.95), recall_at_1
    assert (np.diff(d, axis=1) >= -1e-6).all()  # nearest first
    hit = r[:, 0] == r_exact[:, 0]
    np.testing.assert_allclose(d[hit, 0], d_exact[hit, 0], atol=0.02 if "sq8" in kind else 1e-4)
    again = index.FaceIndex.from_bytes(kind, approx.to_bytes(), faces)
    assert (again.search(queries, 10)[1] == r).all()


def test_hnsw_over_projected_faces_reranks_by_the_full_distance():
    """Above HNSW_PCA_DIM dimensions "hnsw" searches a PCA projection and re-ranks: its
    answers are still exact search's, with each distance the full vectors' (a loop here)."""
    dim = 2 * index.HNSW_PCA_DIM
    faces, _, centres = _people_like(300, 4, dim, seed=6)
    rng = np.random.RandomState(7)
    queries = _unit(centres[rng.choice(len(centres), 100)] + 0.1 * rng.randn(100, dim))
    approx = index.FaceIndex.build(faces, "hnsw")
    assert isinstance(approx.faiss_index, faiss.IndexRefine)  # projected, then re-ranked
    d, r = approx.search(queries, 5)
    loop = np.array([[np.sum((faces[row] - q) ** 2) for row in rows]
                     for q, rows in zip(queries, r)])
    np.testing.assert_allclose(d, loop, rtol=1e-5, atol=1e-5)
    nearest = np.array([np.argmin(np.sum((faces - q) ** 2, axis=1)) for q in queries])
    assert np.mean(r[:, 0] == nearest) >= 0.95
    wider = approx.search(queries, 5, ef_search=4 * index.HNSW_EF_SEARCH)[1]
    assert np.mean(wider[:, 0] == nearest) >= np.mean(r[:, 0] == nearest)


def test_fewer_faces_than_asked_are_padded():
    faces = _unit(np.eye(3, 8) + 0.01)
    for kind in ("exact", "flat", "hnsw"):
        d, r = index.FaceIndex.build(faces, kind).search(faces[:1], 5)
        assert list(r[0, 3:]) == [-1, -1] and np.isinf(d[0, 3:]).all()
        assert sorted(r[0, :3]) == [0, 1, 2] and r[0, 0] == 0


def test_the_approximate_gallery_names_as_the_exact_one(tmp_path):
    faces, labels, centres = _people_like(300, 4, 64, seed=6)
    g = gallery_lib.open_gallery(str(tmp_path / "g"), _FakeModel(64), create=True)
    for name in np.unique(labels):
        g.add(name, faces[labels == name])
    rng = np.random.RandomState(7)
    queries = _unit(centres[rng.choice(300, 150)] + 0.1 * rng.randn(150, 64))
    exact = g.rank_people(queries, 5, "top2_mean", "exact")
    approx = g.rank_people(queries, 5, "top2_mean", "hnsw")
    assert np.mean(exact[0][:, 0] == approx[0][:, 0]) >= 0.98
    same = exact[0][:, 0] == approx[0][:, 0]
    np.testing.assert_allclose(exact[1][same, 0], approx[1][same, 0], atol=1e-5)


def test_index_file_is_reused_rebuilt_when_stale_and_when_corrupt(tmp_path, caplog):
    faces, labels, _ = _people_like(50, 2, 16, seed=8)
    path = str(tmp_path / "g")
    g = gallery_lib.open_gallery(path, _FakeModel(16), create=True)
    g.add("a", faces[:50])
    g.add("b", faces[50:])
    g.search_index("hnsw")
    files = [n for n in os.listdir(path) if n.startswith("index-")]
    assert files == [f"index-hnsw-{g.index_key}.faiss"]
    # Reopened: read from the file (same answers, no rebuild).
    again = gallery_lib.open_gallery(path)
    q = faces[:7] + 0.01
    assert (again.rank_people(q, 2, "nearest", "hnsw")[0]
            == g.rank_people(q, 2, "nearest", "hnsw")[0]).all()
    # Stale: a new face changes the key; the old file is removed, the new face is found.
    new_face = _unit(np.ones((1, 16)))
    again.add("c", new_face)
    assert not os.path.exists(os.path.join(path, files[0]))
    ids, _ = again.rank_people(new_face, 1, "nearest", "hnsw")
    assert again._people.names[ids[0, 0]] == "c"
    # Corrupt: rebuilt from the gallery with a warning naming the file.
    index_file = os.path.join(path, f"index-hnsw-{again.index_key}.faiss")
    with open(index_file, "wb") as f:
        f.write(b"not an index")
    reopened = gallery_lib.open_gallery(path)
    with caplog.at_level(logging.WARNING):
        ids, _ = reopened.rank_people(new_face, 1, "nearest", "hnsw")
    assert reopened._people.names[ids[0, 0]] == "c"
    assert any(index_file in r.getMessage() and "rebuilding" in r.getMessage()
               for r in caplog.records)
    with open(index_file, "rb") as f:
        assert f.read(4) != b"not "  # written again, whole
