"""The photo-indexing job: every face of every photo in Parquet tables any tool reads, every
other photo listed with its reason, incremental re-runs that embed only new or changed photos
and equal a full rebuild, and searches that equal a brute-force loop."""

import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facenet_tf.common import io_utils
from facenet_tf.detection import FaceDetector
from facenet_tf.detection.faces import find_faces
from facenet_tf.evaluation import visualize
from facenet_tf.inference.batch_embed import align_config_for
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.pipelines import index_faces as job
from facenet_tf.recognition import collection as collection_lib
from tests.conftest import REPO_ROOT
from tests.pipelines._collection import assert_same_shards, orl_face, write_collection

RUN_SPECIFIC_FIELDS = {"run_info", "elapsed_seconds", "index_seconds", "beam_runner",
                       "beam_counters", "generation", "data_dir", "num_embedded",
                       "num_reused", "num_removed", "removed", "reuse"}


def read_rows(index_dir: str, table: str) -> list:
    """Every row of one table, read with plain pyarrow (no facenet_tf code), sorted."""
    manifest = io_utils.read_manifest(index_dir)
    data_dir = os.path.join(index_dir, manifest["data_dir"])
    rows = []
    for name in manifest["shards"][table]:
        rows += pq.read_table(os.path.join(data_dir, name)).to_pylist()
    return sorted(rows, key=lambda r: (r["photo"], r.get("face", 0)))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("photos") / "collection")


@pytest.fixture(scope="module")
def indexed(photos, tiny_model_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("index") / "index")
    manifest = job.index_faces(job.IndexJobConfig(photos, tiny_model_path, out, batch_size=4,
                                                  num_shards=3))
    return out, manifest


def test_every_face_is_embedded_and_every_other_photo_listed(photos, indexed,
                                                             tiny_model_path):
    out, manifest = indexed
    assert manifest["num_photos"] == 13
    assert manifest["no_face"] == ["misc/noise.png"]
    assert [u["photo"] for u in manifest["unreadable"]] == ["misc/broken.jpg",
                                                            "misc/notes.txt"]
    assert all(u["reason"] for u in manifest["unreadable"])
    # The oracle: each photo's faces found, aligned and embedded one photo at a time.
    embedder = load_embedder(tiny_model_path)
    detector = FaceDetector()
    align = align_config_for(embedder)
    expected = []
    for rel in sorted(os.path.relpath(os.path.join(d, f), photos)
                      for d, _, files in os.walk(photos) for f in files):
        [faces] = find_faces(detector, [os.path.join(photos, rel)], align, keep="all")
        if faces.error or not faces.kept:
            continue
        emb = embedder.embed_faces(faces.crops)
        expected += [(rel, k, faces.detections.boxes[k], emb[k], k == faces.main)
                     for k in faces.kept]
    rows = read_rows(out, "faces")
    assert [(r["photo"], r["face"]) for r in rows] == [(e[0], e[1]) for e in expected]
    assert [r["photo"] for r in rows].count("misc/two.png") == 2
    for row, (_, _, box, emb, is_main) in zip(rows, expected):
        np.testing.assert_allclose(row["box"], box, atol=1e-3)
        np.testing.assert_allclose(row["embedding"], emb, atol=1e-5)
        assert row["is_main"] == is_main
        assert row["model_fingerprint"] == embedder.fingerprint
    with open(os.path.join(photos, "p1", "2.png"), "rb") as f:
        digest = job.sha256_hex(f.read())
    assert {r["photo_sha256"] for r in rows if r["photo"] == "p1/2.png"} == {digest}
    statuses = {r["photo"]: r["status"] for r in read_rows(out, "photos")}
    assert len(statuses) == 13 and statuses["misc/noise.png"] == "no_face"
    assert manifest["search_index"]["num_vectors"] == len(rows) == manifest["num_faces"]


def test_a_rerun_embeds_only_new_or_changed_photos_and_equals_a_full_rebuild(
        photos, indexed, tiny_model_path, tmp_path, monkeypatch):
    out, _ = indexed
    grown = str(tmp_path / "photos")
    shutil.copytree(photos, grown)
    index = str(tmp_path / "index")
    shutil.copytree(out, index)
    os.makedirs(os.path.join(grown, "p4"))
    for k in (2, 3):  # two new photos
        Image.fromarray(orl_face(4, k)).save(os.path.join(grown, "p4", f"{k}.png"))
    Image.fromarray(orl_face(3, 5)).save(os.path.join(grown, "p3", "2.png"))  # changed
    os.remove(os.path.join(grown, "p2", "3.png"))  # deleted
    detected = []

    def recording(detector, images, names, map_fn):
        detected.extend(names)
        return find_faces_iter(detector, images, names, map_fn)

    find_faces_iter = job.iter_detections
    monkeypatch.setattr(job, "iter_detections", recording)  # the in-process runner sees it
    manifest = job.index_faces(job.IndexJobConfig(grown, tiny_model_path, index,
                                                  batch_size=4, num_shards=3))
    assert sorted(detected) == ["p3/2.png", "p4/2.png", "p4/3.png"]
    assert (manifest["num_embedded"], manifest["num_reused"]) == (3, 11)
    assert manifest["removed"] == ["p2/3.png"]
    assert sorted(os.listdir(index)) == ["data-00002", "manifest.json"]

    rebuilt = str(tmp_path / "rebuilt")
    full = job.index_faces(job.IndexJobConfig(grown, tiny_model_path, rebuilt,
                                              batch_size=4, num_shards=3))
    assert full["num_embedded"] == 14
    drop = lambda m: {k: v for k, v in m.items() if k not in RUN_SPECIFIC_FIELDS}  # noqa: E731
    assert drop(manifest) == drop(full)
    for table in ("faces", "photos"):
        incremental, fresh = read_rows(index, table), read_rows(rebuilt, table)
        assert [r["photo"] for r in incremental] == [r["photo"] for r in fresh]
        for a, b in zip(incremental, fresh):
            for key in a:
                assert a[key] == b[key], (key, a["photo"])
    # The deleted photo is no longer found, even by its own face.
    old = collection_lib.open_collection(out)
    row = [r for r in read_rows(out, "faces") if r["photo"] == "p2/3.png"][0]
    found = collection_lib.nearest_photos(collection_lib.open_collection(index),
                                          row["embedding"], top_k=20)
    assert "p2/3.png" in [r["photo"] for r in collection_lib.nearest_photos(
        old, row["embedding"], top_k=20)]
    assert "p2/3.png" not in [r["photo"] for r in found]


def brute_force(rows, query, top_k, threshold):
    """Photos ranked by their nearest face, a plain loop over every face row."""
    best = {}
    for position, row in enumerate(rows):
        distance = sum((float(a) - float(b)) ** 2 for a, b in zip(row["embedding"], query))
        if threshold is not None and distance > threshold:
            continue
        if row["photo"] not in best or (distance, position) < best[row["photo"]]:
            best[row["photo"]] = (distance, position)
    ranked = sorted(best.items(), key=lambda item: item[1])[:top_k]
    return [(photo, rows[position]["face"], distance) for photo, (distance, position) in ranked]


def index_order_rows(index_dir: str) -> list:
    """Face rows in the order the search index holds them (shard by shard)."""
    manifest = io_utils.read_manifest(index_dir)
    data_dir = os.path.join(index_dir, manifest["data_dir"])
    return [row for name in manifest["shards"]["faces"]
            for row in pq.read_table(os.path.join(data_dir, name)).to_pylist()]


@pytest.mark.parametrize("top_k,threshold", [(3, None), (50, None), (50, 0.3)])
def test_search_equals_brute_force(indexed, top_k, threshold):
    out, _ = indexed
    rows = index_order_rows(out)
    collection = collection_lib.open_collection(out)
    rng = np.random.RandomState(1)
    queries = [rows[0]["embedding"], rows[5]["embedding"]] + [
        q / np.linalg.norm(q) for q in rng.normal(size=(3, len(rows[0]["embedding"])))]
    for query in queries:
        got = collection_lib.nearest_photos(collection, query, top_k, threshold)
        want = brute_force(rows, query, top_k, threshold)
        assert [(r["photo"], r["face"]) for r in got] == [(p, f) for p, f, _ in want]
        assert [r["rank"] for r in got] == list(range(1, len(want) + 1))
        for r, (_, _, distance) in zip(got, want):
            assert math.isclose(r["distance"], distance, abs_tol=1e-3)


def test_a_photo_search_finds_the_person_and_draws_the_matches(photos, indexed,
                                                               tiny_model_path, tmp_path):
    out, _ = indexed
    collection = collection_lib.open_collection(out)
    embedder = load_embedder(tiny_model_path)
    query = os.path.join(photos, "p1", "3.png")
    result = collection_lib.search_photo(collection, embedder, FaceDetector(), query,
                                         top_k=5, threshold=math.inf)
    [faces] = find_faces(FaceDetector(), [query], collection.align, keep="main")
    want = brute_force(index_order_rows(out), embedder.embed_faces(faces.crops)[0], 5, None)
    assert [r["photo"] for r in result["results"]] == [p for p, _, _ in want]
    assert result["results"][0]["photo"] == "p1/3.png"  # the query's own photo
    written = collection_lib.annotate(collection, result, str(tmp_path / "annotated"))
    assert len(written) == 6 and os.path.basename(written[1]) == "001_p1__3.jpg"
    picture = np.asarray(Image.open(written[1]))
    scale = visualize.ANNOTATE_MIN_SIDE / 92  # small photos are drawn enlarged
    assert picture.shape[:2] == (round(112 * scale), round(92 * scale))
    x1, y1, x2, y2 = (int(round(v * scale)) for v in result["results"][0]["box"])
    assert x1 > 0
    rows = picture[y1 + 60:min(y2, picture.shape[0]) - 10].astype(int)
    greenness = [np.median(rows[:, x, 1] - rows[:, x, 0]) for x in range(x1 - 3, x1 + 4)]
    assert max(greenness) > 80  # the box's left edge, in green
    with pytest.raises(collection_lib.NoFaceError, match="noise.png"):
        collection_lib.search_photo(collection, embedder, FaceDetector(),
                                    os.path.join(photos, "misc", "noise.png"))


@pytest.mark.slow
def test_the_commands_on_two_worker_processes(photos, indexed, tiny_model_path, tmp_path):
    """beam_jobs.index_faces with 2 worker processes writes the in-process shards byte for
    byte; facenet_tf.search prints the ranked photos; a query without a face is one line."""
    out, manifest = indexed
    multi = str(tmp_path / "multi")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "beam_jobs.index_faces", f"--input_dir={photos}",
         f"--model={tiny_model_path}", f"--output_dir={multi}", "--batch_size=4",
         "--num_shards=3", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no face: 1, unreadable: 2" in result.stdout
    assert_same_shards(out, multi)
    search = subprocess.run(
        [sys.executable, "-m", "facenet_tf.search", f"--index={multi}",
         f"--query={os.path.join(photos, 'p2', '4.png')}", "--top_k=2", "--all"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert search.returncode == 0, search.stderr[-3000:]
    lines = search.stdout.strip().splitlines()
    assert lines[1].startswith("2 photo(s) of 13 nearest")
    assert lines[2].split()[:3] == ["1", "0.000", "p2/4.png"]
    no_face = subprocess.run(
        [sys.executable, "-m", "facenet_tf.search", f"--index={multi}",
         f"--query={os.path.join(photos, 'misc', 'noise.png')}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert no_face.returncode == 1
    assert no_face.stderr.strip().splitlines()[-1].endswith("noise.png: no face found")
