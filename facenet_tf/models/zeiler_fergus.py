"""NN1: the paper's Zeiler&Fergus-based network with 1x1 convolutions (Table 1, 220x220).

Layer for layer as Table 1: conv1 7x7/2 64, pool, rnorm, conv2a 1x1 64, conv2 3x3 192,
rnorm, pool, conv3a/conv3 (192/384), pool, conv4a..conv6 (384/256, 256/256, 256/256), pool,
two maxout (p=2) fully connected layers of 4096 (= 32x128), then the 128-D projection.
Batch norm after each convolution is our addition (the paper predates it); disable it with
use_batch_norm=False.
"""

import keras
from keras import layers

from facenet_tf.models.layers import (
    LocalResponseNorm,
    Maxout,
    conv_bn_relu,
    embedding_head,
)

DEFAULT_INPUT_SHAPE = (220, 220, 3)

# (name, filters, kernel, stride) of Table 1's convolutions; "pool" = max pool 3x3/2.
_LAYERS = (
    ("conv1", 64, 7, 2), "pool", "rnorm",
    ("conv2a", 64, 1, 1), ("conv2", 192, 3, 1), "rnorm", "pool",
    ("conv3a", 192, 1, 1), ("conv3", 384, 3, 1), "pool",
    ("conv4a", 384, 1, 1), ("conv4", 256, 3, 1),
    ("conv5a", 256, 1, 1), ("conv5", 256, 3, 1),
    ("conv6a", 256, 1, 1), ("conv6", 256, 3, 1), "pool",
)


def build_nn1(input_shape=DEFAULT_INPUT_SHAPE, embedding_dim=128, use_batch_norm=True,
              fc_units=4096, maxout_pieces=2, dropout=0.0):
    """NN1 as a functional Keras model: standardised [B, H, W, 3] -> unit [B, embedding_dim]."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    n_pool = n_norm = 0
    for spec in _LAYERS:
        if spec == "pool":
            n_pool += 1
            x = layers.MaxPooling2D(3, 2, padding="same", name=f"pool{n_pool}")(x)
        elif spec == "rnorm":
            n_norm += 1
            x = LocalResponseNorm(name=f"rnorm{n_norm}")(x)
        else:
            name, filters, kernel, stride = spec
            x = conv_bn_relu(x, filters, kernel, stride, name=name, use_batch_norm=use_batch_norm)
    x = layers.Flatten(name="concat")(x)
    for i in (1, 2):
        x = layers.Dense(fc_units * maxout_pieces, name=f"fc{i}")(x)
        x = Maxout(maxout_pieces, name=f"fc{i}_maxout")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return keras.Model(inputs, embedding_head(x, embedding_dim), name="nn1")
