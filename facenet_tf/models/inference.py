"""A model rewritten for serving: batch norm folded into convolutions, weights as constants.

Training keeps batch norm as separate, trainable layers; at inference it is a per-channel affine
map that can be folded into the preceding convolution or dense layer (W' = W * s,
b' = (b - mean) * s + beta), as the original FaceNet frozen graphs do. Freezing the weights
into graph constants then lets oneDNN keep its reordered filters between calls, and XLA compile
the whole network; small batches (latency-bound) run the XLA build, large batches
(compute-bound) the oneDNN graph, which is faster there.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

# The TF2 freezing pass; TensorFlow exposes no public alias for it (TFLite uses it too).
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

# Batches up to this size run the XLA build (about 1.1x the oneDNN graph at batch 1 on the
# pretrained Inception-ResNet-v1 here); larger ones the oneDNN graph (about 1.3x XLA at 64).
XLA_MAX_BATCH = 8


def _linear_producer(affine_layer):
    """The Conv2D / Dense layer whose output only `affine_layer` reads, else None."""
    if len(affine_layer._inbound_nodes) != 1:
        return None
    parents = affine_layer._inbound_nodes[0].parent_nodes
    if len(parents) != 1:
        return None
    producer = parents[0].operation
    if type(producer) not in (layers.Conv2D, layers.Dense):
        return None
    if len(producer._inbound_nodes) != 1 or len(producer._outbound_nodes) != 1:
        return None
    if producer.activation not in (None, keras.activations.linear):
        return None
    if isinstance(producer, layers.Conv2D) and producer.data_format != "channels_last":
        return None
    return producer


def _affine(layer, channels):
    """(scale, offset) per output channel if `layer` is a foldable affine map, else None."""
    if isinstance(layer, layers.BatchNormalization):
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            return None
        gamma = layer.gamma.numpy() if layer.scale else np.ones(channels, np.float32)
        beta = layer.beta.numpy() if layer.center else np.zeros(channels, np.float32)
        scale = gamma / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
        return scale, beta - layer.moving_mean.numpy() * scale
    if type(layer) is layers.Rescaling:
        scale = np.broadcast_to(np.asarray(layer.scale, np.float32), (channels,))
        offset = np.broadcast_to(np.asarray(layer.offset, np.float32), (channels,))
        return scale, offset
    return None


def _replace_history(node, renames):
    """Points every tensor reference [layer_name, node, index] at renamed layers."""
    if isinstance(node, dict):
        return {k: _replace_history(v, renames) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        if (len(node) == 3 and isinstance(node[0], str) and node[0] in renames
                and all(isinstance(i, int) for i in node[1:])):
            return [renames[node[0]], *node[1:]]
        return [_replace_history(v, renames) for v in node]
    return node


def fold_batch_norm(network: keras.Model) -> tuple[keras.Model, int]:
    """A copy of a functional `network` with every batch norm (and constant rescaling) that
    directly follows a linear convolution or dense layer folded into it.

    Returns (folded network, number of layers folded away). Outputs equal the original's in
    inference mode up to float rounding. Layers that cannot be folded (a batch norm after a
    ReLU, a convolution read by two layers) are kept as they are.
    """
    config = network.get_config()
    if not isinstance(config, dict) or "layers" not in config:
        raise ValueError(f"fold_batch_norm needs a functional Keras network, got {type(network)}")
    folds = {}  # affine layer name -> (producer, scale, offset)
    for layer in network.layers:
        if not (isinstance(layer, layers.BatchNormalization) or type(layer) is layers.Rescaling):
            continue
        producer = _linear_producer(layer)
        if producer is None:
            continue
        channels = producer.kernel.shape[-1]
        affine = _affine(layer, channels)
        if affine is not None:
            folds[layer.name] = (producer, *affine)
    producers = {p.name for p, _, _ in folds.values()}
    kept = []
    for entry in config["layers"]:
        if entry["name"] in folds:
            continue
        if entry["name"] in producers:
            entry["config"]["use_bias"] = True
        kept.append(entry)
    config["layers"] = kept
    config = _replace_history(config, {name: p.name for name, (p, _, _) in folds.items()})
    # The network's own layer classes, so that custom layers need no Keras registration.
    custom_objects = {type(layer).__name__: type(layer) for layer in network.layers}
    folded = network.__class__.from_config(config, custom_objects=custom_objects)

    by_producer = {p.name: (scale, offset) for p, scale, offset in folds.values()}
    for layer in folded.layers:
        source = network.get_layer(layer.name)
        if layer.name not in by_producer:
            layer.set_weights(source.get_weights())
            continue
        scale, offset = by_producer[layer.name]
        bias = source.bias.numpy() if source.use_bias else 0.0
        layer.set_weights([source.kernel.numpy() * scale, bias * scale + offset])
    return folded, len(folds)


def inference_function(network: keras.Model, image_size=None, xla_max_batch: int | None = None):
    """A `tf.function` float32 pixels [batch, h, w, c] -> L2-normalised float32 embeddings,
    computing what `network(pixels, training=False)` does with the network folded and frozen.

    Batches of up to `xla_max_batch` images run an XLA-compiled build (compiled once per batch
    size), larger ones the plain graph; 0 turns XLA off, None means XLA_MAX_BATCH. The
    returned function holds no variables, so it also serves as a SavedModel signature.
    """
    xla_max_batch = XLA_MAX_BATCH if xla_max_batch is None else int(xla_max_batch)
    folded, _ = fold_batch_norm(network)
    shape = network.input_shape
    h, w = image_size or shape[1:3]
    if h is None or w is None:
        raise ValueError(f"network {network.name!r} has no fixed input size; pass image_size")
    spec = tf.TensorSpec([None, int(h), int(w), shape[-1]], tf.float32, name="pixels")

    def forward(pixels):
        out = folded(pixels, training=False)
        return tf.math.l2_normalize(tf.cast(out, tf.float32), axis=-1)

    frozen = convert_variables_to_constants_v2(
        tf.function(forward, input_signature=[spec]).get_concrete_function())

    def graph(pixels):
        return frozen(pixels)[0]

    compiled = tf.function(graph, jit_compile=True)

    @tf.function(input_signature=[spec])
    def embed(pixels):
        if xla_max_batch <= 0:
            return graph(pixels)
        small = tf.shape(pixels)[0] <= xla_max_batch
        return tf.cond(small, lambda: compiled(pixels), lambda: graph(pixels))

    return embed
