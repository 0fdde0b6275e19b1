"""SavedModel export and loading: signatures match the Keras model, errors, atomic publish."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.data import preprocess as pp
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.serving import saved_model
from tests.conftest import make_tiny_embedding_model

CFG = pp.PreprocessConfig(image_size=(32, 32), crop_fraction=0.8, standardization="fixed")


def _png(seed, size=(40, 36)):
    rng = np.random.RandomState(seed)
    return tf.io.encode_png(rng.randint(0, 256, (*size, 3)).astype(np.uint8)).numpy()


def _reference(model, encoded, cfg):
    """model(preprocess(image)) computed directly from the shared preprocessing ops."""
    x = tf.stack([pp.preprocess_encoded(tf.constant(e), cfg) for e in encoded])
    return model(x, training=False).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = make_tiny_embedding_model()
    path = str(tmp_path_factory.mktemp("exp") / "model")
    out = saved_model.export_saved_model(model, path, CFG, step=7, threshold=1.1,
                                    extra_metadata={"note": "tiny"})
    return model, out


def test_serving_default_matches_model_on_png_bytes(exported):
    model, path = exported
    images = [_png(1), _png(2, (50, 70)), _png(3)]
    loaded = tf.saved_model.load(path)
    got = loaded.signatures["serving_default"](images=tf.constant(images))["embeddings"].numpy()
    np.testing.assert_allclose(got, _reference(model, images, CFG), atol=1e-5)
    one = loaded.signatures["serving_default"](images=tf.constant(images[:1]))["embeddings"]
    np.testing.assert_allclose(one.numpy(), got[:1], atol=1e-5)  # free batch dimension
    pixels = tf.stack([pp.preprocess_encoded(tf.constant(e), CFG) for e in images])
    emb = loaded.signatures["embed"](pixels=pixels)["embeddings"].numpy()
    np.testing.assert_allclose(emb, got, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_metadata_in_dir_and_loaded_object(exported):
    model, path = exported
    with open(os.path.join(path, "assets.extra", "facenet_tf.json")) as f:
        meta = json.load(f)
    assert meta["input_size"] == [32, 32] and meta["embedding_dim"] == 8
    assert meta["preprocess"] == CFG.to_dict() and meta["step"] == 7
    assert meta["threshold"] == 1.1 and meta["note"] == "tiny"
    assert meta["fingerprint"] == saved_model.weights_fingerprint(model)
    assert "git_revision" in meta["run_info"]
    loaded = tf.saved_model.load(path)
    assert json.loads(loaded.metadata_json.numpy().decode()) == meta
    embedder = load_embedder(path)
    assert embedder.metadata == meta and embedder.preprocess == CFG
    assert embedder.fingerprint == meta["fingerprint"] and embedder.embedding_dim == 8


def test_bad_image_is_invalid_argument_and_model_keeps_working(exported):
    model, path = exported
    embedder = load_embedder(path)
    good = _png(4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image 1 of the request is not"):
        embedder.embed_encoded([good, b"this is not an image"])
    truncated = good[:40]  # valid PNG signature, cut short
    with pytest.raises(tf.errors.InvalidArgumentError):
        embedder.embed_encoded([truncated])
    np.testing.assert_allclose(embedder.embed_encoded([good]), _reference(model, [good], CFG),
                               atol=1e-5)


def test_embedder_pixels_and_override(exported):
    model, path = exported
    images = [_png(5), _png(6)]
    override = pp.PreprocessConfig(image_size=(32, 32), crop_fraction=0.5,
                                   standardization="prewhiten")
    embedder = load_embedder(path, preprocess=override)
    np.testing.assert_allclose(embedder.embed_encoded(images),
                               _reference(model, images, override), atol=1e-5)
    x = np.random.RandomState(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(embedder.embed_pixels(x), model(x).numpy(), atol=1e-5)
    assert embedder.embed_encoded([]).shape == (0, 8)
    with pytest.raises(ValueError, match="expected pixels"):
        embedder.embed_pixels(np.zeros((1, 16, 16, 3)))


def test_keras_file_loads_with_default_preprocess(tmp_path):
    model = make_tiny_embedding_model(seed=3)
    path = str(tmp_path / "m.keras")
    model.save(path)
    embedder = load_embedder(path)
    assert embedder.preprocess == pp.PreprocessConfig(image_size=(32, 32))
    assert embedder.fingerprint == saved_model.weights_fingerprint(model)
    images = [_png(7)]
    np.testing.assert_allclose(embedder.embed_encoded(images),
                               _reference(model, images, embedder.preprocess), atol=1e-5)


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_embedder(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*saved_model.pb"):
        load_embedder(str(tmp_path / "empty"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="x.txt.*not a model"):
        load_embedder(str(tmp_path / "x.txt"))


def test_export_replaces_atomically_and_checks_inputs(tmp_path):
    path = str(tmp_path / "model")
    first = make_tiny_embedding_model(seed=1)
    second = make_tiny_embedding_model(seed=2)
    saved_model.export_saved_model(first, path, CFG)
    saved_model.export_saved_model(second, path, CFG)
    assert load_embedder(path).fingerprint == saved_model.weights_fingerprint(second)
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no temp or old directories left
    with pytest.raises(ValueError, match="does not match"):
        saved_model.export_saved_model(first, str(tmp_path / "m2"),
                                  pp.PreprocessConfig(image_size=(64, 64)))
    with pytest.raises(TypeError):
        saved_model.export_saved_model(first, str(tmp_path / "m3"), CFG,
                                  extra_metadata={"bad": object()})
    with pytest.raises(ValueError, match="clashes"):
        saved_model.export_saved_model(first, str(tmp_path / "m4"), CFG, extra_metadata={"step": 1})
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.integration
def test_saved_model_cli_run_embeds_a_real_face(exported, lfw_dir, tmp_path):
    model, path = exported
    face = sorted(glob.glob(os.path.join(lfw_dir, "images", "Aaron_Peirsol", "*.jpg")))[0]
    with open(face, "rb") as f:
        encoded = f.read()
    inputs = str(tmp_path / "in.npy")
    np.save(inputs, np.array([encoded], dtype=object), allow_pickle=True)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    outdir = str(tmp_path / "out")
    subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                    "serving_default", "--inputs", f"images={inputs}", "--outdir", outdir],
                   check=True, capture_output=True, timeout=120)
    got = np.load(os.path.join(outdir, "embeddings.npy"))
    np.testing.assert_allclose(got, _reference(model, [encoded], CFG), atol=1e-5)


@pytest.mark.integration
def test_export_cli(tmp_path):
    model = make_tiny_embedding_model(seed=4)
    ckpt = str(tmp_path / "m.keras")
    model.save(ckpt)
    out = str(tmp_path / "exp")
    subprocess.run([sys.executable, "-m", "facenet_tf.export", "--checkpoint", ckpt,
                    "--export_dir", out, "--crop_fraction", "0.9", "--threshold", "0.9"],
                   check=True, capture_output=True, timeout=120,
                   cwd=os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    embedder = load_embedder(out)
    assert embedder.preprocess.crop_fraction == 0.9 and embedder.threshold == 0.9
    assert embedder.metadata["checkpoint"] == ckpt
    assert embedder.fingerprint == saved_model.weights_fingerprint(model)
