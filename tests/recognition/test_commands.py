"""`python -m facenet_tf.enroll` and `.identify` on face crops (--nodetect_faces) with a tiny
model: the JSON a user gets, the annotated copies, and bad input as one line that loses
nothing."""

import concurrent.futures
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import gallery as gallery_lib
from facenet_tf.serving.saved_model import export_saved_model
from facenet_tf.triplets import distances
from tests.conftest import REPO_ROOT, make_image_folder, make_tiny_embedding_model


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _errors(result):
    return [line for line in result.stderr.splitlines() if "error:" in line]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = export_saved_model(make_tiny_embedding_model((32, 32, 3)), str(root / "tiny"),
                               PreprocessConfig((32, 32)), threshold=0.05)
    other = export_saved_model(make_tiny_embedding_model((32, 32, 3), seed=1),
                               str(root / "other"), PreprocessConfig((32, 32)))
    faces = make_image_folder(root / "faces", num_identities=3, images_per_identity=3,
                              size=(32, 32))
    known = root / "known"
    for person in ("person_00", "person_01", "person_02"):
        os.makedirs(known / person)
        for name in ("img_000.png", "img_001.png"):
            os.link(os.path.join(faces, person, name), known / person / name)
    os.makedirs(known / "ghost")
    (known / "ghost" / "a.jpg").write_bytes(b"no image here")
    probes = root / "probes"
    os.makedirs(probes)
    for person in ("person_00", "person_02"):
        os.link(os.path.join(faces, person, "img_002.png"), probes / f"{person}.png")
    stranger = np.random.RandomState(9).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    Image.fromarray(stranger).save(probes / "stranger.png")
    os.makedirs(root / "empty")
    return {"root": root, "model": model, "other": other, "known": str(known),
            "probes": str(probes), "gallery": str(root / "g")}


def test_enroll_then_identify(setup):
    s = setup
    enrolled = _run("facenet_tf.enroll", f"--model={s['model']}", f"--gallery={s['gallery']}",
                    f"--input={s['known']}", "--nodetect_faces")
    assert enrolled.returncode == 0, enrolled.stderr[-3000:]
    # The person without a usable face: listed with the reason, the others enrolled.
    assert os.path.join("ghost", "a.jpg") + ": unreadable image: not an image" in enrolled.stderr
    assert "person ghost: no usable face" in enrolled.stderr
    assert "3 people, 6 faces" in enrolled.stdout

    # A corrupt index file beside the gallery is rebuilt, with a warning.
    gallery = gallery_lib.open_gallery(s["gallery"])
    index_file = os.path.join(s["gallery"], f"index-hnsw-{gallery.index_key}.faiss")
    with open(index_file, "wb") as f:
        f.write(b"garbage")
    out = str(s["root"] / "results.json")
    annotated = str(s["root"] / "annotated")
    result = _run("facenet_tf.identify", f"--gallery={s['gallery']}", f"--input={s['probes']}",
                  "--nodetect_faces", "--top_k=2", f"--output={out}", f"--annotate={annotated}",
                  "--index=hnsw")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{index_file}: not a readable FAISS index" in result.stderr
    with open(out) as f:
        faces = json.load(f)
    assert [os.path.basename(face["photo"]) for face in faces] == \
        ["person_00.png", "person_02.png", "stranger.png"]
    embedder = load_embedder(s["model"])
    for face in faces:
        assert set(face) == {"photo", "face", "box", "score", "identity", "distance",
                             "confidence", "candidates"}
        assert face["box"] == [0.0, 0.0, 32.0, 32.0]
        assert face["confidence"] is None and face["score"] is None
        # Oracle: the nearest person by the default rule (the distance to the person's mean
        # face, scaled to unit length), from the enrolled files.
        q = embedder.embed_encoded([open(face["photo"], "rb").read()])
        scores = []
        for person in ("person_00", "person_01", "person_02"):
            files = [os.path.join(s["known"], person, n) for n in ("img_000.png",
                                                                    "img_001.png")]
            mean = embedder.embed_encoded([open(p, "rb").read() for p in files]).sum(axis=0)
            scores.append((float(distances.squared_l2(q, mean / np.linalg.norm(mean))[0]),
                           person))
        scores.sort()
        assert [c["identity"] for c in face["candidates"]] == [n for _, n in scores[:2]]
        assert face["distance"] == pytest.approx(scores[0][0], abs=1e-5)
        assert face["identity"] == (scores[0][1] if scores[0][0] <= 0.05 else None)
    assert sorted(os.listdir(annotated)) == ["person_00.png", "person_02.png", "stranger.png"]
    assert Image.open(os.path.join(annotated, "stranger.png")).size == (480, 480)
    assert os.path.exists(index_file) and open(index_file, "rb").read(7) != b"garbage"


def test_bad_input_is_one_line_and_loses_nothing(setup):
    s = setup
    s = dict(s, gallery=str(s["root"] / "g2"))
    gallery = gallery_lib.open_gallery(s["gallery"], load_embedder(s["model"]), create=True)
    gallery.add("kept", np.eye(1, 8, dtype=np.float32))
    before = sorted(os.listdir(s["gallery"]))
    cases = {
        "missing gallery": (["facenet_tf.identify", f"--gallery={s['root']}/nowhere",
                             f"--input={s['probes']}"], f"{s['root']}/nowhere: no such"),
        "another model": (["facenet_tf.identify", f"--gallery={s['gallery']}",
                           f"--input={s['probes']}", f"--model={s['other']}",
                           "--nodetect_faces"], "has fingerprint"),
        "empty folder": (["facenet_tf.enroll", f"--gallery={s['gallery']}",
                          f"--input={s['root']}/empty"], f"{s['root']}/empty: no person "
                                                         "folders"),
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(cases, pool.map(lambda c: _run(*c[0]), cases.values())))
    for name, result in results.items():
        errors = _errors(result)
        assert result.returncode == 1 and len(errors) == 1, (name, result.stderr[-2000:])
        assert cases[name][1] in errors[0], (name, errors)
        assert "Traceback" not in result.stderr
    assert sorted(os.listdir(s["gallery"])) == before
    assert gallery_lib.open_gallery(s["gallery"]).people() == {"kept": 1}
