"""What the service accepts as a photo, checked before anything reaches the model: the image
format (from its bytes, not from what the client says), its size in pixels, and that every
pixel decodes (Pillow; a truncated or corrupt file is refused here).

A refusal is an UploadError with the HTTP status it maps to and a reason naming the field.
"""

import dataclasses
import hashlib
import io
import warnings

import numpy as np
from PIL import Image

from facenet_tf.data import images as image_utils

# Formats a client may send: the common photo formats. Pillow reads many more (some rarely
# exercised decoders); a network service has no need for them.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")


class UploadError(ValueError):
    """A request or photo the service refuses: `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """max_pixels: width x height of one photo; min_side, max_side: its shorter and longer
    side, in pixels."""
    max_pixels: int = 4096 * 4096
    max_side: int = 8192
    min_side: int = 16


@dataclasses.dataclass(frozen=True)
class Photo:
    """A validated photo: its field and file name, the SHA-256 of its bytes, its size, and
    either its pixels (uint8 [H, W, 3] RGB, for face detection) or its bytes as TensorFlow
    decodes them (images.normalize_image, for a photo that is one face crop)."""
    field: str
    name: str
    sha256: str
    height: int
    width: int
    pixels: np.ndarray | None = None
    encoded: bytes | None = None


def check_header(data: bytes, field: str, limits: ImageLimits) -> None:
    """Refuses (UploadError 422) bytes that are not an image of an accepted format or whose
    header declares a size outside the limits, before any pixel is decoded."""
    if not data:
        raise UploadError(422, f"{field}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError as e:
        raise UploadError(422, f"{field}: image too large ({e})") from None
    except Image.UnidentifiedImageError:
        raise UploadError(422, f"{field}: not an image (the bytes are no format Pillow "
                               "identifies)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UploadError(422, f"{field}: corrupt image header ({type(e).__name__}: {e})"
                          ) from None
    if fmt not in FORMATS:
        raise UploadError(422, f"{field}: {fmt} images are not accepted (accepted: "
                               f"{', '.join(FORMATS)})")
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise UploadError(422, f"{field}: image is {width}x{height} pixels; the limit is "
                               f"{limits.max_pixels:,} pixels and {limits.max_side} per side")
    if min(width, height) < limits.min_side:
        raise UploadError(422, f"{field}: image is {width}x{height} pixels; each side must be "
                               f"at least {limits.min_side}")


def validate_photo(data: bytes, field: str, limits: ImageLimits, name: str = "",
                   pixels: bool = True) -> Photo:
    """A Photo of uploaded bytes (its pixels, or with pixels=False its TensorFlow-decodable
    bytes), or UploadError (422) saying why not: empty, not an image, a format not accepted,
    too large or too small, truncated or corrupt (every pixel is decoded here)."""
    check_header(data, field, limits)
    digest = hashlib.sha256(data).hexdigest()
    try:
        if pixels:
            rgb = image_utils.decode_rgb(data)
            return Photo(field, name or field, digest, rgb.shape[0], rgb.shape[1], pixels=rgb)
        normalized = image_utils.normalize_image(data)
    except image_utils.BadImageError as e:
        raise UploadError(422, f"{field}: {e}") from None
    return Photo(field, name or field, digest, normalized.height, normalized.width,
                 encoded=normalized.encoded)
