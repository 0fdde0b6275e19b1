"""Loads a face model to embed with: a SavedModel from facenet_tf.serving.saved_model, a `.keras`
file, or a `.tflite` file from facenet_tf.serving.tflite (run by LiteRT through
facenet_tf.serving.tflite_runtime). Each comes back as an `Embedder` that turns pixels or encoded
images into numpy arrays."""

import dataclasses
import functools
import json
import os

import keras
import numpy as np
import tensorflow as tf

# Registers the project's custom layers with Keras, so `.keras` files that use them load.
import facenet_tf.models  # noqa: F401
from facenet_tf.data import preprocess as pp
from facenet_tf.models import frozen_graph
from facenet_tf.models.inference import inference_function
from facenet_tf.serving import tflite_runtime
from facenet_tf.serving.saved_model import (
    METADATA_FILE,
    METADATA_VERSION,
    SIGNATURE_BYTES,
    SIGNATURE_PIXELS,
    model_image_size,
    weights_fingerprint,
)

# The name load_embedder takes for the converted pretrained FaceNet.
PRETRAINED = "pretrained"


class Embedder:
    """A loaded face model: embeds standardised pixels or encoded images into numpy arrays.

    rows_independent: whether an image's embedding is the same, to the bit, whatever else is
    in its batch (TensorFlow's CPU kernels: not always, by float rounding; LiteRT: yes).

    pixels_fn: float32 [B, H, W, 3] standardised pixels -> [B, D] embeddings. bytes_fn: the
    model's own in-graph decode + preprocess + embed (valid for `preprocess` only), if it has
    one. network: the Keras network when loaded from a `.keras` file (else None); keepalive: what
    must stay referenced while the functions are used (the loaded SavedModel).
    """

    rows_independent = False

    def __init__(self, pixels_fn, preprocess: pp.PreprocessConfig, metadata: dict,
                 fingerprint: str, embedding_dim: int, bytes_fn=None, source: str = "",
                 network=None, keepalive=None):
        self._pixels_fn = pixels_fn
        self._bytes_fn = bytes_fn
        self.preprocess = preprocess
        self.metadata = metadata
        self.fingerprint = fingerprint
        self.embedding_dim = embedding_dim
        self.source = source
        self.network = network
        self._keepalive = keepalive
        self._preprocess_batch = tf.function(
            self._decode_batch, input_signature=[tf.TensorSpec([None], tf.string)],
            autograph=False)
        # Decoding and embedding in one call: no pixel round trip through NumPy.
        self._encoded_fn = tf.function(
            lambda images: pixels_fn(self._decode_batch(images)),
            input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)

    def _decode_batch(self, images):
        return tf.map_fn(
            lambda b: pp.preprocess_encoded(b, self.preprocess), images,
            fn_output_signature=tf.TensorSpec([*self.preprocess.image_size, 3], tf.float32),
            parallel_iterations=max(2, os.cpu_count() or 1))

    @property
    def threshold(self) -> float | None:
        return self.metadata.get("threshold")

    def with_preprocess(self, preprocess: pp.PreprocessConfig | None) -> "Embedder":
        """The same weights with other preprocessing (encoded images are then preprocessed
        outside the model's serving graph); itself when `preprocess` is None or the same."""
        if preprocess is None or preprocess == self.preprocess:
            return self
        return Embedder(self._pixels_fn, preprocess, dict(self.metadata), self.fingerprint,
                        self.embedding_dim, source=self.source, network=self.network,
                        keepalive=self)

    def embed_pixels(self, pixels, flip: bool = False) -> np.ndarray:
        """float32 [B, H, W, 3] standardised pixels -> float32 [B, D] unit embeddings.

        flip averages each embedding with its mirror image's and re-normalises."""
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 4 or tuple(pixels.shape[1:3]) != self.preprocess.image_size:
            raise ValueError(f"expected pixels [batch, {self.preprocess.image_size[0]}, "
                             f"{self.preprocess.image_size[1]}, 3], got {pixels.shape}")
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        emb = np.asarray(self._pixels_fn(tf.convert_to_tensor(pixels)))
        if flip:
            emb = emb + np.asarray(self._pixels_fn(tf.convert_to_tensor(pixels[:, :, ::-1])))
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb.astype(np.float32)

    def embed_faces(self, faces, batch_size: int = 64, flip: bool = False) -> np.ndarray:
        """Face crops -> float32 [N, D] unit embeddings.

        faces: uint8 [N, S, S, 3] (or [N, S, S] grey) face crops such as find_faces gives,
        taken whole: resized to the model's input and standardised as the model was trained,
        with no further centre crop. flip: as embed_pixels."""
        faces = np.asarray(faces)
        if faces.ndim == 3:
            faces = np.repeat(faces[..., None], 3, axis=-1)
        if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
            raise ValueError(f"expected uint8 face crops [faces, height, width, 3], got "
                             f"{faces.dtype} {faces.shape}")
        convert = _crops_to_inputs(dataclasses.replace(self.preprocess, crop_fraction=1.0))
        out = [self.embed_pixels(convert(tf.constant(faces[i:i + batch_size])).numpy(), flip)
               for i in range(0, len(faces), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.embedding_dim), np.float32)

    def embed_encoded(self, images) -> np.ndarray:
        """A list of encoded JPEG/PNG/GIF/BMP bytes -> [B, D] embeddings."""
        images = list(images)
        if not images:
            return np.zeros((0, self.embedding_dim), np.float32)
        images = tf.constant(images, dtype=tf.string)
        if self._bytes_fn is not None:
            return np.asarray(self._bytes_fn(images))
        return np.asarray(self._encoded_fn(images))

    def preprocess_encoded(self, images) -> np.ndarray:
        """A list of encoded images -> float32 [B, H, W, 3] model inputs (this embedder's
        preprocessing); raises tf.errors.OpError if one does not decode."""
        return np.asarray(self._preprocess_batch(tf.constant(list(images), dtype=tf.string)))


@functools.lru_cache(maxsize=8)
def _crops_to_inputs(preprocess: pp.PreprocessConfig):
    """A tf.function: uint8 crops [n, S, S, 3] -> the model inputs [n, h, w, 3] under
    `preprocess` (what decoding them from lossless PNG would give)."""
    spec = tf.TensorSpec([*preprocess.image_size, 3], tf.float32)
    return tf.function(
        lambda crops: tf.map_fn(lambda crop: pp.preprocess_image(crop, preprocess), crops,
                                fn_output_signature=spec),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])


def _signature_output(fn, **kwargs):
    return fn(**kwargs)["embeddings"]


def _load_saved_model(path: str, preprocess: pp.PreprocessConfig | None) -> Embedder:
    meta_path = os.path.join(path, METADATA_FILE)
    if not tf.io.gfile.exists(meta_path):
        raise ValueError(f"{path}: a SavedModel but not a facenet_tf export (no {METADATA_FILE});"
                         " export it with facenet_tf.export")
    with tf.io.gfile.GFile(meta_path, "r") as f:
        metadata = json.load(f)
    loaded = tf.saved_model.load(path)
    missing = {SIGNATURE_BYTES, SIGNATURE_PIXELS} - set(loaded.signatures)
    if missing:
        raise ValueError(f"{path}: SavedModel lacks signatures {sorted(missing)}")
    baked = pp.PreprocessConfig.from_dict(metadata["preprocess"])
    preprocess = preprocess or baked
    pixels_sig = loaded.signatures[SIGNATURE_PIXELS]
    bytes_sig = loaded.signatures[SIGNATURE_BYTES]
    return Embedder(
        pixels_fn=lambda x: _signature_output(pixels_sig, pixels=x),
        bytes_fn=(lambda b: _signature_output(bytes_sig, images=b)) if preprocess == baked
        else None,
        preprocess=preprocess, metadata=metadata, fingerprint=metadata["fingerprint"],
        embedding_dim=int(metadata["embedding_dim"]), source=path, keepalive=loaded)


def network_embedder(network: keras.Model, preprocess: pp.PreprocessConfig | None = None,
                     threshold: float | None = None, source: str = "",
                     xla_max_batch: int | None = None) -> Embedder:
    """An in-memory Keras network as an Embedder (the network in `.network`), served by the
    same folded inference graph as an export. preprocess defaults to the network's input size
    with "fixed" standardisation and no crop."""
    if preprocess is None:
        h, w = model_image_size(network)
        if h is None or w is None:
            raise ValueError(f"{source or network.name}: the network has no fixed input size; "
                             "pass a PreprocessConfig")
        preprocess = pp.PreprocessConfig(image_size=(h, w), standardization="fixed")
    fn = inference_function(network, preprocess.image_size, xla_max_batch)
    metadata = {"format_version": METADATA_VERSION, "input_size": list(preprocess.image_size),
                "preprocess": preprocess.to_dict(),
                "embedding_dim": int(network.output_shape[-1]), "step": None,
                "threshold": threshold, "fingerprint": weights_fingerprint(network),
                "model_name": network.name, "source": source}
    return Embedder(pixels_fn=fn, preprocess=preprocess, metadata=metadata,
                    fingerprint=metadata["fingerprint"],
                    embedding_dim=metadata["embedding_dim"], source=source, network=network)


def load_keras_embedder(path: str, preprocess: pp.PreprocessConfig | None = None,
                        xla_max_batch: int | None = None) -> Embedder:
    """A `.keras` file as an Embedder (its Keras network in `.network`); see load_embedder."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no such .keras file")
    with tf.io.gfile.GFile(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # a .keras file is a zip archive
            raise ValueError(f"{path}: not a .keras file (not a zip archive)")
    try:
        network = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise ValueError(f"{path}: cannot load as a Keras model: {e}") from e
    return network_embedder(network, preprocess, source=path, xla_max_batch=xla_max_batch)


def load_pretrained_embedder(xla_max_batch: int | None = None) -> Embedder:
    """The pretrained FaceNet (facenet_tf.models.frozen_graph: Inception-ResNet-v1, 512-D) as
    an Embedder, with its preprocessing and the threshold measured for aligned faces. Builds
    the network from the frozen graph (about 8 s on 2 cores); the same weights, fingerprint
    and embeddings as the export of `python -m facenet_tf.pretrained`."""
    network = frozen_graph.build_pretrained_model()
    return network_embedder(network, frozen_graph.PRETRAINED_PREPROCESS,
                            threshold=frozen_graph.ALIGNED_FACE_THRESHOLD,
                            source=PRETRAINED, xla_max_batch=xla_max_batch)


class TFLiteEmbedder(Embedder):
    """An exported .tflite model behind the Embedder surface (preprocess, embedding_dim,
    threshold, fingerprint, embed_pixels, embed_encoded), run by LiteRT: `lite` is the
    TensorFlow-free tflite_runtime.LiteRTEmbedder it wraps (its runner, metadata, variant).
    Encoded images are preprocessed by TensorFlow here, as for the other embedders. The
    fingerprint is the source weights' for the float32 file (same embeddings as the
    SavedModel, to float rounding) and that plus "-int8" for the int8 file."""

    rows_independent = True

    def __init__(self, lite: tflite_runtime.LiteRTEmbedder):
        self.lite = lite
        self.runner = lite.runner
        self.variant = lite.variant
        self.num_threads = lite.num_threads
        dim = lite.embedding_dim

        def pixels_fn(pixels):
            out = tf.numpy_function(lite.embed_pixels, [pixels], tf.float32, stateful=True)
            out.set_shape([None, dim])
            return out

        super().__init__(pixels_fn=pixels_fn,
                         preprocess=pp.PreprocessConfig.from_dict(lite.metadata["preprocess"]),
                         metadata=lite.metadata, fingerprint=lite.fingerprint,
                         embedding_dim=dim, source=lite.model_path)


def load_tflite_embedder(path, num_threads: int | None = None) -> TFLiteEmbedder:
    """A TFLiteEmbedder of a local .tflite file written by export_tflite (its metadata JSON is
    read from beside it). num_threads: LiteRT interpreter threads (None: LiteRT's default, 1)."""
    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        found = sorted(n for n in tf.io.gfile.listdir(path) if n.endswith(".tflite"))
        raise ValueError(f"{path}: a directory; pass one of its .tflite files ({found})")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no such .tflite file")
    return TFLiteEmbedder(tflite_runtime.LiteRTEmbedder(path, num_threads=num_threads))


def load_embedder(model, preprocess: pp.PreprocessConfig | None = None,
                  xla_max_batch: int | None = None) -> Embedder:
    """Loads a model to embed with: a SavedModel written by facenet_tf.export, a Keras `.keras`
    file, a `.tflite` file written by facenet_tf.serving.tflite.export_tflite (with its
    metadata beside it), or the name "pretrained" (load_pretrained_embedder).

    `preprocess` overrides the export's preprocessing (then encoded images are preprocessed
    outside the serving graph); for a `.keras` file it defaults to the model's input size with
    "fixed" standardisation and no crop. `xla_max_batch` (`.keras` only; default
    facenet_tf.models.inference.XLA_MAX_BATCH): batches up to this size run XLA-compiled; 0
    leaves out the XLA build, for callers whose batches are always larger (it costs start-up).
    An Embedder passed in is returned with `preprocess` applied.
    """
    if isinstance(model, Embedder):
        return model.with_preprocess(preprocess)
    if model == PRETRAINED:
        return load_pretrained_embedder(xla_max_batch).with_preprocess(preprocess)
    path = os.fspath(model)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no such model (expected a SavedModel directory from "
                                "facenet_tf.export, a .keras or .tflite file, or 'pretrained')")
    if tf.io.gfile.isdir(path):
        if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path}: a directory without saved_model.pb, not a SavedModel")
        return _load_saved_model(path, preprocess)
    if path.endswith(".keras"):
        return load_keras_embedder(path, preprocess, xla_max_batch)
    if path.endswith(".tflite"):
        return load_tflite_embedder(path).with_preprocess(preprocess)
    raise ValueError(f"{path}: not a model (expected a SavedModel directory, a .keras or a "
                     ".tflite file)")
