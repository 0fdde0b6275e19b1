"""The export's detect_and_embed signature: whole photos in, each face's box, landmarks and
embedding out, the same as the Python photo path (detection.faces + batch_embed)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.detection import AlignConfig, FaceDetector, main_face
from facenet_tf.inference.batch_embed import embed_photo_faces
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.serving.saved_model import (
    SIGNATURE_PHOTOS,
    PhotoSignature,
    export_saved_model,
)
from tests.conftest import make_tiny_embedding_model

MAX_FACES = 3


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    """A noise photo with two LFW faces, one with one face, one without: (paths, pixels)."""
    root = tmp_path_factory.mktemp("photos")
    lfw = os.path.join(shared_data, "lfw_dev", "images")
    faces = [Image.open(os.path.join(lfw, n, f"{n}_0001.jpg")).convert("RGB").crop(
        (50, 40, 200, 210)) for n in ("Aaron_Peirsol", "Adam_Sandler")]
    rng = np.random.RandomState(0)
    paths, arrays = [], []
    for name, placed in (("two.png", [(0, 30, 40), (1, 300, 120)]), ("one.png", [(1, 80, 60)]),
                         ("none.png", [])):
        canvas = Image.fromarray(np.clip(rng.normal(120, 20, (340, 500, 3)), 0, 255)
                                 .astype(np.uint8))
        for k, x, y in placed:
            canvas.paste(faces[k], (x, y))
        canvas.save(root / name)
        paths.append(str(root / name))
        arrays.append(np.asarray(canvas))
    return paths, arrays


@pytest.mark.integration
@pytest.mark.slow
def test_detect_and_embed_matches_the_python_photo_path(photos, tmp_path):
    paths, arrays = photos
    detector = FaceDetector()
    align = AlignConfig(image_size=32)
    path = export_saved_model(make_tiny_embedding_model((32, 32, 3)), str(tmp_path / "m"),
                              PreprocessConfig((32, 32)),
                              photos=PhotoSignature(detector, align, MAX_FACES))
    served = tf.saved_model.load(path).signatures[SIGNATURE_PHOTOS]
    encoded = [open(p, "rb").read() for p in paths]
    out = {k: v.numpy() for k, v in served(images=tf.constant(encoded)).items()}
    assert out["embeddings"].shape == (3, MAX_FACES, 8)

    table = embed_photo_faces(load_embedder(path), detector, paths, align=align, keep="all")
    for i, (photo, pixels) in enumerate(zip(paths, arrays)):
        found = detector.detect([pixels])[0]
        n = min(len(found), MAX_FACES)
        assert out["num_faces"][i] == n
        np.testing.assert_allclose(out["boxes"][i, :n], found.boxes[:n], atol=1e-3)
        np.testing.assert_allclose(out["landmarks"][i, :n], found.landmarks[:n], atol=1e-3)
        assert not out["embeddings"][i, n:].any() and not out["boxes"][i, n:].any()
        expect_main = main_face(found, *pixels.shape[:2])
        assert out["main_face"][i] == (-1 if expect_main is None else expect_main)
        rows = [r for r, p in enumerate(table.photos) if p == photo]
        np.testing.assert_allclose(out["embeddings"][i, :n], table.embeddings[rows], atol=1e-4)
    assert [n for n in out["num_faces"]] == [2, 1, 0]


@pytest.mark.integration
@pytest.mark.slow
def test_saved_model_cli_runs_detect_and_embed(photos, tmp_path):
    """The TF1-style loader that saved_model_cli and TF Serving use finds the detector's
    weights in the export (docs/serving.md's command) and gives the Python detector's boxes."""
    paths, arrays = photos
    detector = FaceDetector()
    path = export_saved_model(make_tiny_embedding_model((32, 32, 3)), str(tmp_path / "m"),
                              PreprocessConfig((32, 32)),
                              photos=PhotoSignature(detector, AlignConfig(image_size=32),
                                                    MAX_FACES))
    inputs = str(tmp_path / "photo.npy")
    np.save(inputs, np.array([open(paths[0], "rb").read()], dtype=object), allow_pickle=True)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    outdir = str(tmp_path / "out")
    subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                    SIGNATURE_PHOTOS, "--inputs", f"images={inputs}", "--outdir", outdir],
                   check=True, capture_output=True, timeout=180)
    found = detector.detect([arrays[0]])[0]
    assert np.load(os.path.join(outdir, "num_faces.npy")).tolist() == [len(found)]
    np.testing.assert_allclose(np.load(os.path.join(outdir, "boxes.npy"))[0, :len(found)],
                               found.boxes, atol=1e-3)
