"""Parameter count and multiply-add FLOPs per image of a Keras model.

FLOPs are counted by walking the layers (recursing into nested models): a convolution
costs out_h * out_w * kh * kw * (in_channels / groups) * out_channels multiply-adds, a
depthwise convolution out_h * out_w * kh * kw * channels * multiplier, a dense layer
in_features * units per position. Normalisation, activations, pooling and additions are
not counted (they are a few percent at most). This is the multiply-add convention of the
paper's FLOPS column; TF's profiler counts a multiply-add as 2 FLOPs, so the profiler's
figure for the same network is twice ours.
"""

import math

import keras
from keras import layers


def _spatial(shape):
    return math.prod(int(d) for d in shape[1:-1]) if len(shape) > 2 else 1


def layer_flops(layer) -> int:
    """Multiply-adds of one layer for a single image (0 for layers we do not count)."""
    if isinstance(layer, keras.Model):
        return sum(layer_flops(sub) for sub in layer.layers)
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw, cin, mult = layer.kernel.shape
        return _spatial(layer.output.shape) * kh * kw * cin * mult
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        kernel = layer.kernel.shape
        return _spatial(layer.output.shape) * math.prod(int(d) for d in kernel)
    if isinstance(layer, layers.Dense):
        fan_in, units = layer.kernel.shape
        return _spatial(layer.output.shape) * fan_in * units
    return 0


def model_card(network: keras.Model) -> dict:
    """{"params": total weights, "trainable_params": ..., "flops": multiply-adds per image}."""
    trainable = sum(math.prod(w.shape) for w in network.trainable_weights)
    return {"params": int(network.count_params()), "trainable_params": int(trainable),
            "flops": int(sum(layer_flops(layer) for layer in network.layers))}
