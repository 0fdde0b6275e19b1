"""On-device export: an embedding network as TFLite files, float32 and full-integer int8.
Running them (LiteRT, without TensorFlow) is facenet_tf.serving.tflite_runtime's; the writer
uses it to record each file's ops and the int8 graph's agreement with the float32 one.

Each export directory holds model_float32.tflite, model_int8.tflite (when calibration images
are given) and facenet_tf_tflite.json (input size, the exact preprocessing, embedding size,
recommended threshold, source weights' fingerprint, files with sizes and sha256). Preprocessing
stays outside the TFLite graphs, because apps decode images themselves: both graphs take
float32 standardised pixels [N, H, W, 3] (N free, 1 by default) and return L2-normalised
float32 embeddings [N, D]. The int8 graph quantises weights and activations to int8
(post-training, calibrated on a seeded sample of the run's training images) with float32 input
and output, so an app feeds and reads the same tensors as with the float32 graph.
"""

import hashlib
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from facenet_tf.common import io_utils, runinfo
from facenet_tf.data import image_files, readers
from facenet_tf.data import images as image_utils
from facenet_tf.data import preprocess as pp
from facenet_tf.models import quantize
from facenet_tf.models.inference import fold_batch_norm
from facenet_tf.serving import tflite_runtime
from facenet_tf.serving.saved_model import model_image_size, weights_fingerprint
from facenet_tf.serving.tflite_runtime import (  # the format's names, for the writer's callers
    FLOAT32_FILE,
    INT8_FILE,
    METADATA_FILE,
    METADATA_FORMAT,
    METADATA_VERSION,
)

DEFAULT_NUM_CALIBRATION = 200
MAX_LISTED_SKIPPED = 20

# What an app computes from the RGB pixel values p (0..255) of the cropped, resized face.
STANDARDIZATION_FORMULAS = {
    "fixed": "x = (p - 127.5) / 128 for every value p (each channel of each pixel)",
    "prewhiten": "x = (p - mean) / max(std, 1 / sqrt(H * W * 3)), mean and (population) std "
                 "taken over all H * W * 3 values of the face",
}


def unit_normalize(x):
    """x / ||x|| over the last axis, written as x * rsqrt(max(sum(x * x), 1e-12)) so that int8
    conversion keeps it in integer ops with a calibrated output range. (tf.math.l2_normalize
    becomes TFLite's L2_NORMALIZATION, whose int8 output has a fixed step of 1/128: on a
    trained NNS2 it changed the nearest neighbour of 5.5% of the 400 ORL faces against the
    float model, this form 3%; and tf.square stays a float op in an int8 model, x * x does
    not.)"""
    return x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(x * x, axis=-1, keepdims=True), 1e-12))


def embedding_function(network: keras.Model, image_size=None):
    """float32 pixels [N, h, w, 3] -> L2-normalised float32 embeddings, as a tf.function to
    convert: batch norm folded into the convolutions (facenet_tf.models.inference) and the
    network's closing UnitNormalization replaced by unit_normalize."""
    folded, _ = fold_batch_norm(network)
    last = folded.layers[-1]
    features = (keras.Model(folded.inputs, last.input, name=f"{network.name}_features")
                if isinstance(last, keras.layers.UnitNormalization) else folded)
    h, w = image_size or network.input_shape[1:3]
    spec = tf.TensorSpec([None, int(h), int(w), network.input_shape[-1]], tf.float32,
                         name="pixels")

    @tf.function(input_signature=[spec])
    def embed(pixels):
        return unit_normalize(tf.cast(features(pixels, training=False), tf.float32))

    embed.features = features  # keeps the variables the traced graph reads alive
    return embed


def _seeded_sample(items: list, num_images: int, seed: int) -> list:
    """Up to num_images of `items`, drawn without replacement with `seed`, in their order."""
    chosen = np.random.RandomState(seed).choice(len(items), min(num_images, len(items)),
                                                replace=False)
    return [items[i] for i in sorted(chosen)]


def _calibration_source(calibration_images, preprocess, num_images, seed):
    """(encoded images or pixels, names, description) of a seeded sample of the source."""
    if isinstance(calibration_images, (str, os.PathLike)):
        path = os.fspath(calibration_images)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path}: calibration data not found (expected a "
                                    "beam_jobs.build_dataset directory or an image folder)")
        if not tf.io.gfile.isdir(path):
            raise ValueError(f"{path}: calibration data must be a beam_jobs.build_dataset "
                             "directory or an image folder, not a file")
        if io_utils.is_complete(path):
            ds = readers.image_dataset(path, preprocess, shuffle_seed=seed).take(num_images)
            pixels = [image for image, _ in ds.as_numpy_iterator()]
            if not pixels:
                raise ValueError(f"{path}: the calibration dataset holds no images")
            return pixels, None, f"dataset {path}"
        paths = image_files.list_images(path)
        if not paths:
            raise ValueError(f"{path}: no images for calibration in this folder (searched "
                             "recursively for image files)")
        chosen = _seeded_sample(paths, num_images, seed)
        return chosen, chosen, f"image folder {path}"
    encoded = list(calibration_images)
    if not encoded:
        raise ValueError("calibration_images is empty")
    chosen = _seeded_sample(list(enumerate(encoded)), num_images, seed)
    return ([data for _, data in chosen], [f"calibration image {i}" for i, _ in chosen],
            f"{len(encoded)} encoded images")


def calibration_pixels(calibration_images, preprocess: pp.PreprocessConfig,
                       num_images: int = DEFAULT_NUM_CALIBRATION, seed: int = 0):
    """A seeded sample of up to `num_images` model inputs to calibrate int8 ranges on.

    calibration_images: a beam_jobs.build_dataset directory (the run's training data), an
    image folder (searched recursively), or an iterable of encoded image bytes. Returns
    (float32 [n, h, w, 3], info dict: source, count, skipped images with reasons). Images that
    do not decode are skipped, counted and listed; none decoding is an error.
    """
    if num_images < 1:
        raise ValueError(f"num_calibration must be >= 1, got {num_images}")
    items, names, description = _calibration_source(calibration_images, preprocess,
                                                    num_images, seed)
    if names is None:  # a dataset directory: already preprocessed pixels
        return np.stack(items).astype(np.float32), {"source": description, "seed": seed,
                                                    "num_images": len(items), "num_skipped": 0,
                                                    "skipped": []}
    prep = tf.function(lambda b: pp.preprocess_encoded(b, preprocess),
                       input_signature=[tf.TensorSpec([], tf.string)])
    pixels, skipped = [], []
    for item, name in zip(items, names):
        try:
            encoded = image_files.read_encoded(item) if isinstance(item, str) else item
            pixels.append(prep(tf.constant(encoded)).numpy())
        except image_utils.BadImageError as e:
            skipped.append({"image": name, "reason": str(e)})
        except tf.errors.InvalidArgumentError as e:
            skipped.append({"image": name, "reason": pp.decode_error_message(e)})
    if skipped:
        logging.warning("calibration: skipped %d of %d images that do not decode: %s",
                        len(skipped), len(items), skipped[:MAX_LISTED_SKIPPED])
    if not pixels:
        raise ValueError(f"{description}: none of the {len(items)} calibration images decodes "
                         f"(first: {skipped[0]['image']}: {skipped[0]['reason']})")
    return np.stack(pixels), {"source": description, "seed": seed, "num_images": len(pixels),
                              "num_skipped": len(skipped),
                              "skipped": skipped[:MAX_LISTED_SKIPPED]}


def _converter(fn):
    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)


def convert_float32(fn) -> bytes:
    """The .tflite bytes of an embedding_function, all float32."""
    return _converter(fn).convert()


def convert_int8(fn, calibration: np.ndarray) -> bytes:
    """The .tflite bytes of an embedding_function with int8 weights and activations (builtin
    int8 kernels only), float32 input and output, activation ranges calibrated on
    `calibration` (float32 [n, h, w, 3] model inputs, one image per calibration step)."""
    converter = _converter(fn)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i:i + 1]]
                                                for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    return converter.convert()


def tflite_ops(content: bytes) -> dict:
    """{op name: count} of a .tflite model, and the ops that compute in float32 (for an int8
    model, the ones a pure-integer accelerator could not run), as {"ops", "float_ops"}."""
    interpreter = tflite_runtime.interpreter(model_content=content, delegates=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    ops, float_ops = {}, {}
    # LiteRT has no public per-op listing of a .tflite model besides the Analyzer's printed text.
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        ops[name] = ops.get(name, 0) + 1
        first = [i for i in op["inputs"] if i >= 0][:1]
        if name not in ("QUANTIZE", "DEQUANTIZE") and first and dtypes[first[0]] == np.float32:
            float_ops[name] = float_ops.get(name, 0) + 1
    return {"ops": ops, "float_ops": float_ops}


def int8_agreement(float_content: bytes, int8_content: bytes, pixels: np.ndarray) -> dict:
    """How closely the int8 graph follows the float32 one on `pixels`: cosine of their
    embeddings (min, mean) and the int8 embeddings' largest deviation from unit length."""
    a = tflite_runtime.InterpreterRunner(model_content=float_content)(pixels)
    b = tflite_runtime.InterpreterRunner(model_content=int8_content)(pixels)
    norms = np.linalg.norm(b, axis=1)
    cosine = np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)
    return {"num_images": len(pixels), "min_cosine": float(cosine.min()),
            "mean_cosine": float(cosine.mean()),
            "max_norm_deviation": float(np.abs(norms - 1.0).max())}


def _file_entry(name: str, content: bytes) -> dict:
    return {"file": name, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(),
            **tflite_ops(content)}


def preprocessing_description(preprocess: pp.PreprocessConfig) -> dict:
    """What an app must do to an image before feeding the TFLite graph, in words."""
    h, w = preprocess.image_size
    return {
        **preprocess.to_dict(),
        "steps": [
            "decode to RGB, values 0..255 (greyscale: the same value in all 3 channels)",
            f"center crop: the largest centred box of aspect {h}:{w} (height:width) that fits, "
            f"scaled by crop_fraction={preprocess.crop_fraction}; box height = "
            f"max(1, round(min(H / {h}, W / {w}) * crop_fraction * {h})), width likewise with "
            f"{w}; top = (H - box height) // 2, left = (W - box width) // 2",
            f"resize to {h}x{w} (height x width), bilinear with half-pixel centres, no "
            "antialiasing (tf.image.resize), then clip to 0..255",
            f"standardize ({preprocess.standardization}): "
            f"{STANDARDIZATION_FORMULAS[preprocess.standardization]}",
            f"feed float32 [N, {h}, {w}, 3] (NHWC, RGB)",
        ],
        "standardization_formula": STANDARDIZATION_FORMULAS[preprocess.standardization],
    }


def export_tflite(network: keras.Model, out_dir: str, preprocess: pp.PreprocessConfig,
                  calibration_images=None, num_calibration: int = DEFAULT_NUM_CALIBRATION,
                  threshold: float | None = None, seed: int = 0,
                  extra_metadata: dict | None = None) -> dict:
    """Writes model_float32.tflite, model_int8.tflite and facenet_tf_tflite.json into `out_dir`
    (replacing an older export; written to a temporary sibling and renamed into place) and
    returns the metadata.

    calibration_images: see calibration_pixels; None writes the float32 network only.
    threshold: the recommended squared-L2 verification threshold to record.
    """
    preprocess.check_servable()
    image_size = model_image_size(network)
    if image_size != (None, None) and tuple(image_size) != tuple(preprocess.image_size):
        raise ValueError(f"preprocess image_size {preprocess.image_size} does not match the "
                         f"network's input size {tuple(image_size)}")
    calibration = info = None
    if calibration_images is not None:  # checked before any slow conversion
        calibration, info = calibration_pixels(calibration_images, preprocess,
                                               num_calibration, seed)
    fn = embedding_function(network, preprocess.image_size)
    contents = {FLOAT32_FILE: convert_float32(fn)}
    if calibration is not None:
        contents[INT8_FILE] = convert_int8(fn, calibration)
    dim = int(network.output_shape[-1])
    h, w = preprocess.image_size
    files = {}
    for name, content in contents.items():
        files["float32" if name == FLOAT32_FILE else "int8"] = _file_entry(name, content)
    if calibration is not None:
        files["int8"]["calibration"] = info
        files["int8"]["agreement_on_calibration_images"] = int8_agreement(
            contents[FLOAT32_FILE], contents[INT8_FILE], calibration)
    metadata = {
        "format": METADATA_FORMAT,
        "format_version": METADATA_VERSION,
        "input": {"dtype": "float32", "shape": [-1, h, w, 3], "layout": "NHWC, RGB",
                  "default_batch": 1},
        "input_size": [h, w],
        "preprocess": preprocessing_description(preprocess),
        "output": {"dtype": "float32", "shape": [-1, dim], "l2_normalized": True,
                   "int8_norm": "within files.int8.agreement_on_calibration_images"
                                ".max_norm_deviation of 1"},
        "embedding_dim": dim,
        "distance": "squared L2 (same = distance below threshold)",
        "threshold": None if threshold is None else float(threshold),
        "fingerprint": weights_fingerprint(network),
        "model_name": network.name,
        "files": files,
        "byte_embeddings": {
            "quantizer": "facenet_tf.models.quantize.quantize_embeddings",
            "dtype": "int8", "bytes_per_embedding": dim,
            "max_abs": quantize.default_max_abs(dim),
            "encode": "q = clip(round(e * 127 / max_abs), -127, 127)",
            "decode": "e = q * max_abs / 127",
        },
        "tensorflow": tf.__version__,
        "run_info": runinfo.collect(),
    }
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(f"extra_metadata key {key!r} clashes with a built-in metadata key")
        metadata[key] = value

    with io_utils.staged_dir(out_dir) as tmp:
        tf.io.gfile.makedirs(tmp)
        for name, content in contents.items():
            with tf.io.gfile.GFile(os.path.join(tmp, name), "wb") as f:
                f.write(content)
        io_utils.write_json_atomic(os.path.join(tmp, METADATA_FILE), metadata)
    return metadata
