"""Custom layers against plain-loop oracles, and .keras round trips."""

import keras
import numpy as np

from facenet_tf.models import build_model
from facenet_tf.models.layers import (
    InferenceBatchNormalization,
    L2Pooling2D,
    LocalResponseNorm,
    Maxout,
)


def test_l2_pooling_matches_a_loop():
    x = np.random.RandomState(0).randn(1, 5, 4, 2).astype(np.float32)
    out = L2Pooling2D(3, 2, "valid")(x).numpy()
    expected = np.zeros((1, 2, 1, 2), np.float32)
    for i in range(2):
        for j in range(1):
            for c in range(2):
                window = x[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, c]
                expected[0, i, j, c] = np.sqrt(np.mean(window ** 2))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_maxout_takes_the_max_of_consecutive_pieces():
    x = np.array([[1.0, 5.0, -2.0, -3.0, 0.5, 0.25]], np.float32)
    np.testing.assert_array_equal(Maxout(2)(x).numpy(), [[5.0, -2.0, 0.5]])
    np.testing.assert_array_equal(Maxout(3)(x).numpy(), [[5.0, 0.5]])


def test_local_response_norm_matches_the_formula():
    x = np.random.RandomState(1).rand(1, 1, 1, 6).astype(np.float32) * 10
    out = LocalResponseNorm(depth_radius=1, bias=2.0, alpha=0.1, beta=0.5)(x).numpy()
    for c in range(6):
        s = np.sum(x[0, 0, 0, max(0, c - 1):c + 2] ** 2)
        np.testing.assert_allclose(out[0, 0, 0, c], x[0, 0, 0, c] / (2.0 + 0.1 * s) ** 0.5,
                                   rtol=1e-5)


def test_inference_batch_norm_ignores_the_training_flag():
    layer = InferenceBatchNormalization(scale=False)
    x = np.random.RandomState(2).randn(8, 3).astype(np.float32) * 4 + 2
    layer.build(x.shape)
    layer.set_weights([np.array([0.5, 0, -1], np.float32), np.ones(3, np.float32),
                       np.full(3, 3.0, np.float32)])
    expected = (x - 1.0) / np.sqrt(3.0 + layer.epsilon) + np.array([0.5, 0, -1])
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 1.0)   # statistics untouched
    assert len(layer.trainable_weights) == 1                      # beta still learns


def test_custom_layers_survive_a_keras_round_trip(tmp_path):
    inputs = keras.Input((6, 6, 4))
    x = L2Pooling2D(3, 1, "same")(inputs)
    x = LocalResponseNorm()(x)
    x = InferenceBatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    outputs = Maxout(2)(keras.layers.Dense(8)(x))
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "m.keras")
    model.save(path)
    x = np.random.RandomState(3).randn(2, 6, 6, 4).astype(np.float32)
    np.testing.assert_allclose(keras.models.load_model(path)(x).numpy(), model(x).numpy(),
                               atol=1e-6)


def test_nn2_round_trips_through_keras_file(tmp_path):
    model = build_model("nn2", embedding_dim=64, input_shape=(64, 64, 3), seed=0)
    path = str(tmp_path / "nn2.keras")
    model.save(path)
    x = np.random.RandomState(4).randn(2, 64, 64, 3).astype(np.float32)
    np.testing.assert_allclose(keras.models.load_model(path)(x).numpy(), model(x).numpy(),
                               atol=1e-5)
