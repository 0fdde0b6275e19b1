"""The MTCNN networks against the mtcnn package's own Keras networks (the oracle) on the same
weights and inputs, and the weight-loading errors."""

import joblib
import numpy as np
import pytest
import tensorflow as tf

# The oracle: PyPI mtcnn's Keras models, built and loaded its own way.
from mtcnn.network.onet import ONet
from mtcnn.network.pnet import PNet
from mtcnn.network.rnet import RNet
from mtcnn.utils.tensorflow import load_weights as package_load_weights

from facenet_tf.detection import networks


@pytest.fixture(scope="module")
def nets():
    return networks.MtcnnNetworks()


@pytest.mark.parametrize("name,keras_class,shape", [
    ("pnet", PNet, (2, 31, 45, 3)), ("rnet", RNet, (3, 24, 24, 3)), ("onet", ONet, (3, 48, 48, 3))])
def test_networks_equal_the_packages(nets, name, keras_class, shape):
    oracle = keras_class()
    oracle.build()
    oracle.set_weights(package_load_weights(f"{name}.lz4"))
    x = np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32)
    expected = [np.asarray(t) for t in oracle(x)]
    got = [np.asarray(t) for t in getattr(nets, name)(x)]
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_pnet_output_grid_follows_the_window_stride(nets):
    # 12x12 windows at stride 2: a W-wide input gives (W - 12) // 2 + 1 columns.
    offsets, probs = nets.pnet(np.zeros((1, 12, 40, 3), np.float32))
    assert offsets.shape == (1, 1, 15, 4) and probs.shape == (1, 1, 15, 2)


def test_missing_weights_dir_names_the_file(tmp_path):
    with pytest.raises(networks.DetectorWeightsNotFoundError, match="pnet.lz4"):
        networks.weights_path("pnet", str(tmp_path))


def test_unknown_network_name_is_rejected():
    with pytest.raises(ValueError, match="xnet"):
        networks.weights_path("xnet")


def test_wrong_weights_file_names_the_layer(tmp_path):
    arrays = package_load_weights("rnet.lz4")  # R-Net weights stored under P-Net's name
    joblib.dump(arrays[:13], tmp_path / "pnet.lz4")
    with pytest.raises(ValueError, match="conv1"):
        networks.load_weights("pnet", str(tmp_path))


@pytest.mark.parametrize("slopes", [[0.25, -0.6, 0.0, 1.0], [0.25, -0.6, 1.3, 1.0]],
                         ids=["every_slope_at_most_1", "a_slope_above_1"])
def test_prelu_gives_the_values_of_the_select_form(slopes):
    """Both of _prelu's forms against x if x > 0 else slope * x, per channel, in NumPy float32:
    the same values (not merely close) on values of both signs, signed zeros and extremes."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (2, 5, 7, 4)).astype(np.float32)
    x[0, 0, 0] = [0.0, -0.0, 3e38, -3e38]
    slope = np.asarray(slopes, np.float32)
    with np.errstate(over="ignore"):  # slope * 3e38 overflows where the select keeps x
        expected = np.where(x > 0, x, slope * x)
    got = networks._prelu(tf.constant(x), tf.constant(slope.reshape(1, 1, 4))).numpy()
    np.testing.assert_array_equal(got, expected)
