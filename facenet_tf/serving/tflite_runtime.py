"""Running an exported .tflite face model without TensorFlow: the app side of the files that
facenet_tf.serving.tflite writes.

This module imports only the standard library, numpy, LiteRT (`ai_edge_litert`, the TFLite
runtime outside TensorFlow, whose own interpreter is deprecated) and Pillow, and nothing else
from facenet_tf, so an app needs `pip install ai-edge-litert numpy pillow` and this one file
(docs/serving.md, "Running a .tflite model in an app"). It reads the export's
facenet_tf_tflite.json (checked to describe the .tflite file), preprocesses images as that
JSON describes (the same centre crop, bilinear resize and standardisation as
facenet_tf.data.preprocess, written here in numpy) and runs the graph with LiteRT.
facenet_tf.inference.embedders.TFLiteEmbedder runs on the same runner.
"""

import contextlib
import hashlib
import io
import json
import os
import queue
import threading

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from PIL import Image

FLOAT32_FILE = "model_float32.tflite"
INT8_FILE = "model_int8.tflite"
METADATA_FILE = "facenet_tf_tflite.json"
METADATA_FORMAT = "facenet_tf.tflite"
METADATA_VERSION = 1


def interpreter(model_path: str | None = None, model_content: bytes | None = None,
                num_threads: int | None = None, delegates: bool = True) -> Interpreter:
    """A LiteRT interpreter of a .tflite file or its bytes. num_threads: None is LiteRT's
    default (1). delegates=False leaves out the default (XNNPACK) delegate, so the interpreter
    lists the model's own ops rather than the delegate's node."""
    return Interpreter(model_path=model_path, model_content=model_content,
                       num_threads=num_threads,
                       experimental_op_resolver_type=(
                           OpResolverType.AUTO if delegates
                           else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))


class InterpreterRunner:
    """Runs a .tflite embedding graph on float32 [N, H, W, 3] arrays of any N (an
    interpreter's input is resized when N changes). Safe to call from several threads at once:
    a LiteRT Interpreter is not thread-safe, so each call takes an interpreter no other call
    holds, made when first needed, up to max_interpreters (default: one per core; further
    callers wait for one to be free). Concurrent calls then run in parallel, which a job
    that embeds on two threads needs."""

    def __init__(self, model_path: str | None = None, model_content: bytes | None = None,
                 num_threads: int | None = None, max_interpreters: int | None = None):
        if max_interpreters is not None and max_interpreters < 1:
            raise ValueError(f"max_interpreters must be >= 1, got {max_interpreters!r}")
        self.max_interpreters = max_interpreters or os.cpu_count() or 1
        self._make = lambda: interpreter(model_path, model_content, num_threads)
        first = self._make()  # raises here on a bad file or num_threads
        self._input_index = first.get_input_details()[0]["index"]
        self._output_index = first.get_output_details()[0]["index"]
        self._free = queue.LifoQueue()  # [interpreter, its input's batch size]
        self._free.put([first, None])
        self._made = 1
        self._lock = threading.Lock()

    def _take(self) -> list:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._made < self.max_interpreters:
                held = [self._make(), None]  # counted only once it exists
                self._made += 1
                return held
        return self._free.get()

    @property
    def num_interpreters(self) -> int:
        """How many interpreters the calls so far have needed at once."""
        return self._made

    @contextlib.contextmanager
    def hold(self):
        """Holds one interpreter for the `with` block, as a call in progress does: calls made
        meanwhile run on another (or wait, when max_interpreters are held)."""
        held = self._take()
        try:
            yield held
        finally:
            self._free.put(held)

    def __call__(self, pixels) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        with self.hold() as held:
            lite, batch = held
            if pixels.shape[0] != batch:
                held[1] = None
                lite.resize_tensor_input(self._input_index, pixels.shape, strict=True)
                lite.allocate_tensors()
                held[1] = pixels.shape[0]
            lite.set_tensor(self._input_index, pixels)
            lite.invoke()
            return lite.get_tensor(self._output_index)


def read_metadata(model_path: str) -> dict:
    """The facenet_tf_tflite.json beside a local .tflite file, checked to be a facenet_tf TFLite
    export's and to list that file with its sha256 (errors name the files)."""
    meta_path = os.path.join(os.path.dirname(model_path), METADATA_FILE)
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"{model_path}: no {METADATA_FILE} beside it; export the model "
                                "with facenet_tf.serving.tflite.export_tflite")
    with open(meta_path) as f:
        metadata = json.load(f)
    if metadata.get("format") != METADATA_FORMAT:
        raise ValueError(f"{meta_path}: format is {metadata.get('format')!r}, "
                         f"want {METADATA_FORMAT!r}")
    if metadata.get("format_version") != METADATA_VERSION:
        raise ValueError(f"{meta_path}: format_version {metadata.get('format_version')!r} is "
                         f"not supported (this code reads version {METADATA_VERSION})")
    entry = {e["file"]: e for e in metadata["files"].values()}.get(os.path.basename(model_path))
    if entry is None:
        raise ValueError(f"{model_path}: not one of the files {meta_path} describes "
                         f"({sorted(e['file'] for e in metadata['files'].values())})")
    with open(model_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(f"{model_path}: its sha256 differs from the one recorded in "
                         f"{meta_path}; the file was replaced after export")
    return metadata


def decode_image(image) -> np.ndarray:
    """A path, encoded image bytes, a PIL image or an array -> uint8 RGB [H, W, 3] (greyscale
    repeated in the 3 channels, alpha dropped, the first frame of an animation)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
    with Image.open(source) as opened:
        return np.asarray(opened.convert("RGB"), dtype=np.uint8)


def center_crop_box(height: int, width: int, image_size, crop_fraction: float):
    """(top, left, box height, box width) of the centred crop, in float32 arithmetic as the
    exported graph's training-side preprocessing computes it."""
    th, tw = image_size
    scale = (min(np.float32(height) / np.float32(th), np.float32(width) / np.float32(tw))
             * np.float32(crop_fraction))
    bh = max(int(np.round(scale * np.float32(th))), 1)
    bw = max(int(np.round(scale * np.float32(tw))), 1)
    return (height - bh) // 2, (width - bw) // 2, bh, bw


def _bilinear_taps(size_out: int, size_in: int):
    """Source rows (or columns) and weights of a bilinear resize with half-pixel centres."""
    scale = np.float32(size_in) / np.float32(size_out)
    x = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    low = np.floor(x)
    weight = (x - low).astype(np.float32)
    low = low.astype(np.int64)
    return np.clip(low, 0, size_in - 1), np.clip(low + 1, 0, size_in - 1), weight


def resize_bilinear(image: np.ndarray, image_size) -> np.ndarray:
    """[H, W, C] -> float32 [h, w, C], bilinear with half-pixel centres, no antialiasing."""
    image = np.asarray(image, np.float32)
    top, bottom, wy = _bilinear_taps(image_size[0], image.shape[0])
    left, right, wx = _bilinear_taps(image_size[1], image.shape[1])
    wy, wx = wy[:, None, None], wx[None, :, None]
    upper = image[top][:, left] + (image[top][:, right] - image[top][:, left]) * wx
    lower = image[bottom][:, left] + (image[bottom][:, right] - image[bottom][:, left]) * wx
    return upper + (lower - upper) * wy


def standardize(pixels: np.ndarray, standardization: str) -> np.ndarray:
    """float32 0..255 pixels [H, W, 3] -> model input ("fixed" or "prewhiten")."""
    pixels = np.asarray(pixels, np.float32)
    if standardization == "fixed":
        return (pixels - np.float32(127.5)) / np.float32(128.0)
    if standardization == "prewhiten":
        floor = np.float32(1.0 / np.sqrt(pixels.size))
        return (pixels - pixels.mean()) / max(pixels.std(), floor)
    raise ValueError(f"standardization {standardization!r} is not one of 'fixed', 'prewhiten'")


def preprocess(image, preprocess_metadata: dict) -> np.ndarray:
    """An image (see decode_image) -> float32 [h, w, 3] model input, as the metadata's
    "preprocess" entry describes: centre crop, bilinear resize, clip to 0..255, standardise."""
    rgb = decode_image(image)
    size = tuple(preprocess_metadata["image_size"])
    top, left, bh, bw = center_crop_box(*rgb.shape[:2], size,
                                        preprocess_metadata["crop_fraction"])
    face = np.clip(resize_bilinear(rgb[top:top + bh, left:left + bw], size), 0, 255)
    return standardize(face, preprocess_metadata["standardization"])


class LiteRTEmbedder:
    """An exported .tflite file with its metadata, run by LiteRT: embeds images (paths,
    encoded bytes, PIL images or uint8 arrays) or standardised pixels into [N, D] float32
    L2-normalised embeddings; two faces are the same person when the squared L2 distance of
    their embeddings is at most `threshold`."""

    def __init__(self, model_path, num_threads: int | None = None):
        model_path = os.fspath(model_path)
        self.model_path = model_path
        self.metadata = read_metadata(model_path)
        self.runner = InterpreterRunner(model_path, num_threads=num_threads)
        self.num_threads = num_threads
        int8_file = self.metadata["files"].get("int8", {}).get("file")
        self.variant = "int8" if os.path.basename(model_path) == int8_file else "float32"
        # The float32 file computes the source weights' embeddings; int8 approximates them.
        self.fingerprint = self.metadata["fingerprint"] + ("-int8" if self.variant == "int8"
                                                           else "")
        self.embedding_dim = int(self.metadata["embedding_dim"])
        self.input_size = tuple(self.metadata["input_size"])
        self.threshold = self.metadata["threshold"]

    def embed_pixels(self, pixels) -> np.ndarray:
        """float32 [N, H, W, 3] standardised pixels -> [N, D] embeddings."""
        pixels = np.asarray(pixels, np.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (*self.input_size, 3):
            raise ValueError(f"expected pixels [batch, {self.input_size[0]}, "
                             f"{self.input_size[1]}, 3], got {list(pixels.shape)}")
        if len(pixels) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        embeddings = self.runner(pixels).copy()
        if self.variant == "int8":
            # The int8 graph's own L2 normalisation is quantized too: its outputs' norms are
            # off by up to 17% (1.025 on average on lfw_dev's held-out faces), which costs
            # 0.37 points of held-out verification accuracy; re-normalised, 0.03.
            embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return embeddings

    def preprocess(self, images) -> np.ndarray:
        """Images -> float32 [N, H, W, 3] model inputs, as the export's metadata describes."""
        inputs = [preprocess(image, self.metadata["preprocess"]) for image in images]
        return (np.stack(inputs) if inputs
                else np.zeros((0, *self.input_size, 3), np.float32))

    def embed_images(self, images) -> np.ndarray:
        """Images (paths, encoded bytes, PIL images, uint8 arrays) -> [N, D] embeddings."""
        return self.embed_pixels(self.preprocess(images))
