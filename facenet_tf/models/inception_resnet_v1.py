"""Inception-ResNet-v1 (Szegedy et al. 2016) as used by the widely shared FaceNet models.

Layer names follow the TF-slim scopes of those models with "/" written as "__" (e.g.
"Repeat__block35_1__Branch_0__Conv2d_1x1_conv"), so `facenet_tf.models.frozen_graph` can map every
weight of the frozen graph by name. Each convolution is conv (no bias) + batch norm
(slim's: no scale, epsilon 1e-3) + ReLU; the residual up-projections have a bias and no
batch norm; the embedding is Bottleneck (dense, no bias) + batch norm, then L2.
"""

import keras
from keras import layers

from facenet_tf.models.layers import batch_norm, conv_bn_relu

DEFAULT_INPUT_SHAPE = (160, 160, 3)
SCOPE_SEP = "__"


def keras_name(scope: str) -> str:
    """Slim scope "Repeat/block35_1/Conv2d_1x1" -> Keras layer-name prefix."""
    return scope.replace("/", SCOPE_SEP)


class _Builder:
    def __init__(self, bn_inference_only):
        self.bn_inference_only = bn_inference_only

    def conv(self, x, filters, kernel, scope, strides=1, padding="same"):
        return conv_bn_relu(x, filters, kernel, strides, padding, name=keras_name(scope),
                            bn_inference_only=self.bn_inference_only)

    def residual(self, x, branches, scope, scale, activation=True):
        """x + scale * up_projection(concat(branches)), then ReLU unless the last block."""
        mixed = layers.Concatenate(name=keras_name(f"{scope}/concat"))(branches)
        up = layers.Conv2D(x.shape[-1], 1, padding="same", use_bias=True,
                           name=keras_name(f"{scope}/Conv2d_1x1") + "_conv")(mixed)
        up = layers.Rescaling(scale, name=keras_name(f"{scope}/mul"))(up)
        x = layers.Add(name=keras_name(f"{scope}/add"))([x, up])
        if activation:
            x = layers.Activation("relu", name=keras_name(f"{scope}/Relu"))(x)
        return x

    def block35(self, x, scope, scale=0.17):
        b0 = self.conv(x, 32, 1, f"{scope}/Branch_0/Conv2d_1x1")
        b1 = self.conv(x, 32, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
        b1 = self.conv(b1, 32, 3, f"{scope}/Branch_1/Conv2d_0b_3x3")
        b2 = self.conv(x, 32, 1, f"{scope}/Branch_2/Conv2d_0a_1x1")
        b2 = self.conv(b2, 32, 3, f"{scope}/Branch_2/Conv2d_0b_3x3")
        b2 = self.conv(b2, 32, 3, f"{scope}/Branch_2/Conv2d_0c_3x3")
        return self.residual(x, [b0, b1, b2], scope, scale)

    def block17(self, x, scope, scale=0.10):
        b0 = self.conv(x, 128, 1, f"{scope}/Branch_0/Conv2d_1x1")
        b1 = self.conv(x, 128, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
        b1 = self.conv(b1, 128, (1, 7), f"{scope}/Branch_1/Conv2d_0b_1x7")
        b1 = self.conv(b1, 128, (7, 1), f"{scope}/Branch_1/Conv2d_0c_7x1")
        return self.residual(x, [b0, b1], scope, scale)

    def block8(self, x, scope, scale=0.20, activation=True):
        b0 = self.conv(x, 192, 1, f"{scope}/Branch_0/Conv2d_1x1")
        b1 = self.conv(x, 192, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
        b1 = self.conv(b1, 192, (1, 3), f"{scope}/Branch_1/Conv2d_0b_1x3")
        b1 = self.conv(b1, 192, (3, 1), f"{scope}/Branch_1/Conv2d_0c_3x1")
        return self.residual(x, [b0, b1], scope, scale, activation)

    def reduction_a(self, x, scope="Mixed_6a"):
        b0 = self.conv(x, 384, 3, f"{scope}/Branch_0/Conv2d_1a_3x3", 2, "valid")
        b1 = self.conv(x, 192, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
        b1 = self.conv(b1, 192, 3, f"{scope}/Branch_1/Conv2d_0b_3x3")
        b1 = self.conv(b1, 256, 3, f"{scope}/Branch_1/Conv2d_1a_3x3", 2, "valid")
        b2 = layers.MaxPooling2D(3, 2, "valid",
                                 name=keras_name(f"{scope}/Branch_2/MaxPool_1a_3x3"))(x)
        return layers.Concatenate(name=keras_name(f"{scope}/concat"))([b0, b1, b2])

    def reduction_b(self, x, scope="Mixed_7a"):
        b0 = self.conv(x, 256, 1, f"{scope}/Branch_0/Conv2d_0a_1x1")
        b0 = self.conv(b0, 384, 3, f"{scope}/Branch_0/Conv2d_1a_3x3", 2, "valid")
        b1 = self.conv(x, 256, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
        b1 = self.conv(b1, 256, 3, f"{scope}/Branch_1/Conv2d_1a_3x3", 2, "valid")
        b2 = self.conv(x, 256, 1, f"{scope}/Branch_2/Conv2d_0a_1x1")
        b2 = self.conv(b2, 256, 3, f"{scope}/Branch_2/Conv2d_0b_3x3")
        b2 = self.conv(b2, 256, 3, f"{scope}/Branch_2/Conv2d_1a_3x3", 2, "valid")
        b3 = layers.MaxPooling2D(3, 2, "valid",
                                 name=keras_name(f"{scope}/Branch_3/MaxPool_1a_3x3"))(x)
        return layers.Concatenate(name=keras_name(f"{scope}/concat"))([b0, b1, b2, b3])


def build_inception_resnet_v1(input_shape=DEFAULT_INPUT_SHAPE, embedding_dim=128,
                              dropout=0.0, bn_inference_only=False):
    """[B, H, W, 3] standardised faces -> unit [B, embedding_dim] (the pretrained model: 512).

    bn_inference_only: every batch norm uses its moving statistics even when training
    (for fine-tuning pretrained weights); betas stay trainable.
    """
    b = _Builder(bn_inference_only)
    inputs = keras.Input(shape=input_shape, name="image")
    x = b.conv(inputs, 32, 3, "Conv2d_1a_3x3", 2, "valid")
    x = b.conv(x, 32, 3, "Conv2d_2a_3x3", 1, "valid")
    x = b.conv(x, 64, 3, "Conv2d_2b_3x3")
    x = layers.MaxPooling2D(3, 2, "valid", name="MaxPool_3a_3x3")(x)
    x = b.conv(x, 80, 1, "Conv2d_3b_1x1", 1, "valid")
    x = b.conv(x, 192, 3, "Conv2d_4a_3x3", 1, "valid")
    x = b.conv(x, 256, 3, "Conv2d_4b_3x3", 2, "valid")
    for i in range(1, 6):
        x = b.block35(x, f"Repeat/block35_{i}")
    x = b.reduction_a(x)
    for i in range(1, 11):
        x = b.block17(x, f"Repeat_1/block17_{i}")
    x = b.reduction_b(x)
    for i in range(1, 6):
        x = b.block8(x, f"Repeat_2/block8_{i}")
    x = b.block8(x, "Block8", scale=1.0, activation=False)
    x = layers.GlobalAveragePooling2D(name="Logits__AvgPool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="Logits__Dropout")(x)
    x = layers.Dense(embedding_dim, use_bias=False, name="Bottleneck")(x)
    x = batch_norm("Bottleneck__BatchNorm", bn_inference_only)(x)
    outputs = layers.UnitNormalization(axis=-1, dtype="float32", name="embeddings")(x)
    return keras.Model(inputs, outputs, name="inception_resnet_v1")
