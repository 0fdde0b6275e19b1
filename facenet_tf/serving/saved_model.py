"""The one SavedModel exporter of facenet_tf (facenet_tf.inference.embedders reads what it writes).

An export has two signatures: `serving_default` (a batch of encoded JPEG/PNG/GIF/BMP bytes of
face crops -> L2-normalised embeddings; decode, center crop, resize and standardisation run in
the graph with facenet_tf.data.preprocess, exactly as in training) and `embed` (already
standardised float pixels -> embeddings). Given a face detector it also has `detect_and_embed`
(whole photos as encoded bytes -> every face's box, score, 5 landmarks and embedding, up to
max_faces per photo, with the count and the main face): MTCNN (facenet_tf.detection) and the
alignment run in the graph too. Its metadata (input size, preprocessing, embedding dim, training step,
recommended threshold, weight fingerprint, run info) is in assets.extra/facenet_tf.json and in
the loaded object's `metadata_json` variable.
"""

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from facenet_tf.common import io_utils, runinfo
from facenet_tf.data import preprocess as pp
from facenet_tf.detection.align import AlignConfig, aligned_crops
from facenet_tf.detection.detector import LANDMARK_NAMES, FaceDetector, main_face_index
from facenet_tf.models import frozen_graph
from facenet_tf.models.inference import XLA_MAX_BATCH, inference_function

METADATA_FILE = os.path.join("assets.extra", "facenet_tf.json")
METADATA_VERSION = 1
SIGNATURE_BYTES = "serving_default"
SIGNATURE_PIXELS = "embed"
SIGNATURE_PHOTOS = "detect_and_embed"
DEFAULT_MAX_FACES = 10


@dataclasses.dataclass(frozen=True)
class PhotoSignature:
    """What `detect_and_embed` serves: the detector, how its faces are aligned, and how many
    faces (highest scores first) a photo returns at most."""
    detector: FaceDetector
    align: AlignConfig
    max_faces: int = DEFAULT_MAX_FACES

    def describe(self) -> dict:
        return {"detector": dataclasses.asdict(self.detector.config),
                "align": dataclasses.asdict(self.align), "max_faces": self.max_faces,
                "landmarks": list(LANDMARK_NAMES)}


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
    (facenet_tf.models.inference; no variables are saved); False serves the Keras model's own
    call with its variables. The Keras object itself is not tracked: saving it would also trace
    and write every layer (about 40% of a small model's export time).
    """

    def __init__(self, model, preprocess: pp.PreprocessConfig, metadata: dict, optimize: bool,
                 xla_max_batch: int, photos: PhotoSignature | None = None):
        super().__init__(name="facenet_tf_export")
        self.metadata_json = tf.Variable(json.dumps(metadata, sort_keys=True), trainable=False,
                                         name="metadata_json")
        h, w = preprocess.image_size
        if optimize:
            embed = inference_function(model, (h, w), xla_max_batch)
        else:
            @tf.function(input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32,
                                                        name="pixels")])
            def embed(pixels):
                out = model(pixels, training=False)
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
        self.detect_and_embed = None
        if photos is not None:
            self.detector = photos.detector
            self.detect_and_embed = _photo_signature(photos, preprocess, embed)
        # The tf.Variables the traced graphs read (not the Keras wrappers): tracked explicitly
        # so TF1-style loaders (saved_model_cli, TF Serving) restore them too.
        used = {}
        for fn in (embed_signature, serve_bytes, self.detect_and_embed):
            if fn is None:
                continue
            for v in fn.get_concrete_function().variables:
                used.setdefault(id(v), v)
        self.graph_variables = list(used.values())


def _photo_signature(photos: PhotoSignature, preprocess: pp.PreprocessConfig, embed):
    """The detect_and_embed tf.function: per photo, MTCNN, the kept faces aligned exactly as
    the Python path does (crops rounded to whole 0..255 values), the model's preprocessing
    without a further centre crop, embeddings; every output padded to max_faces."""
    face_preprocess = dataclasses.replace(preprocess, crop_fraction=1.0)
    h, w = preprocess.image_size
    n_max = photos.max_faces
    align = photos.align

    def one(args):
        encoded, index = args
        with tf.control_dependencies([_check_decodable(encoded, index)]):
            image = pp.decode_image(encoded)
        found = photos.detector.detect_batch(image[None])
        boxes, scores = found["boxes"][:n_max], found["scores"][:n_max]
        landmarks = found["landmarks"][:n_max]
        count = tf.shape(boxes)[0]
        crops = tf.round(aligned_crops(image, boxes, landmarks, align))
        pixels = tf.map_fn(lambda crop: pp.preprocess_image(crop, face_preprocess), crops,
                           fn_output_signature=tf.TensorSpec([h, w, 3], tf.float32))
        embeddings = tf.cond(count > 0, lambda: embed(pixels),
                             lambda: tf.zeros([0, embed_dim], tf.float32))
        pad = n_max - count
        return (tf.pad(boxes, [[0, pad], [0, 0]]), tf.pad(scores, [[0, pad]]),
                tf.pad(landmarks, [[0, pad], [0, 0], [0, 0]]),
                tf.pad(embeddings, [[0, pad], [0, 0]]), count,
                main_face_index(boxes, scores, tf.shape(image)[0], tf.shape(image)[1]))

    embed_dim = int(embed.get_concrete_function().structured_outputs.shape[-1])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def detect_and_embed(images):
        n = tf.shape(images)[0]
        boxes, scores, landmarks, embeddings, counts, main = tf.map_fn(
            one, (images, tf.range(n)), fn_output_signature=(
                tf.TensorSpec([n_max, 4], tf.float32), tf.TensorSpec([n_max], tf.float32),
                tf.TensorSpec([n_max, 5, 2], tf.float32),
                tf.TensorSpec([n_max, embed_dim], tf.float32), tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.int32)))
        return {"boxes": boxes, "scores": scores, "landmarks": landmarks,
                "embeddings": embeddings, "num_faces": counts, "main_face": main}

    return detect_and_embed


def model_image_size(model) -> tuple:
    """(height, width) a [batch, height, width, 3] Keras model takes (None where not fixed)."""
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
                       xla_max_batch: int | None = None,
                       photos: PhotoSignature | None = None) -> str:
    """Writes `model` as a SavedModel at `export_dir` (replacing an older export) and returns
    the path. Written to a temporary sibling directory and renamed into place, so a reader never
    sees a half-written export.

    optimize=True (default) serves a batch-norm-folded graph with the weights as constants, XLA
    compiled for batches up to `xla_max_batch` (facenet_tf.models.inference); the Keras model
    itself is not saved (keep the .keras file or checkpoint for training). False serves the
    model's call as is, with its variables. photos: also serve `detect_and_embed` (whole photos).
    """
    preprocess.check_servable()
    xla_max_batch = XLA_MAX_BATCH if xla_max_batch is None else int(xla_max_batch)
    mh, mw = model_image_size(model)
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
    if photos is not None:
        metadata["signatures"][SIGNATURE_PHOTOS] = (
            f"images: string [batch] photos -> boxes [batch, {photos.max_faces}, 4], scores, "
            "landmarks [.., 5, 2], embeddings [.., D], num_faces [batch], main_face [batch] "
            "(-1: none); rows past num_faces are zeros")
        metadata["photos"] = photos.describe()
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(f"extra_metadata key {key!r} clashes with a built-in metadata key")
        metadata[key] = value
    json.dumps(metadata)  # fail before writing anything if metadata is not JSON-serialisable

    export_dir = export_dir.rstrip("/")
    module = _ExportModule(model, preprocess, metadata, optimize, xla_max_batch, photos)
    signatures = {SIGNATURE_BYTES: module.serve_bytes, SIGNATURE_PIXELS: module.embed}
    if photos is not None:
        signatures[SIGNATURE_PHOTOS] = module.detect_and_embed
    with io_utils.staged_dir(export_dir) as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        tf.io.gfile.makedirs(os.path.join(tmp, "assets.extra"))
        with tf.io.gfile.GFile(os.path.join(tmp, METADATA_FILE), "w") as f:
            f.write(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return export_dir


def export_pretrained(export_dir: str, trainable_bn: bool = False,
                      graph_path: str | None = None, wheel_path: str | None = None,
                      graph_def=None,
                      threshold: float | None = frozen_graph.ALIGNED_FACE_THRESHOLD) -> dict:
    """The pretrained FaceNet model (facenet_tf.models.frozen_graph) as export_dir/model.keras
    (to fine-tune) and export_dir/saved_model/ (to serve, also whole photos through
    detect_and_embed, with the recommended threshold for aligned faces); manifest.json is
    written last."""
    model = frozen_graph.build_pretrained_model(trainable_bn, graph_path, wheel_path,
                                              graph_def=graph_def)
    tf.io.gfile.makedirs(export_dir)
    model.save(os.path.join(export_dir, "model.keras"))
    metadata = {"source": frozen_graph.SOURCE, "architecture": "inception_resnet_v1"}
    photos = PhotoSignature(FaceDetector(), AlignConfig(
        image_size=max(frozen_graph.PRETRAINED_PREPROCESS.image_size)))
    export_saved_model(model, os.path.join(export_dir, "saved_model"),
                       frozen_graph.PRETRAINED_PREPROCESS, threshold=threshold,
                       extra_metadata=metadata, photos=photos)
    manifest = {**metadata, "embedding_dim": frozen_graph.EMBEDDING_DIM,
                "keras_model": "model.keras", "saved_model": "saved_model",
                "preprocess": frozen_graph.PRETRAINED_PREPROCESS.to_dict(),
                "run_info": runinfo.collect()}
    io_utils.write_json_atomic(os.path.join(export_dir, io_utils.MANIFEST_NAME), manifest)
    return manifest
