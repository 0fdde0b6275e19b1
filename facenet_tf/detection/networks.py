"""The three MTCNN networks (Zhang et al. 2016) as TF inference graphs, with the trained weights
that PyPI `mtcnn==1.0.0` ships inside its wheel.

The wheel stores each network as a joblib pickle (lz4-compressed) of a list of float32
arrays in layer order (LAYERS): a convolution or dense layer has a kernel and a bias, a PReLU
one slope per channel. The file is found through the distribution's file list, so the
`mtcnn` package itself (which builds its Keras models at import) is never imported.

The forward passes are plain TF ops rather than Keras layers: conv + bias_add lets grappler
fuse the bias into the convolution, and PReLU is two element-wise passes (see _prelu) instead
of Keras' five; on these small-channel networks that more than halves the time per image.

Layouts: inputs are RGB scaled to (x - 127.5) / 128. P-Net is fully convolutional (12x12
windows, stride 2): [B, h, w, 4] box offsets and [B, h, w, 2] softmax (index 1 = face).
R-Net (24x24 crops) and O-Net (48x48 crops) flatten their last feature map in (width,
height, channel) order, the order their dense weights were trained for.
"""

import importlib.metadata
import os

import joblib
import numpy as np
import tensorflow as tf

DISTRIBUTION = "mtcnn"
WEIGHTS_MEMBER = "mtcnn/assets/weights/{}.lz4"
NETWORK_NAMES = ("pnet", "rnet", "onet")

# (layer, number of arrays) in the order of each weights file.
LAYERS = {
    "pnet": (("conv1", 2), ("prelu1", 1), ("conv2", 2), ("prelu2", 1), ("conv3", 2),
             ("prelu3", 1), ("conv4_1", 2), ("conv4_2", 2)),
    "rnet": (("conv1", 2), ("prelu1", 1), ("conv2", 2), ("prelu2", 1), ("conv3", 2),
             ("prelu3", 1), ("fc4", 2), ("prelu4", 1), ("fc5_1", 2), ("fc5_2", 2)),
    "onet": (("conv1", 2), ("prelu1", 1), ("conv2", 2), ("prelu2", 1), ("conv3", 2),
             ("prelu3", 1), ("conv4", 2), ("prelu4", 1), ("fc5", 2), ("prelu5", 1),
             ("fc6_1", 2), ("fc6_2", 2), ("fc6_3", 2)),
}
# Shapes of the first array of each layer, to catch a wrong or different weights file.
KERNEL_SHAPES = {
    "pnet": {"conv1": (3, 3, 3, 10), "conv2": (3, 3, 10, 16), "conv3": (3, 3, 16, 32),
             "conv4_1": (1, 1, 32, 4), "conv4_2": (1, 1, 32, 2)},
    "rnet": {"conv1": (3, 3, 3, 28), "conv2": (3, 3, 28, 48), "conv3": (2, 2, 48, 64),
             "fc4": (576, 128), "fc5_1": (128, 4), "fc5_2": (128, 2)},
    "onet": {"conv1": (3, 3, 3, 32), "conv2": (3, 3, 32, 64), "conv3": (3, 3, 64, 64),
             "conv4": (2, 2, 64, 128), "fc5": (1152, 256), "fc6_1": (256, 4),
             "fc6_2": (256, 10), "fc6_3": (256, 2)},
}


class DetectorWeightsNotFoundError(FileNotFoundError):
    """The MTCNN weight files are neither in weights_dir nor in an installed mtcnn wheel."""


def weights_path(name: str, weights_dir: str | None = None) -> str:
    """Path of `<name>.lz4`: in weights_dir if given, else inside the installed mtcnn package."""
    if name not in NETWORK_NAMES:
        raise ValueError(f"network name must be one of {NETWORK_NAMES}, got {name!r}")
    if weights_dir:
        path = os.path.join(weights_dir, f"{name}.lz4")
        if not os.path.isfile(path):
            raise DetectorWeightsNotFoundError(f"{path}: no such MTCNN weights file")
        return path
    member = WEIGHTS_MEMBER.format(name)
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise DetectorWeightsNotFoundError(
            f"MTCNN weights {member}: the {DISTRIBUTION} package is not installed "
            f"(pip install mtcnn==1.0.0) and no weights_dir was given") from None
    for f in dist.files or ():
        if str(f).replace("\\", "/") == member:
            path = str(dist.locate_file(f))
            if os.path.isfile(path):
                return path
    raise DetectorWeightsNotFoundError(
        f"installed {DISTRIBUTION} {dist.version} has no {member} (mtcnn==1.0.0 ships it)")


def load_weights(name: str, weights_dir: str | None = None) -> dict:
    """{layer: [arrays]} of network `name`; raises naming the file and layer on any mismatch."""
    path = weights_path(name, weights_dir)
    arrays = joblib.load(path)
    if not isinstance(arrays, list):
        raise ValueError(f"{path}: expected a list of arrays, got {type(arrays).__name__}")
    wanted = sum(n for _, n in LAYERS[name])
    if len(arrays) != wanted:
        raise ValueError(f"{path}: {len(arrays)} arrays, {name} has {wanted}")
    layers, position = {}, 0
    for layer, n in LAYERS[name]:
        layers[layer] = [np.asarray(a, np.float32) for a in arrays[position:position + n]]
        position += n
        expected = KERNEL_SHAPES[name].get(layer)
        if expected and layers[layer][0].shape != expected:
            raise ValueError(f"{path}: {name} layer {layer} kernel shape "
                             f"{layers[layer][0].shape} != {expected}")
    return layers


def _prelu(x, slope):
    """PReLU in two element-wise passes where every slope is at most 1: max(x, slope * x) is
    then x above 0 and slope * x below, the very values select(x > 0, x, slope * x) gives (up
    to the sign of a zero), without its boolean tensor and broadcasting select (a fifth of the
    index job's CPU time). Layers with a slope above 1 take max(x, 0) + slope * min(x, 0),
    exact as well."""
    at_most_one = bool(np.all(slope.numpy() <= 1.0))
    slope = tf.reshape(slope, [-1])
    if at_most_one:
        return tf.maximum(x, slope * x)
    return tf.maximum(x, 0.0) + slope * tf.minimum(x, 0.0)


def _on_nonempty_batch(network, x):
    """Runs `network` on crops x [n, s, s, 3] with one black crop appended, dropping its
    outputs: TF 2.21's CPU Conv2D returns its INPUT unchanged for an empty batch on some CPUs
    (seen on AVX-only AMD EPYC: [0, 24, 24, 3] in, [0, 24, 24, 3] out), which breaks the
    layers after it when no candidate box survives."""
    x = tf.convert_to_tensor(x, tf.float32)
    n = tf.shape(x)[0]
    padded = tf.concat([x, tf.zeros([1] + x.shape[1:].as_list(), x.dtype)], axis=0)
    return tuple(output[:n] for output in network(padded))


class MtcnnNetworks(tf.Module):
    """P-Net, R-Net and O-Net forward passes over the stored weights, held as constants (they
    never change; as variables, their reads and control edges made tracing the cascade take
    0.51 s instead of 0.32 s, paid by every job worker and command at start-up)."""

    def __init__(self, weights_dir: str | None = None):
        super().__init__(name="mtcnn_networks")
        self.weights = {
            name: {layer: [tf.constant(a, name=f"{name}_{layer}_{i}")
                           for i, a in enumerate(arrays)]
                   for layer, arrays in load_weights(name, weights_dir).items()}
            for name in NETWORK_NAMES}

    def _conv(self, net, layer, x, activation=True):
        kernel, bias = self.weights[net][layer]
        x = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "VALID"), bias)
        return _prelu(x, self.weights[net]["prelu" + layer[4:]][0]) if activation else x

    def _dense(self, net, layer, x):
        kernel, bias = self.weights[net][layer]
        return tf.nn.bias_add(tf.matmul(x, kernel), bias)

    def _flatten_dense_prelu(self, net, layer, x):
        """(width, height, channel)-order flatten, dense, PReLU."""
        x = tf.transpose(x, [0, 2, 1, 3])
        x = tf.reshape(x, [tf.shape(x)[0], x.shape[1] * x.shape[2] * x.shape[3]])
        return _prelu(self._dense(net, layer, x), self.weights[net]["prelu" + layer[2:]][0])

    def pnet(self, x):
        """[B, H, W, 3] -> (offsets [B, h, w, 4], probabilities [B, h, w, 2])."""
        x = tf.nn.max_pool2d(self._conv("pnet", "conv1", x), 2, 2, "SAME")
        x = self._conv("pnet", "conv3", self._conv("pnet", "conv2", x))
        return (self._conv("pnet", "conv4_1", x, activation=False),
                tf.nn.softmax(self._conv("pnet", "conv4_2", x, activation=False)))

    def rnet(self, x):
        """[n, 24, 24, 3] -> (offsets [n, 4], probabilities [n, 2])."""
        return _on_nonempty_batch(self._rnet, x)

    def onet(self, x):
        """[n, 48, 48, 3] -> (offsets [n, 4], landmarks [n, 10] as x1..x5, y1..y5 fractions of
        the crop, probabilities [n, 2])."""
        return _on_nonempty_batch(self._onet, x)

    def _rnet(self, x):
        x = tf.nn.max_pool2d(self._conv("rnet", "conv1", x), 3, 2, "SAME")
        x = tf.nn.max_pool2d(self._conv("rnet", "conv2", x), 3, 2, "VALID")
        x = self._flatten_dense_prelu("rnet", "fc4", self._conv("rnet", "conv3", x))
        return self._dense("rnet", "fc5_1", x), tf.nn.softmax(self._dense("rnet", "fc5_2", x))

    def _onet(self, x):
        x = tf.nn.max_pool2d(self._conv("onet", "conv1", x), 3, 2, "SAME")
        x = tf.nn.max_pool2d(self._conv("onet", "conv2", x), 3, 2, "VALID")
        x = tf.nn.max_pool2d(self._conv("onet", "conv3", x), 2, 2, "SAME")
        x = self._flatten_dense_prelu("onet", "fc5", self._conv("onet", "conv4", x))
        return (self._dense("onet", "fc6_1", x), self._dense("onet", "fc6_2", x),
                tf.nn.softmax(self._dense("onet", "fc6_3", x)))
