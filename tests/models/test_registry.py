"""build_model / default_input_shape: names, shapes, unit-norm float32 output, seeding."""

import keras
import numpy as np
import pytest

from facenet_tf.models import ARCHITECTURES, build_model, default_input_shape


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError) as e:
        build_model("resnet50")
    for name in ARCHITECTURES:
        assert name in str(e.value)


@pytest.mark.parametrize("name,shape", [("nn1", (220, 220, 3)), ("nn2", (224, 224, 3)),
                                        ("nn3", (160, 160, 3)), ("nn4", (96, 96, 3)),
                                        ("nns1", (165, 165, 3)), ("nns2", (140, 116, 3)),
                                        ("inception_resnet_v1", (160, 160, 3))])
def test_default_input_shapes_are_the_papers(name, shape):
    assert default_input_shape(name) == shape


@pytest.mark.parametrize("shape", [(160, 160, 1), (160, 160), (0, 160, 3), (64.0, 64, 3)])
def test_malformed_input_shape_is_rejected(shape):
    with pytest.raises(ValueError, match="input_shape"):
        build_model("nns2", input_shape=shape)


def test_too_small_input_is_rejected_with_architecture_name():
    with pytest.raises(ValueError, match="inception_resnet_v1 cannot take input_shape"):
        build_model("inception_resnet_v1", input_shape=(40, 40, 3))


@pytest.mark.parametrize("dim", [0, -3, 12.5])
def test_bad_embedding_dim_is_rejected(dim):
    with pytest.raises(ValueError, match="embedding_dim"):
        build_model("nns2", embedding_dim=dim)


@pytest.mark.parametrize("name,shape,dim", [("nns2", None, 128), ("nn4", None, 64),
                                            ("nn2", (64, 64, 3), 256),
                                            ("inception_resnet_v1", (75, 75, 3), 512)])
def test_output_is_unit_norm_float32(name, shape, dim):
    model = build_model(name, embedding_dim=dim, input_shape=shape, seed=0)
    h, w, _ = shape or default_input_shape(name)
    x = np.random.RandomState(1).randn(3, h, w, 3).astype(np.float32)
    out = model(x, training=False)
    assert out.dtype == "float32"
    assert tuple(out.shape) == (3, dim)
    norms = np.sqrt(np.sum(np.square(out.numpy()), axis=1))
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_output_is_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("nns2", seed=0)
        x = np.random.RandomState(2).randn(2, 140, 116, 3).astype(np.float32)
        out = model(x, training=False).numpy()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-3)


def test_seed_determines_the_weights():
    a = build_model("nns2", seed=7).get_weights()
    b = build_model("nns2", seed=7).get_weights()
    c = build_model("nns2", seed=8).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
