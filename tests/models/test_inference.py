"""Batch-norm folding and the frozen serving function, against the unfolded Keras model."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.data import preprocess as pp
from facenet_tf.models import build_model
from facenet_tf.models.inference import fold_batch_norm, inference_function
from facenet_tf.serving import saved_model


def _randomise_batch_norms(model, seed=0):
    """Non-trivial moving statistics, gamma and beta, so that folding has something to fold."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for w in layer.weights:
                if "variance" in w.path:
                    values.append(rng.uniform(0.5, 2.0, w.shape))
                else:
                    values.append(rng.normal(0.0, 0.5, w.shape))
            layer.set_weights([v.astype(np.float32) for v in values])


def _mixed_model():
    """Every foldable and non-foldable pattern once; 4 layers can be folded."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(4, 3, use_bias=False, name="conv_nobias")(inputs)
    a = keras.layers.BatchNormalization(scale=True, name="bn_scaled")(a)  # folded
    a = keras.layers.ReLU()(a)
    b = keras.layers.Conv2D(4, 3, use_bias=True, name="conv_bias")(inputs)
    b = keras.layers.BatchNormalization(scale=False, epsilon=1e-3, name="bn_noscale")(b)  # folded
    b = keras.layers.ReLU()(b)
    b = keras.layers.BatchNormalization(name="bn_after_relu")(b)  # kept: follows a ReLU
    shared = keras.layers.Conv2D(4, 1, name="conv_shared")(a)
    c = keras.layers.BatchNormalization(name="bn_shared")(shared)  # kept: conv read twice
    c = keras.layers.Add()([c, shared, b])
    d = keras.layers.Conv2D(4, 1, name="conv_scaled")(c)
    d = keras.layers.Rescaling(0.17, name="residual_scale")(d)  # folded
    x = keras.layers.GlobalAveragePooling2D()(d)
    x = keras.layers.Dense(6, use_bias=False, name="bottleneck")(x)
    x = keras.layers.BatchNormalization(name="bottleneck_bn")(x)  # folded
    model = keras.Model(inputs, x, name="mixed")
    _randomise_batch_norms(model)
    return model


def test_fold_batch_norm_keeps_outputs_and_folds_exactly_the_foldable_layers():
    model = _mixed_model()
    folded, count = fold_batch_norm(model)
    assert count == 4
    names = {layer.name for layer in folded.layers}
    assert not names & {"bn_scaled", "bn_noscale", "residual_scale", "bottleneck_bn"}
    assert {"bn_after_relu", "bn_shared"} <= names
    assert folded.get_layer("conv_nobias").use_bias
    x = np.random.RandomState(1).rand(5, 12, 12, 3).astype(np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(),
                               rtol=1e-4, atol=1e-5)
    # The original is untouched.
    assert not model.get_layer("conv_nobias").use_bias
    assert "bn_scaled" in {layer.name for layer in model.layers}


def test_fold_batch_norm_on_a_paper_network():
    model = build_model("nns2", embedding_dim=16, seed=0)
    _randomise_batch_norms(model, seed=2)
    folded, count = fold_batch_norm(model)
    bn_before = sum(isinstance(l, keras.layers.BatchNormalization) for l in model.layers)
    bn_after = sum(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    assert count == bn_before - bn_after and bn_after == 0
    x = np.random.RandomState(3).rand(2, *model.input_shape[1:]).astype(np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), atol=1e-5)


def test_fold_batch_norm_rejects_a_subclassed_model():
    class Plain(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        fold_batch_norm(Plain())


@pytest.mark.parametrize("xla_max_batch", [0, 2])
def test_inference_function_matches_the_model_for_small_and_large_batches(xla_max_batch):
    model = _mixed_model()
    fn = inference_function(model, xla_max_batch=xla_max_batch)
    assert not fn.get_concrete_function().variables  # weights are graph constants
    x = np.random.RandomState(4).rand(7, 12, 12, 3).astype(np.float32)
    reference = tf.math.l2_normalize(model(x, training=False), axis=-1).numpy()
    for batch in (1, 2, 7):  # 1 and 2 take the XLA build when it is on, 7 the plain graph
        got = fn(tf.constant(x[:batch])).numpy()
        np.testing.assert_allclose(got, reference[:batch], atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_inference_function_needs_an_image_size_for_a_fully_convolutional_model():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match="image_size"):
        inference_function(model)
    out = inference_function(model, image_size=(9, 9))(tf.zeros([1, 9, 9, 3]))
    assert out.shape == (1, 4)


def test_optimized_export_saves_no_variables_and_matches_the_unoptimized_one(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, x)
    _randomise_batch_norms(model)
    cfg = pp.PreprocessConfig(image_size=(16, 16), standardization="fixed")
    fast = saved_model.export_saved_model(model, str(tmp_path / "fast"), cfg)
    plain = saved_model.export_saved_model(model, str(tmp_path / "plain"), cfg, optimize=False)
    with open(os.path.join(fast, saved_model.METADATA_FILE)) as f:
        assert json.load(f)["serving_graph"]["batch_norm_folded"] is True
    loaded_fast, loaded_plain = tf.saved_model.load(fast), tf.saved_model.load(plain)
    assert not loaded_fast.signatures["embed"].variables
    assert loaded_plain.signatures["embed"].variables
    pixels = tf.constant(np.random.RandomState(5).rand(3, 16, 16, 3).astype(np.float32))
    np.testing.assert_allclose(
        loaded_fast.signatures["embed"](pixels=pixels)["embeddings"].numpy(),
        loaded_plain.signatures["embed"](pixels=pixels)["embeddings"].numpy(), atol=1e-5)
