"""The gallery as a store: incremental enrolment (only new or changed photos embedded, the same
gallery as one enrolment of everything), removal, the model check, and kill -9 during an
enrolment leaving the previous version whole."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import calibration as calibration_lib
from facenet_tf.recognition import gallery as gallery_lib
from facenet_tf.serving.saved_model import export_saved_model
from tests.conftest import REPO_ROOT, make_image_folder, make_tiny_embedding_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return export_saved_model(make_tiny_embedding_model((32, 32, 3)), str(root / "tiny"),
                              PreprocessConfig((32, 32)))


@pytest.fixture(scope="module")
def embedder(tiny_model):
    return load_embedder(tiny_model)


def _counting(embedder):
    """The embedder, counting the images it embeds (in .embedded)."""
    embedder.embedded = 0
    original = embedder.embed_pixels

    def embed_pixels(pixels, flip=False):
        embedder.embedded += len(pixels)
        return original(pixels, flip)

    embedder.embed_pixels = embed_pixels
    return embedder


def _write_png(path, seed):
    pixels = np.random.RandomState(seed).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    with open(path, "wb") as f:
        f.write(tf.io.encode_png(pixels).numpy())


def _content(gallery):
    """The gallery's faces as a sorted list (independent of segment layout)."""
    return sorted((f["identity"], f["photo"], f["sha256"],
                   tuple(np.round(e, 5))) for f, e in zip(gallery.faces(), gallery.embeddings))


def test_enrolment_is_incremental_and_equals_one_enrolment_of_everything(tmp_path, tiny_model):
    embedder = _counting(load_embedder(tiny_model))
    known = make_image_folder(tmp_path / "known", num_identities=3, images_per_identity=2,
                              size=(32, 32))
    g = gallery_lib.open_gallery(str(tmp_path / "g"), embedder, create=True)
    first = g.enroll_photos(embedder, None, gallery_lib.people_in_folder(known))
    assert (first["new"], first["faces_enrolled"], embedder.embedded) == (6, 6, 6)

    # The folder grows: a new person and a new photo of an old one; one photo changes.
    os.makedirs(os.path.join(known, "person_09"))
    _write_png(os.path.join(known, "person_09", "a.png"), seed=90)
    _write_png(os.path.join(known, "person_00", "new.png"), seed=91)
    changed = os.path.join(known, "person_01", "img_000.png")
    _write_png(changed, seed=92)
    embedder.embedded = 0
    second = g.enroll_photos(embedder, None, gallery_lib.people_in_folder(known))
    assert (second["new"], second["changed"], second["unchanged"]) == (2, 1, 5)
    assert embedder.embedded == 3  # the new and the changed photos only
    embedder.embedded = 0
    third = gallery_lib.open_gallery(g.path, embedder).enroll_photos(
        embedder, None, gallery_lib.people_in_folder(known))
    assert (third["new"], third["changed"], third["unchanged"], embedder.embedded) == \
        (0, 0, 8, 0)

    once = gallery_lib.open_gallery(str(tmp_path / "once"), embedder, create=True)
    once.enroll_photos(embedder, None, gallery_lib.people_in_folder(known))
    reopened = gallery_lib.open_gallery(g.path, embedder)
    assert _content(reopened) == _content(once)
    assert reopened.people() == {"person_00": 3, "person_01": 2, "person_02": 2,
                                 "person_09": 1}
    # The changed photo's face is its new content's.
    row = [i for i, f in enumerate(reopened.faces()) if f["photo"] == os.path.abspath(changed)]
    assert len(row) == 1
    fresh = load_embedder(tiny_model).embed_encoded([open(changed, "rb").read()])
    np.testing.assert_allclose(reopened.embeddings[row[0]], fresh[0], atol=1e-5)


def test_unusable_photos_are_recorded_not_retried_and_a_person_can_be_removed(tmp_path,
                                                                              embedder):
    known = make_image_folder(tmp_path / "known", num_identities=2, images_per_identity=2,
                              size=(32, 32))
    broken = os.path.join(known, "nobody")
    os.makedirs(broken)
    with open(os.path.join(broken, "x.jpg"), "wb") as f:
        f.write(b"not an image")
    g = gallery_lib.open_gallery(str(tmp_path / "g"), embedder, create=True)
    report = g.enroll_photos(embedder, None, gallery_lib.people_in_folder(known))
    assert report["people_without_faces"] == ["nobody"]
    assert [(p["identity"], p["status"]) for p in report["problems"]] == \
        [("nobody", "unreadable")]
    assert [p["photo"] for p in g.problems()] == [os.path.join(broken, "x.jpg")]
    assert g.remove("person_00") == 2
    assert g.people() == {"person_01": 2}
    with pytest.raises(gallery_lib.GalleryError, match="no person named 'zed'"):
        g.remove("zed")
    reopened = gallery_lib.open_gallery(g.path)
    assert reopened.people() == {"person_01": 2} and reopened.version == g.version
    # Only the segment files the pointer lists are left.
    names = sorted(os.listdir(g.path))
    assert names == sorted(["gallery.json"] + reopened._pointer["segments"])


def test_another_model_is_refused_and_bad_galleries_are_named(tmp_path, embedder):
    g = gallery_lib.open_gallery(str(tmp_path / "g"), embedder, create=True)
    other = export_saved_model(make_tiny_embedding_model((32, 32, 3), seed=1),
                               str(tmp_path / "other"), PreprocessConfig((32, 32)))
    with pytest.raises(gallery_lib.GalleryError, match=f"made with model {g.fingerprint}.*"
                       "fingerprint"):
        gallery_lib.open_gallery(g.path, load_embedder(other))
    with pytest.raises(FileNotFoundError, match="no_such: no such directory"):
        gallery_lib.open_gallery(str(tmp_path / "no_such"))
    os.makedirs(tmp_path / "photos")
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(gallery_lib.GalleryError, match="exists and is not a gallery"):
        gallery_lib.open_gallery(str(tmp_path / "photos"), embedder, create=True)
    (tmp_path / "g" / "gallery.json").write_text("{ not json")
    with pytest.raises(gallery_lib.GalleryError, match="unreadable gallery"):
        gallery_lib.open_gallery(g.path)


def test_calibration_is_the_gallerys_own_else_the_models_threshold_with_a_note(tmp_path,
                                                                             embedder):
    g = gallery_lib.open_gallery(str(tmp_path / "g"), embedder, create=True)
    assert not g.calibration.calibrated
    assert g.calibration.threshold == embedder.threshold
    assert "no gallery calibration" in g.calibration.note
    fitted = calibration_lib.Calibration(embedder.fingerprint, "nearest", 0.7, 5.0, -8.0)
    g.set_calibration(fitted)
    assert gallery_lib.open_gallery(g.path).calibration == fitted
    with pytest.raises(gallery_lib.GalleryError, match="cannot serve"):
        g.set_calibration(calibration_lib.Calibration("0" * 16, "nearest", 0.7))
    g.add("a", embedder.embed_encoded([tf.io.encode_png(np.zeros((32, 32, 3), np.uint8))
                                       .numpy()]))
    answer = g.identify(g.embeddings, top_k=1)[0]
    assert answer["identity"] == "a"
    assert answer["confidence"] == pytest.approx(1 / (1 + np.exp(-(5.0 - 8.0 * answer[
        "distance"]))))


@pytest.mark.integration
def test_kill_9_during_enrol_leaves_the_previous_gallery_usable(tmp_path, tiny_model,
                                                              embedder):
    known = make_image_folder(tmp_path / "known", num_identities=2, images_per_identity=2,
                              size=(32, 32))
    path = str(tmp_path / "g")
    g = gallery_lib.open_gallery(path, embedder, create=True)
    g.enroll_photos(embedder, None, gallery_lib.people_in_folder(known))
    before = (g.version, _content(g), sorted(os.listdir(path)))
    make_image_folder(tmp_path / "more", num_identities=3, images_per_identity=2,
                      size=(32, 32), seed=5)
    os.rename(tmp_path / "more" / "person_02", os.path.join(known, "person_02"))

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get(
        "PYTHONPATH", "")]), TF_CPP_MIN_LOG_LEVEL="3",
        **{gallery_lib.PUBLISH_DELAY_ENV: "120"})
    proc = subprocess.Popen([sys.executable, "-m", "facenet_tf.enroll", f"--gallery={path}",
                             f"--input={known}", "--nodetect_faces"], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        written = []
        while time.time() < deadline and proc.poll() is None and not written:
            written = [n for n in os.listdir(path) if n.startswith("segment-")
                       and n not in before[2]]
            time.sleep(0.05)
        assert written, f"no new segment written: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)  # the data is written, the pointer is not
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    after = gallery_lib.open_gallery(path, embedder)
    assert (after.version, _content(after)) == before[:2]
    assert after.identify(after.embeddings[:1], 1, threshold=1.0)[0]["identity"] == "person_00"
    # The next enrolment finishes the job and clears what the killed one left.
    report = after.enroll_photos(embedder, None, gallery_lib.people_in_folder(known))
    assert (report["new"], report["unchanged"]) == (2, 4)
    assert sorted(os.listdir(path)) == sorted(["gallery.json"] + after._pointer["segments"])
