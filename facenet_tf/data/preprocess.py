"""Deterministic image preprocessing shared by training, mining, export and evaluation.

Every function here is a TF op graph (usable in tf.data, tf.function and the exported
SavedModel), so serving decodes, crops and standardises exactly as training did.
"""

import dataclasses
import json
import re

import tensorflow as tf

from facenet_tf.data.degrade import Degradation

STANDARDIZATIONS = ("fixed", "prewhiten")
# Leading bytes of the formats decode_image (tf.io.decode_image) reads: JPEG, PNG, GIF, BMP.
DECODABLE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How an encoded face image becomes a model input.

    image_size: (height, width) of the model input.
    crop_fraction: the paper's "center crop": keep the central box of the model's aspect
      ratio whose size is this fraction of the largest such box in the image (1.0 = no crop;
      LFW's 250x250 thumbnails with pixels 60..190 kept is 0.52).
    standardization: "fixed" = (x - 127.5) / 128; "prewhiten" = per image
      (x - mean) / max(std, 1 / sqrt(num_pixels)), which the pretrained weights expect.
    degrade: a facenet_tf.data.degrade.Degradation applied to the cropped and resized face
      before standardisation (an evaluation of image quality: `evaluate --degrade`), or None.
    """
    image_size: tuple = (160, 160)
    crop_fraction: float = 1.0
    standardization: str = "fixed"
    degrade: Degradation | None = None

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (height, width), got {self.image_size!r}")
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        if self.standardization not in STANDARDIZATIONS:
            raise ValueError(f"standardization must be one of {STANDARDIZATIONS}, "
                             f"got {self.standardization!r}")
        if self.degrade is not None:
            self.degrade.check_fits(self.image_size)

    def check_servable(self) -> None:
        """Raises if this preprocessing is not for a served model (a degradation is for
        measuring image quality, never part of an export)."""
        if self.degrade is not None:
            raise ValueError(f"preprocess degrade={self.degrade}: a degradation is for "
                             "evaluating image quality, not for an exported model; export "
                             "without it")

    def to_dict(self) -> dict:
        """The fields as JSON values; "degrade" (its spec, e.g. "jpeg:20") only when set."""
        d = {"image_size": list(self.image_size), "crop_fraction": self.crop_fraction,
             "standardization": self.standardization}
        if self.degrade is not None:
            d["degrade"] = str(self.degrade)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        return cls(image_size=tuple(d["image_size"]), crop_fraction=float(d["crop_fraction"]),
                   standardization=d["standardization"],
                   degrade=Degradation.parse(d.get("degrade")))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def decode_image(encoded):
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, 3] (first frame of a GIF)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# Pieces of a TF op error's message that locate the op rather than say what went wrong.
_OP_LOCATION = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$")
_TF_DATA_PREFIX = re.compile(r"^Error in user-defined function passed to .*? transformation "
                             r"with iterator: \S+: ")


def decode_error_message(error: tf.errors.OpError) -> str:
    """What a TF op error (e.g. from decode_image) says went wrong, in one line: without the
    "Graph execution error" header, the traceback of where the op was built, function-node and
    tf.data prefixes. Short enough for a bad-record list or an error naming the image."""
    for line in error.message.splitlines():
        if (not line.strip() or line[0].isspace()
                or line.startswith(("Graph execution error", "Detected at node"))):
            continue
        line = _TF_DATA_PREFIX.sub("", _OP_LOCATION.sub("", line)).strip()
        if line:
            return line
    return error.message.strip()


def center_crop_box(height, width, target_size, crop_fraction):
    """(top, left, box_height, box_width) of the centred crop, as int32 scalars."""
    th, tw = target_size
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    # Largest box with the target aspect ratio that fits, then scaled by crop_fraction.
    scale = tf.minimum(h / th, w / tw) * crop_fraction
    bh = tf.maximum(tf.cast(tf.round(scale * th), tf.int32), 1)
    bw = tf.maximum(tf.cast(tf.round(scale * tw), tf.int32), 1)
    top = (tf.cast(height, tf.int32) - bh) // 2
    left = (tf.cast(width, tf.int32) - bw) // 2
    return top, left, bh, bw


def center_crop_and_resize(image, config: PreprocessConfig):
    """uint8 or float [H, W, 3] -> float32 [h, w, 3] in 0..255, cropped and resized."""
    shape = tf.shape(image)
    top, left, bh, bw = center_crop_box(shape[0], shape[1], config.image_size,
                                        config.crop_fraction)
    crop = tf.image.crop_to_bounding_box(image, top, left, bh, bw)
    resized = tf.image.resize(tf.cast(crop, tf.float32), config.image_size, method="bilinear")
    return tf.clip_by_value(resized, 0.0, 255.0)


def standardize(pixels, standardization: str):
    """float32 0..255 pixels [..., H, W, 3] -> model input, per `standardization`."""
    pixels = tf.cast(pixels, tf.float32)
    if standardization == "fixed":
        return (pixels - 127.5) / 128.0
    if standardization == "prewhiten":
        axes = [-3, -2, -1]
        mean = tf.reduce_mean(pixels, axis=axes, keepdims=True)
        std = tf.math.reduce_std(pixels, axis=axes, keepdims=True)
        num = tf.cast(tf.reduce_prod(tf.shape(pixels)[-3:]), tf.float32)
        return (pixels - mean) / tf.maximum(std, 1.0 / tf.sqrt(num))
    raise ValueError(f"standardization must be one of {STANDARDIZATIONS}, "
                     f"got {standardization!r}")


def preprocess_image(image, config: PreprocessConfig):
    """Decoded image [H, W, 3] -> standardised float32 model input [h, w, 3] (degraded
    first if config.degrade is set)."""
    pixels = center_crop_and_resize(image, config)
    if config.degrade is not None:
        pixels = config.degrade.apply(pixels)
    return standardize(pixels, config.standardization)


def preprocess_encoded(encoded, config: PreprocessConfig):
    """Encoded image bytes (scalar string) -> standardised float32 model input."""
    return preprocess_image(decode_image(encoded), config)
