"""Layers the paper's networks need that Keras lacks (L2 pooling, maxout, LRN), and the
shared embedding head: linear projection then L2 normalisation, always in float32."""

import keras
import tensorflow as tf
from keras import layers, ops


@keras.saving.register_keras_serializable(package="facenet_tf")
class L2Pooling2D(layers.Layer):
    """sqrt(mean of x^2 over each window): the paper's "L2" pooling (Table 2)."""

    def __init__(self, pool_size=3, strides=1, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides, self.padding = pool_size, strides, padding
        self._avg = layers.AveragePooling2D(pool_size, strides, padding, dtype=self.dtype_policy)

    def call(self, x):
        # The epsilon keeps the gradient of sqrt finite where a window is all zero. x * x rather
        # than ops.square: the same float32 value, and TFLite has an int8 MUL but no int8 SQUARE.
        return ops.sqrt(self._avg(x * x) + 1e-6)

    def compute_output_shape(self, input_shape):
        return self._avg.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}


@keras.saving.register_keras_serializable(package="facenet_tf")
class Maxout(layers.Layer):
    """Max over `pieces` consecutive features: [B, units * pieces] -> [B, units] (NN1's fc)."""

    def __init__(self, pieces=2, **kwargs):
        super().__init__(**kwargs)
        self.pieces = pieces

    def call(self, x):
        units = x.shape[-1] // self.pieces
        return ops.max(ops.reshape(x, (-1, units, self.pieces)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] // self.pieces)

    def get_config(self):
        return {**super().get_config(), "pieces": self.pieces}


@keras.saving.register_keras_serializable(package="facenet_tf")
class LocalResponseNorm(layers.Layer):
    """Cross-channel local response normalisation ("rnorm" in the paper's Table 1)."""

    def __init__(self, depth_radius=2, bias=1.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, x):
        return tf.nn.local_response_normalization(x, self.depth_radius, self.bias, self.alpha,
                                                  self.beta)

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="facenet_tf")
class InferenceBatchNormalization(layers.BatchNormalization):
    """Batch norm that always uses its moving statistics, even in training, so that
    fine-tuning keeps the pretrained statistics while beta stays trainable."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def batch_norm(name, inference_only=False, **kwargs):
    """The batch norm used after every convolution (slim's defaults: no scale, eps 1e-3)."""
    cls = InferenceBatchNormalization if inference_only else layers.BatchNormalization
    kwargs.setdefault("momentum", 0.995)
    kwargs.setdefault("epsilon", 1e-3)
    kwargs.setdefault("scale", False)
    return cls(name=name, **kwargs)


def conv_bn_relu(x, filters, kernel_size, strides=1, padding="same", name=None,
                 use_batch_norm=True, bn_inference_only=False):
    """Convolution, then batch norm (if enabled), then ReLU."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                      use_bias=not use_batch_norm, name=f"{name}_conv")(x)
    if use_batch_norm:
        x = batch_norm(f"{name}_bn", bn_inference_only)(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def embedding_head(features, embedding_dim, name="embedding"):
    """Linear projection to `embedding_dim`, then ||f(x)|| = 1, computed in float32."""
    x = layers.Dense(embedding_dim, name=f"{name}_projection")(features)
    return layers.UnitNormalization(axis=-1, dtype="float32", name=f"{name}_l2")(x)
