"""NN2/NN3/NN4 (the paper's Table 2, GoogLeNet-style Inception with L2 pooling) and the
small NNS1 ("mini") / NNS2 ("tiny") Inception variants for phones.

NN2 follows Table 2 module by module; NN3 and NN4 are the same network at 160x160 and 96x96.
The paper gives only size, parameter and FLOP figures for NNS1/NNS2, so their widths are
our choice (below), picked to land on those figures: NNS1 = Table 2's stem and 3a..4e
modules at half width, NNS2 = a 5x5 stem and three quarter-width modules; both keep the
last feature map's spatial layout (no average pool) and flatten it into a fully connected
layer (1,344 wide for NNS1, 864 for NNS2), which holds most of their parameters, as in NN1.
"""

import dataclasses

import keras
from keras import layers

from facenet_tf.models.layers import L2Pooling2D, conv_bn_relu, embedding_head


@dataclasses.dataclass(frozen=True)
class Module:
    """One Inception module row of Table 2 (0 = branch absent; stride 2 = reduction)."""
    name: str
    c1: int
    c3r: int
    c3: int
    c5r: int
    c5: int
    pool: str          # "max" or "l2"
    pool_proj: int     # 0 = the pooled input is passed through unprojected
    stride: int = 1


def _m(name, c1, c3r, c3, c5r, c5, pool, pool_proj, stride=1, width=1.0):
    w = lambda c: int(round(c * width))  # noqa: E731
    return Module(name, w(c1), w(c3r), w(c3), w(c5r), w(c5), pool, w(pool_proj), stride)


def nn2_modules(width=1.0):
    """Table 2's modules 3a..5b; `width` scales every filter count."""
    return (
        _m("3a", 64, 96, 128, 16, 32, "max", 32, width=width),
        _m("3b", 64, 96, 128, 32, 64, "l2", 64, width=width),
        _m("3c", 0, 128, 256, 32, 64, "max", 0, stride=2, width=width),
        _m("4a", 256, 96, 192, 32, 64, "l2", 128, width=width),
        _m("4b", 224, 112, 224, 32, 64, "l2", 128, width=width),
        _m("4c", 192, 128, 256, 32, 64, "l2", 128, width=width),
        _m("4d", 160, 144, 288, 32, 64, "l2", 128, width=width),
        _m("4e", 0, 160, 256, 64, 128, "max", 0, stride=2, width=width),
        _m("5a", 384, 192, 384, 48, 128, "l2", 128, width=width),
        _m("5b", 384, 192, 384, 48, 128, "max", 128, width=width),
    )


@dataclasses.dataclass(frozen=True)
class InceptionSpec:
    """A whole network: stem, modules, head."""
    name: str
    input_shape: tuple
    stem: tuple            # ("conv", filters, kernel, stride) | ("pool",)
    modules: tuple
    head: str = "avg"      # "avg" = global average pool; "flatten" = keep spatial layout
    fc_units: int = 0      # hidden fully connected layer before the projection (0 = none)


_NN2_STEM = (("conv", 64, 7, 2), ("pool",), ("conv", 64, 1, 1), ("conv", 192, 3, 1), ("pool",))

SPECS = {
    "nn2": InceptionSpec("nn2", (224, 224, 3), _NN2_STEM, nn2_modules()),
    "nn3": InceptionSpec("nn3", (160, 160, 3), _NN2_STEM, nn2_modules()),
    "nn4": InceptionSpec("nn4", (96, 96, 3), _NN2_STEM, nn2_modules()),
    # mini: half-width NN2 up to 4e (6x6x512 after 4e at 165x165), flatten, fc 1344.
    "nns1": InceptionSpec(
        "nns1", (165, 165, 3),
        (("conv", 32, 7, 2), ("pool",), ("conv", 32, 1, 1), ("conv", 96, 3, 1), ("pool",)),
        nn2_modules(0.5)[:8], head="flatten", fc_units=1344),
    # tiny: 5x5/2 stem of 16, pools, three quarter-width modules, flatten 5x4x240, fc 864.
    "nns2": InceptionSpec(
        "nns2", (140, 116, 3),
        (("conv", 16, 5, 2), ("pool",), ("conv", 32, 3, 1), ("pool",)),
        (_m("3a", 64, 96, 128, 16, 32, "max", 32, width=0.25),
         _m("3c", 0, 128, 256, 32, 64, "max", 0, stride=2, width=0.25),
         _m("4e", 0, 160, 256, 64, 128, "max", 0, stride=2, width=0.25)),
        head="flatten", fc_units=864),
}


def _inception_module(x, m: Module, use_batch_norm):
    """The four parallel branches of one module, concatenated on channels."""
    conv = lambda t, f, k, s, n: conv_bn_relu(  # noqa: E731
        t, f, k, s, name=f"inception_{m.name}_{n}", use_batch_norm=use_batch_norm)
    branches = []
    if m.c1:
        branches.append(conv(x, m.c1, 1, 1, "1x1"))
    if m.c3:
        branches.append(conv(conv(x, m.c3r, 1, 1, "3x3_reduce"), m.c3, 3, m.stride, "3x3"))
    if m.c5:
        branches.append(conv(conv(x, m.c5r, 1, 1, "5x5_reduce"), m.c5, 5, m.stride, "5x5"))
    if m.pool == "l2":
        p = L2Pooling2D(3, m.stride, "same", name=f"inception_{m.name}_l2pool")(x)
    else:
        p = layers.MaxPooling2D(3, m.stride, "same", name=f"inception_{m.name}_maxpool")(x)
    if m.pool_proj:
        p = conv(p, m.pool_proj, 1, 1, "pool_proj")
    branches.append(p)
    return layers.Concatenate(axis=-1, name=f"inception_{m.name}")(branches)


def build_inception(spec: InceptionSpec, input_shape=None, embedding_dim=128,
                    use_batch_norm=True, dropout=0.0):
    """An Inception embedding network from `spec`: [B, H, W, 3] -> unit [B, embedding_dim]."""
    inputs = keras.Input(shape=input_shape or spec.input_shape, name="image")
    x = inputs
    n_conv = n_pool = 0
    for step in spec.stem:
        if step[0] == "pool":
            n_pool += 1
            x = layers.MaxPooling2D(3, 2, padding="same", name=f"stem_pool{n_pool}")(x)
        else:
            n_conv += 1
            _, filters, kernel, stride = step
            x = conv_bn_relu(x, filters, kernel, stride, name=f"stem_conv{n_conv}",
                             use_batch_norm=use_batch_norm)
    for m in spec.modules:
        x = _inception_module(x, m, use_batch_norm)
    if spec.head == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    if spec.fc_units:
        x = layers.Dense(spec.fc_units, activation="relu", name="fc")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, embedding_head(x, embedding_dim), name=spec.name)
