"""TFLite export: float32 equals the Keras model and the SavedModel, int8 is integer and keeps
nearest neighbours, metadata describes the files, calibration and loader errors name the path."""

import hashlib
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from facenet_tf import datasets
from facenet_tf.data import preprocess as pp
from facenet_tf.data.image_files import list_images, read_encoded
from facenet_tf.inference.embedders import load_embedder, load_tflite_embedder
from facenet_tf.models import build_model
from facenet_tf.pipelines.build_dataset import build_dataset
from facenet_tf.serving import saved_model, tflite
from facenet_tf.training import loop
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.restore import restore_network
from tests.conftest import (
    litert_one_image_at_a_time,
    make_image_folder,
    make_tiny_embedding_model,
)

CFG = pp.PreprocessConfig(image_size=(32, 32), crop_fraction=0.8, standardization="fixed")


def _png(seed, size=(40, 36)):
    rng = np.random.RandomState(seed)
    return tf.io.encode_png(rng.randint(0, 256, (*size, 3)).astype(np.uint8)).numpy()


def _app_pixels(encoded, image_size, crop_fraction):
    """The preprocessing an app applies, written from the metadata's description: centre crop
    by the stated formula, bilinear resize, clip, (p - 127.5) / 128."""
    h, w = image_size
    out = []
    for data in encoded:
        img = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
        big_h, big_w = img.shape[:2]
        scale = min(big_h / h, big_w / w) * crop_fraction
        box_h, box_w = max(1, round(scale * h)), max(1, round(scale * w))
        top, left = (big_h - box_h) // 2, (big_w - box_w) // 2
        crop = img[top:top + box_h, left:left + box_w].astype(np.float32)
        face = np.clip(tf.image.resize(crop, (h, w), method="bilinear").numpy(), 0, 255)
        out.append((face - 127.5) / 128.0)
    return np.stack(out)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfl")
    model = make_tiny_embedding_model()
    folder = make_image_folder(str(root / "faces"), size=(40, 36))
    out = str(root / "export")
    meta = tflite.export_tflite(model, out, CFG, calibration_images=folder, num_calibration=10,
                                threshold=0.9, seed=3)
    return model, out, meta, folder


def test_float32_equals_keras_and_saved_model_on_synthetic_images(tiny_export, tmp_path):
    model, out, _, _ = tiny_export
    images = [_png(i, size) for i, size in enumerate([(40, 36), (50, 70), (33, 33), (64, 48)])]
    pixels = np.stack([pp.preprocess_encoded(tf.constant(e), CFG).numpy() for e in images])
    keras_emb = model(pixels, training=False).numpy()
    saved = load_embedder(saved_model.export_saved_model(model, str(tmp_path / "sm"), CFG))
    embedder = load_tflite_embedder(os.path.join(out, tflite.FLOAT32_FILE),
                                           num_threads=1)
    got = embedder.embed_pixels(pixels)
    np.testing.assert_allclose(got, keras_emb, atol=1e-4)
    np.testing.assert_allclose(got, saved.embed_pixels(pixels), atol=1e-4)
    np.testing.assert_allclose(embedder.embed_pixels(pixels[2:3]), keras_emb[2:3], atol=1e-4)
    np.testing.assert_allclose(embedder.embed_encoded(images), keras_emb, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_pixels(np.zeros((0, 32, 32, 3), np.float32)).shape == (0, 8)


def test_float32_equals_keras_with_batch_norm_folded(tmp_path):
    """NNS2 at 32x32 with random batch-norm statistics, so that folding them into the
    convolutions matters."""
    model = build_model("nns2", input_shape=(32, 32, 3), seed=0)
    rng = np.random.RandomState(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.uniform(-0.5, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, channels))
            layer.beta.assign(rng.uniform(-0.3, 0.3, channels))
    cfg = pp.PreprocessConfig(image_size=(32, 32))
    tflite.export_tflite(model, str(tmp_path / "t"), cfg)
    x = rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    got = load_tflite_embedder(str(tmp_path / "t" / tflite.FLOAT32_FILE)).embed_pixels(x)
    np.testing.assert_allclose(got, model(x, training=False).numpy(), atol=1e-4)


def test_documented_app_preprocessing_reproduces_the_embedder(tiny_export):
    _, out, meta, _ = tiny_export
    images = [_png(10, (57, 41)), _png(11, (30, 90))]
    pixels = _app_pixels(images, meta["input_size"], meta["preprocess"]["crop_fraction"])
    path = os.path.join(out, tflite.FLOAT32_FILE)
    expected = litert_one_image_at_a_time(path, pixels)
    np.testing.assert_allclose(load_tflite_embedder(path).embed_encoded(images),
                               expected, atol=1e-5)


def test_int8_model_is_integer_with_float_input_and_output(tiny_export):
    _, out, meta, folder = tiny_export
    path = os.path.join(out, tflite.INT8_FILE)
    interpreter = Interpreter(model_path=path)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, 32, 32, 3]
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    compute = [op for op in ops if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")]
    assert {op["op_name"] for op in compute} >= {"CONV_2D", "FULLY_CONNECTED", "MEAN"}
    for op in compute:
        assert dtypes[op["inputs"][0]] == np.int8, op["op_name"]
    weights = [dtypes[op["inputs"][1]] for op in compute if op["op_name"] == "CONV_2D"]
    assert weights and all(d == np.int8 for d in weights)
    assert meta["files"]["int8"]["float_ops"] == {}

    # The agreement recorded in the metadata, recomputed with bare interpreters.
    pixels = np.stack([pp.preprocess_encoded(tf.constant(read_encoded(p)), CFG).numpy()
                       for p in list_images(folder)])
    a = litert_one_image_at_a_time(os.path.join(out, tflite.FLOAT32_FILE), pixels)
    b = litert_one_image_at_a_time(path, pixels)
    recorded = meta["files"]["int8"]["agreement_on_calibration_images"]
    assert recorded["num_images"] == 10
    cos = np.sum(a * b, 1) / np.linalg.norm(b, axis=1)
    assert recorded["min_cosine"] >= cos.min() - 1e-6
    assert recorded["max_norm_deviation"] <= np.abs(np.linalg.norm(b, axis=1) - 1).max() + 1e-6


def test_metadata_describes_the_files(tiny_export):
    model, out, meta, folder = tiny_export
    assert sorted(os.listdir(out)) == sorted([tflite.FLOAT32_FILE, tflite.INT8_FILE,
                                              tflite.METADATA_FILE])
    assert not [n for n in os.listdir(os.path.dirname(out)) if ".tmp-" in n or ".old-" in n]
    with open(os.path.join(out, tflite.METADATA_FILE)) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(meta))
    for variant, name in (("float32", tflite.FLOAT32_FILE), ("int8", tflite.INT8_FILE)):
        entry = meta["files"][variant]
        with open(os.path.join(out, name), "rb") as f:
            data = f.read()
        assert entry["file"] == name and entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["fingerprint"] == saved_model.weights_fingerprint(model)
    assert meta["embedding_dim"] == 8 and meta["input_size"] == [32, 32]
    assert meta["threshold"] == 0.9
    assert pp.PreprocessConfig.from_dict(meta["preprocess"]) == CFG
    assert "(p - 127.5) / 128" in meta["preprocess"]["standardization_formula"]
    assert meta["byte_embeddings"]["max_abs"] == 1.0  # min(1, 5 / sqrt(8))
    calibration = meta["files"]["int8"]["calibration"]
    assert calibration["num_images"] == 10 and calibration["seed"] == 3
    assert calibration["source"] == f"image folder {folder}"

    float_embedder = load_tflite_embedder(os.path.join(out, tflite.FLOAT32_FILE))
    int8_embedder = load_tflite_embedder(os.path.join(out, tflite.INT8_FILE))
    assert float_embedder.fingerprint == meta["fingerprint"]
    assert int8_embedder.fingerprint == meta["fingerprint"] + "-int8"
    assert float_embedder.threshold == 0.9 and int8_embedder.embedding_dim == 8
    assert int8_embedder.preprocess == CFG and int8_embedder.variant == "int8"


def test_reexport_replaces_the_directory(tiny_export, tmp_path):
    out = str(tmp_path / "e")
    first = tflite.export_tflite(make_tiny_embedding_model(seed=1), out, CFG)
    assert sorted(os.listdir(out)) == [tflite.METADATA_FILE, tflite.FLOAT32_FILE]
    assert "int8" not in first["files"]
    model2 = make_tiny_embedding_model(seed=2)
    second = tflite.export_tflite(model2, out, CFG)
    assert second["fingerprint"] != first["fingerprint"]
    assert sorted(os.listdir(tmp_path)) == ["e"]
    x = np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    got = load_tflite_embedder(os.path.join(out, tflite.FLOAT32_FILE)).embed_pixels(x)
    np.testing.assert_allclose(got, model2(x).numpy(), atol=1e-4)


def test_calibration_path_errors_name_the_path(tmp_path):
    model = make_tiny_embedding_model()
    out = str(tmp_path / "out")
    missing = str(tmp_path / "no_such_dir")
    message = re.escape(f"{missing}: calibration data not found")
    with pytest.raises(FileNotFoundError, match=message):
        tflite.export_tflite(model, out, CFG, calibration_images=missing)
    empty = tmp_path / "empty"
    (empty / "person").mkdir(parents=True)
    (empty / "person" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(f"{empty}: no images for calibration")):
        tflite.export_tflite(model, out, CFG, calibration_images=str(empty))
    corrupt = tmp_path / "corrupt"
    (corrupt / "p").mkdir(parents=True)
    (corrupt / "p" / "a.png").write_bytes(b"\x89PNG but truncated")
    with pytest.raises(ValueError, match="none of the 1 calibration images decodes"):
        tflite.export_tflite(model, out, CFG, calibration_images=str(corrupt))
    with pytest.raises(ValueError, match="not a file"):
        tflite.export_tflite(model, out, CFG, calibration_images=str(corrupt / "p" / "a.png"))
    assert not os.path.exists(out)


def test_undecodable_calibration_images_are_skipped_and_listed(tmp_path):
    folder = make_image_folder(str(tmp_path / "faces"), num_identities=2,
                               images_per_identity=3, size=(40, 36))
    bad = os.path.join(folder, "person_00", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG truncated")
    pixels, info = tflite.calibration_pixels(folder, CFG, num_images=100, seed=0)
    assert pixels.shape == (6, 32, 32, 3) and info["num_images"] == 6
    assert info["num_skipped"] == 1 and info["skipped"][0]["image"] == bad
    assert info["skipped"][0]["reason"]


def test_calibration_sample_is_seeded_from_folder_bytes_and_dataset(tmp_path):
    folder = make_image_folder(str(tmp_path / "faces"), size=(40, 36))  # 12 images
    a, _ = tflite.calibration_pixels(folder, CFG, num_images=5, seed=1)
    b, _ = tflite.calibration_pixels(folder, CFG, num_images=5, seed=1)
    c, _ = tflite.calibration_pixels(folder, CFG, num_images=5, seed=2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 32, 32, 3) and not np.array_equal(a, c)
    everything = np.stack([pp.preprocess_encoded(tf.constant(read_encoded(p)), CFG).numpy()
                           for p in list_images(folder)])
    for row in a:  # each sampled image is one of the folder's, preprocessed alike
        assert np.min(np.abs(everything - row).reshape(len(everything), -1).max(1)) < 1e-6

    encoded = [read_encoded(p) for p in list_images(folder)]
    d, info = tflite.calibration_pixels(encoded, CFG, num_images=5, seed=1)
    np.testing.assert_array_equal(d, a)  # same seeded choice over the same sorted images
    assert info["source"] == "12 encoded images"

    dataset = str(tmp_path / "dataset")
    build_dataset(folder, dataset, num_shards=2)
    e, info = tflite.calibration_pixels(dataset, CFG, num_images=7, seed=0)
    f, _ = tflite.calibration_pixels(dataset, CFG, num_images=7, seed=0)
    assert e.shape == (7, 32, 32, 3) and info["source"] == f"dataset {dataset}"
    np.testing.assert_array_equal(e, f)


def test_loader_errors_name_the_file(tiny_export, tmp_path):
    _, out, _, _ = tiny_export
    with pytest.raises(ValueError, match=r"a directory; pass one of its \.tflite files"):
        load_tflite_embedder(out)
    with pytest.raises(FileNotFoundError, match="no such .tflite file"):
        load_tflite_embedder(str(tmp_path / "x.tflite"))
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    with open(os.path.join(out, tflite.FLOAT32_FILE), "rb") as f:
        data = f.read()
    (lonely / "m.tflite").write_bytes(data)
    with pytest.raises(FileNotFoundError, match=f"no {tflite.METADATA_FILE} beside it"):
        load_tflite_embedder(str(lonely / "m.tflite"))
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / tflite.METADATA_FILE).write_bytes(
        open(os.path.join(out, tflite.METADATA_FILE), "rb").read())
    (copy / tflite.FLOAT32_FILE).write_bytes(
        open(os.path.join(out, tflite.INT8_FILE), "rb").read())
    with pytest.raises(ValueError, match="sha256 differs"):
        load_tflite_embedder(str(copy / tflite.FLOAT32_FILE))


@pytest.mark.integration
def test_float32_equals_keras_and_saved_model_on_orl(orl_dir, tmp_path):
    model = build_model("nns2", seed=0)
    cfg = pp.PreprocessConfig(image_size=model.input_shape[1:3])
    paths = [os.path.join(orl_dir, f"s{i}", f"{j}.pgm") for i in (1, 7, 23, 40) for j in (1, 5)]
    encoded = [read_encoded(p) for p in paths]
    pixels = np.stack([pp.preprocess_encoded(tf.constant(e), cfg).numpy() for e in encoded])
    tflite.export_tflite(model, str(tmp_path / "t"), cfg)
    saved = load_embedder(saved_model.export_saved_model(model, str(tmp_path / "sm"), cfg))
    got = load_tflite_embedder(str(tmp_path / "t" / tflite.FLOAT32_FILE)).embed_encoded(
        encoded)
    np.testing.assert_allclose(got, model(pixels, training=False).numpy(), atol=1e-4)
    np.testing.assert_allclose(got, saved.embed_encoded(encoded), atol=1e-4)


def _nearest_neighbours(embeddings):
    """Index of each row's nearest other row (squared L2), by a plain loop."""
    out = []
    for i, e in enumerate(embeddings):
        best, best_d = -1, np.inf
        for j, f in enumerate(embeddings):
            d = float(np.sum((e - f) ** 2))
            if j != i and d < best_d:
                best, best_d = j, d
        out.append(best)
    return np.array(out)


@pytest.mark.slow
def test_int8_keeps_the_nearest_neighbour_of_trained_nns2(tmp_path):
    """A briefly trained NNS2 (64x56 input, 40 online semi-hard steps on the bundled ORL): the
    int8 model's nearest neighbour among the 400 faces is the float model's for >= 95%."""
    dataset = str(tmp_path / "dataset")
    build_dataset(datasets.ORL_FACES_DIR, dataset, num_shards=2)
    config = TrainConfig(train_data=dataset, model_dir=str(tmp_path / "run"), architecture="nns2",
                         input_shape=(64, 56, 3), mining="online", strategy="semi_hard",
                         alpha=0.5, batch_size=40, images_per_identity=4, steps=40,
                         optimizer="adam", learning_rate=1e-3, checkpoint_every_steps=40,
                         verbose=0)
    loop.train(config)
    restored = restore_network(str(tmp_path / "run" / "checkpoints"))
    out = str(tmp_path / "tfl")
    tflite.export_tflite(restored.network, out, restored.preprocess, calibration_images=dataset)
    paths = list_images(datasets.ORL_FACES_DIR)
    assert len(paths) == 400
    encoded = [read_encoded(p) for p in paths]
    emb = {v: load_tflite_embedder(os.path.join(out, f)).embed_encoded(encoded)
           for v, f in (("float32", tflite.FLOAT32_FILE), ("int8", tflite.INT8_FILE))}
    nn_float, nn_int8 = _nearest_neighbours(emb["float32"]), _nearest_neighbours(emb["int8"])
    identity = np.array([os.path.basename(os.path.dirname(p)) for p in paths])
    assert np.mean(identity[nn_float] == identity) >= 0.9  # the embeddings mean something
    assert np.mean(nn_int8 == nn_float) >= 0.95
