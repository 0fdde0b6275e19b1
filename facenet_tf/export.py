"""The one SavedModel exporter and loader of facenet_tf.

An export has two signatures: `serving_default` (a batch of encoded JPEG/PNG/GIF/BMP bytes ->
L2-normalised embeddings; decode, center crop, resize and standardisation run in the graph with
facenet_tf.data.preprocess, exactly as in training) and `embed` (already standardised float
pixels -> embeddings). Its metadata (input size, preprocessing, embedding dim, training step,
recommended threshold, weight fingerprint, run info) is in assets.extra/facenet_tf.json and in
the loaded object's `metadata_json` variable.

Usage: python -m facenet_tf.export --checkpoint model.keras --export_dir DIR
       python -m facenet_tf.export --checkpoint MODEL_DIR/best --export_dir DIR
"""

import hashlib
import json
import os
import uuid

import numpy as np
import tensorflow as tf

from facenet_tf import runinfo
from facenet_tf.data import preprocess as pp

METADATA_FILE = os.path.join("assets.extra", "facenet_tf.json")
METADATA_VERSION = 1
SIGNATURE_BYTES = "serving_default"
SIGNATURE_PIXELS = "embed"


def weights_fingerprint(model) -> str:
    """A stable id of a model's weights: sha256 over every weight's shape and bytes."""
    h = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(np.asarray(w.numpy() if hasattr(w, "numpy") else w))
        h.update(str(value.shape).encode() + str(value.dtype).encode())
        h.update(value.tobytes())
    return h.hexdigest()[:16]


def _check_decodable(encoded, index):
    head = tf.strings.substr(encoded, 0, 4)
    ok = tf.reduce_any(tf.stack([tf.strings.substr(head, 0, len(m)) == m
                                 for m in pp.DECODABLE_MAGIC]))
    return tf.debugging.Assert(ok, [
        tf.strings.format("image {} of the request is not a JPEG, PNG, GIF or BMP "
                          "(first bytes {}); send encoded image bytes", (index, head))])


class _ExportModule(tf.Module):
    """The exported object: preprocessing-in-graph signatures over the embedding network.

    optimize=True serves the network with batch norm folded and weights frozen into the graph
    (facenet_tf.models.inference; no variables are saved); False serves the Keras model itself.
    """

    def __init__(self, model, preprocess: pp.PreprocessConfig, metadata: dict, optimize: bool,
                 xla_max_batch: int):
        super().__init__(name="facenet_tf_export")
        self.metadata_json = tf.Variable(json.dumps(metadata, sort_keys=True), trainable=False,
                                         name="metadata_json")
        h, w = preprocess.image_size
        if optimize:
            from facenet_tf.models.inference import inference_function
            embed = inference_function(model, (h, w), xla_max_batch)
        else:
            self.model = model

            @tf.function(input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32,
                                                        name="pixels")])
            def embed(pixels):
                out = self.model(pixels, training=False)
                return tf.math.l2_normalize(tf.cast(out, tf.float32), axis=-1)

        @tf.function(input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32, name="pixels")])
        def embed_signature(pixels):
            return {"embeddings": embed(pixels)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve_bytes(images):
            def one(args):
                encoded, index = args
                with tf.control_dependencies([_check_decodable(encoded, index)]):
                    return pp.preprocess_encoded(encoded, preprocess)

            n = tf.shape(images)[0]
            pixels = tf.map_fn(one, (images, tf.range(n)),
                               fn_output_signature=tf.TensorSpec([h, w, 3], tf.float32))
            return embed_signature(pixels)

        self.embed = embed_signature
        self.serve_bytes = serve_bytes
        # The tf.Variables the traced graphs read (not the Keras wrappers): tracked explicitly
        # so TF1-style loaders (saved_model_cli, TF Serving) restore them too.
        used = {}
        for fn in (embed_signature, serve_bytes):
            for v in fn.get_concrete_function().variables:
                used.setdefault(id(v), v)
        self.graph_variables = list(used.values())


def _model_image_size(model):
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        shape = shape[0]
    if shape is None or len(shape) != 4:
        raise ValueError(f"model {model.name!r} must take [batch, height, width, 3] images, "
                         f"its input shape is {shape}")
    return shape[1], shape[2]


def export_saved_model(model, export_dir: str, preprocess: pp.PreprocessConfig, *,
                       step: int | None = None, threshold: float | None = None,
                       extra_metadata: dict | None = None, optimize: bool = True,
                       xla_max_batch: int | None = None) -> str:
    """Writes `model` as a SavedModel at `export_dir` (replacing an older export) and returns
    the path. Written to a temporary sibling directory and renamed into place, so a reader never
    sees a half-written export.

    optimize=True (default) serves a batch-norm-folded graph with the weights as constants, XLA
    compiled for batches up to `xla_max_batch` (facenet_tf.models.inference); the Keras model
    itself is not saved (keep the .keras file or checkpoint for training). False saves the model
    as is, with its variables.
    """
    from facenet_tf.models.inference import XLA_MAX_BATCH
    xla_max_batch = XLA_MAX_BATCH if xla_max_batch is None else int(xla_max_batch)
    mh, mw = _model_image_size(model)
    if (mh, mw) != (None, None) and (mh, mw) != tuple(preprocess.image_size):
        raise ValueError(f"preprocess image_size {preprocess.image_size} does not match the "
                         f"model's input size {(mh, mw)}")
    embedding_dim = int(model.output_shape[-1])
    metadata = {
        "format_version": METADATA_VERSION,
        "input_size": list(preprocess.image_size),
        "preprocess": preprocess.to_dict(),
        "embedding_dim": embedding_dim,
        "step": None if step is None else int(step),
        "threshold": None if threshold is None else float(threshold),
        "fingerprint": weights_fingerprint(model),
        "model_name": model.name,
        "signatures": {SIGNATURE_BYTES: "images: string [batch] -> embeddings",
                       SIGNATURE_PIXELS: "pixels: float32 [batch, h, w, 3] -> embeddings"},
        "serving_graph": ({"batch_norm_folded": True, "weights": "constants",
                           "xla_max_batch": xla_max_batch} if optimize
                          else {"batch_norm_folded": False, "weights": "variables"}),
        "run_info": runinfo.collect(),
    }
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(f"extra_metadata key {key!r} clashes with a built-in metadata key")
        metadata[key] = value
    json.dumps(metadata)  # fail before writing anything if metadata is not JSON-serialisable

    export_dir = export_dir.rstrip("/")
    parent = os.path.dirname(export_dir)
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{export_dir}.tmp-{uuid.uuid4().hex}"
    module = _ExportModule(model, preprocess, metadata, optimize, xla_max_batch)
    try:
        tf.saved_model.save(module, tmp, signatures={
            SIGNATURE_BYTES: module.serve_bytes, SIGNATURE_PIXELS: module.embed})
        tf.io.gfile.makedirs(os.path.join(tmp, "assets.extra"))
        with tf.io.gfile.GFile(os.path.join(tmp, METADATA_FILE), "w") as f:
            f.write(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        old = None
        if tf.io.gfile.exists(export_dir):
            old = f"{export_dir}.old-{uuid.uuid4().hex}"
            tf.io.gfile.rename(export_dir, old)
        tf.io.gfile.rename(tmp, export_dir)
        if old:
            tf.io.gfile.rmtree(old)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
    return export_dir


class Embedder:
    """A loaded face model: embeds standardised pixels or encoded images into numpy arrays."""

    def __init__(self, pixels_fn, preprocess: pp.PreprocessConfig, metadata: dict,
                 fingerprint: str, embedding_dim: int, bytes_fn=None, source: str = ""):
        self._pixels_fn = pixels_fn
        self._bytes_fn = bytes_fn  # in-graph decode+preprocess, valid for `preprocess` only
        self.preprocess = preprocess
        self.metadata = metadata
        self.fingerprint = fingerprint
        self.embedding_dim = embedding_dim
        self.source = source
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

    def embed_pixels(self, pixels) -> np.ndarray:
        """float32 [B, H, W, 3] standardised pixels -> [B, D] embeddings."""
        pixels = tf.convert_to_tensor(np.asarray(pixels, dtype=np.float32))
        if pixels.shape.rank != 4 or tuple(pixels.shape[1:3]) != self.preprocess.image_size:
            raise ValueError(f"expected pixels [batch, {self.preprocess.image_size[0]}, "
                             f"{self.preprocess.image_size[1]}, 3], got {pixels.shape}")
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        return np.asarray(self._pixels_fn(pixels))

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
    embedder = Embedder(
        pixels_fn=lambda x: _signature_output(pixels_sig, pixels=x),
        bytes_fn=(lambda b: _signature_output(bytes_sig, images=b)) if preprocess == baked
        else None,
        preprocess=preprocess, metadata=metadata, fingerprint=metadata["fingerprint"],
        embedding_dim=int(metadata["embedding_dim"]), source=path)
    embedder.loaded = loaded  # keeps the restored variables alive
    return embedder


def _load_keras(path: str, preprocess: pp.PreprocessConfig | None,
                xla_max_batch: int | None = None) -> Embedder:
    import keras
    try:  # registers the project's custom layers, if the models package is present
        import facenet_tf.models  # noqa: F401
    except ImportError:
        pass
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise ValueError(f"{path}: cannot load as a Keras model: {e}") from e
    if preprocess is None:
        h, w = _model_image_size(model)
        if h is None or w is None:
            raise ValueError(f"{path}: the model has no fixed input size; pass a PreprocessConfig")
        preprocess = pp.PreprocessConfig(image_size=(h, w), standardization="fixed")
    from facenet_tf.models.inference import inference_function
    fn = inference_function(model, preprocess.image_size, xla_max_batch)
    metadata = {"format_version": METADATA_VERSION, "input_size": list(preprocess.image_size),
                "preprocess": preprocess.to_dict(), "embedding_dim": int(model.output_shape[-1]),
                "step": None, "threshold": None, "fingerprint": weights_fingerprint(model),
                "model_name": model.name, "source": path}
    embedder = Embedder(pixels_fn=fn, preprocess=preprocess, metadata=metadata,
                        fingerprint=metadata["fingerprint"],
                        embedding_dim=metadata["embedding_dim"], source=path)
    embedder.model = model
    return embedder


def load_embedder(path, preprocess: pp.PreprocessConfig | None = None,
                  xla_max_batch: int | None = None) -> Embedder:
    """Loads a SavedModel written by export_saved_model, or a Keras `.keras` file.

    `preprocess` overrides the export's preprocessing (then encoded images are preprocessed
    outside the serving graph); for a `.keras` file it defaults to the model's input size with
    "fixed" standardisation and no crop. `xla_max_batch` (`.keras` only; default
    facenet_tf.models.inference.XLA_MAX_BATCH): batches up to this size run XLA-compiled; 0
    leaves out the XLA build, for callers whose batches are always larger (it costs start-up).
    """
    if isinstance(path, Embedder):
        return path
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no such model (expected a SavedModel directory from "
                                "facenet_tf.export or a .keras file)")
    if tf.io.gfile.isdir(path):
        if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path}: a directory without saved_model.pb, not a SavedModel")
        return _load_saved_model(path, preprocess)
    if path.endswith(".keras"):
        return _load_keras(path, preprocess, xla_max_batch)
    raise ValueError(f"{path}: not a model (expected a SavedModel directory or a .keras file)")


def main(argv):
    from absl import flags, logging
    del argv
    f = flags.FLAGS
    if f.checkpoint.endswith(".keras"):
        embedder = _load_keras(f.checkpoint, None)
        model, base, step, threshold = embedder.model, embedder.preprocess, f.step, None
    else:
        from facenet_tf.training.restore import restore_embedder
        restored = restore_embedder(f.checkpoint)
        model, base, step, threshold = (restored.model, restored.preprocess, restored.step,
                                        restored.threshold)
    size = tuple(f.image_size) if f.image_size else base.image_size
    preprocess = pp.PreprocessConfig(
        image_size=tuple(int(s) for s in size),
        crop_fraction=base.crop_fraction if f.crop_fraction is None else f.crop_fraction,
        standardization=f.standardization or base.standardization)
    out = export_saved_model(model, f.export_dir, preprocess,
                             step=step if f.step is None else f.step,
                             threshold=threshold if f.threshold is None else f.threshold,
                             extra_metadata={"checkpoint": f.checkpoint,
                                             "export_flags": runinfo.absl_flag_values()},
                             optimize=f.optimize, xla_max_batch=f.xla_max_batch)
    logging.info("exported %s to %s", f.checkpoint, out)
    print(out)


def _define_flags():
    from absl import flags
    flags.DEFINE_string("checkpoint", None, "A Keras .keras file, or a trainer checkpoint: a "
                        "prefix like MODEL_DIR/checkpoints/ckpt-600 or a directory of them "
                        "(MODEL_DIR/best, MODEL_DIR/checkpoints).", required=True)
    flags.DEFINE_string("export_dir", None, "SavedModel directory to write.", required=True)
    flags.DEFINE_list("image_size", None, "height,width (default: the model's input size).")
    flags.DEFINE_float("crop_fraction", None, "Center-crop fraction (default: the training "
                       "run's for a trainer checkpoint, 1.0 = no crop for a .keras file).")
    flags.DEFINE_enum("standardization", None, list(pp.STANDARDIZATIONS),
                      "Pixel standardisation the model was trained with (default: the run's, "
                      "or 'fixed' for a .keras file).")
    flags.DEFINE_float("threshold", None, "Recommended squared-L2 verification threshold "
                       "(default: the run's best evaluation's, for a trainer checkpoint).")
    flags.DEFINE_integer("step", None, "Training step of the checkpoint.")
    flags.DEFINE_bool("optimize", True, "Serve a graph with batch norm folded into the "
                      "convolutions and the weights as constants (no variables saved); "
                      "--nooptimize saves the Keras model with its variables.")
    flags.DEFINE_integer("xla_max_batch", None, "With --optimize, batches up to this size run "
                         "an XLA-compiled graph (0: never; default "
                         "facenet_tf.models.inference.XLA_MAX_BATCH).")


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main)
