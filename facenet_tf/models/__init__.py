"""Embedding networks by architecture name: the paper's NN1..NN4, NNS1, NNS2,
Inception-ResNet-v1, and "pretrained" (Inception-ResNet-v1 with the converted FaceNet weights,
facenet_tf.models.frozen_graph).

`build_model(name)` returns a Keras model mapping standardised float32 images [B, H, W, 3]
to L2-normalised float32 embeddings [B, embedding_dim] (float32 even under a mixed policy).
"""

import keras

from facenet_tf.models import (
    frozen_graph,
    inception,
    inception_resnet_v1,
    zeiler_fergus,
)
from facenet_tf.models.card import model_card

ARCHITECTURES = ("nn1", "nn2", "nn3", "nn4", "nns1", "nns2", "inception_resnet_v1")
PRETRAINED = "pretrained"

_DEFAULT_SHAPES = {
    "nn1": zeiler_fergus.DEFAULT_INPUT_SHAPE,
    **{name: spec.input_shape for name, spec in inception.SPECS.items()},
    "inception_resnet_v1": inception_resnet_v1.DEFAULT_INPUT_SHAPE,
}

__all__ = ["ARCHITECTURES", "PRETRAINED", "build_model", "default_input_shape", "model_card"]


def _check_name(name):
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")


def default_input_shape(name: str) -> tuple:
    """The paper's input size for `name`, as (height, width, 3)."""
    _check_name(name)
    return tuple(_DEFAULT_SHAPES[name])


DEFAULT_EMBEDDING_DIM = 128


def build_model(name: str, embedding_dim: int | None = None, input_shape=None, seed=None,
                **options) -> keras.Model:
    """Builds architecture `name` with a linear projection to `embedding_dim` and L2 norm.

    seed: seeds Keras' weight initialisation (same seed, same weights). options go to the
    family's builder: use_batch_norm / dropout (paper models), dropout / bn_inference_only
    (inception_resnet_v1), those of facenet_tf.models.frozen_graph.build_pretrained_model for
    "pretrained", whose sizes are fixed (160x160 in, 512-D out) and whose weights are given.
    embedding_dim defaults to the paper's 128.
    """
    if name == PRETRAINED:
        fixed = {"embedding_dim": (embedding_dim, frozen_graph.EMBEDDING_DIM),
                 "input_shape": (None if input_shape is None else tuple(input_shape),
                                 frozen_graph.INPUT_SHAPE)}
        for arg, (given, size) in fixed.items():
            if given is not None and given != size:
                raise ValueError(f"the pretrained model's {arg} is {size}, got {given}")
        return frozen_graph.build_pretrained_model(**options)
    _check_name(name)
    if embedding_dim is None:
        embedding_dim = DEFAULT_EMBEDDING_DIM
    if not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"embedding_dim must be a positive int, got {embedding_dim!r}")
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(name)
    if len(shape) != 3 or shape[2] != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"input_shape must be (height, width, 3) with positive ints, "
                         f"got {input_shape!r}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    try:
        if name == "nn1":
            model = zeiler_fergus.build_nn1(shape, embedding_dim, **options)
        elif name == "inception_resnet_v1":
            model = inception_resnet_v1.build_inception_resnet_v1(shape, embedding_dim,
                                                                  **options)
        else:
            model = inception.build_inception(inception.SPECS[name], shape, embedding_dim,
                                              **options)
    except TypeError:
        raise
    except ValueError as e:
        raise ValueError(f"{name} cannot take input_shape {shape} (too small for its "
                         f"strided convolutions and pools?): {e}") from e
    _check_feature_map(name, model, shape)
    return model


def _check_feature_map(name, model, shape):
    """Rejects inputs whose feature maps collapse to zero size somewhere."""
    for layer in model.layers:
        out = layer.output.shape
        if any(d is not None and d <= 0 for d in out[1:]):
            raise ValueError(f"{name} cannot take input_shape {shape}: layer {layer.name} "
                             f"would output shape {tuple(out)}")
