"""Validates one image file and normalises it to an RGB PNG or JPEG that TensorFlow decodes.

Used by beam_jobs.build_dataset on every input file. Rules:
- RGB 8-bit JPEG and PNG files without an EXIF rotation are kept byte for byte.
- Everything else Pillow can decode (greyscale, palette, RGBA/LA, CMYK, 16-bit, PGM/PPM, GIF,
  BMP, TIFF, WebP, rotated JPEGs) is converted to RGB and re-encoded as lossless PNG.
  Alpha is dropped (as tf.io.decode_png(channels=3) would); 16-bit samples are scaled to 8 bits;
  a GIF or other multi-frame file keeps its first frame; EXIF orientation is applied.
- Empty, truncated, corrupt and non-image files raise BadImageError with a short reason.
"""

import dataclasses
import io
import warnings

import numpy as np
from PIL import Image, ImageOps

# Side of the square thumbnails of contact sheets and projector sprites, in pixels.
THUMBNAIL_SIZE = 64
# Pillow's default cap is about 89 megapixels; a face photo larger than that is a bad file.
MAX_PIXELS = 89_478_485
_KEEP_FORMATS = {"JPEG": "jpeg", "PNG": "png"}
_EXIF_ORIENTATION = 0x0112
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"),
               (b"BM", "BMP"), (b"P5", "PGM"), (b"P6", "PPM"), (b"P2", "PGM"), (b"P3", "PPM"))


class BadImageError(ValueError):
    """The file is not a usable image; str(error) is the reason listed in the manifest."""


@dataclasses.dataclass(frozen=True)
class NormalizedImage:
    encoded: bytes
    format: str        # "png" or "jpeg"
    height: int
    width: int
    converted: bool    # True when re-encoded, False when the original bytes were kept
    source_format: str  # what Pillow identified, e.g. "PPM", "JPEG"
    source_mode: str    # Pillow mode of the original, e.g. "L", "CMYK", "I;16"


def _open_decoded(data: bytes) -> Image.Image:
    """The Pillow image of encoded bytes, every pixel decoded; BadImageError otherwise."""
    if not data:
        raise BadImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()  # decodes every pixel: truncated or corrupt data fails here
    except Image.DecompressionBombError as e:
        raise BadImageError(f"image too large ({e})") from e
    except Image.UnidentifiedImageError as e:
        kind = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
        if kind:
            raise BadImageError(f"corrupt or truncated image (a {kind} signature but an "
                                "unreadable header)") from e
        raise BadImageError("not an image (Pillow cannot identify the format)") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as e:
        raise BadImageError(f"corrupt or truncated image ({type(e).__name__}: {e})") from e
    width, height = image.size
    if width < 1 or height < 1:
        raise BadImageError(f"image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise BadImageError(f"image too large ({width}x{height})")
    return image


def normalize_image(data: bytes) -> NormalizedImage:
    """Validates encoded image bytes and returns them as TF-decodable RGB (see module doc)."""
    image = _open_decoded(data)
    width, height = image.size
    source_format = image.format or "unknown"
    source_mode = image.mode
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if source_format in _KEEP_FORMATS and source_mode == "RGB" and orientation in (1, None):
        if source_format == "PNG" and _png_bit_depth(data) != 8:
            pass  # 16-bit RGB PNG: Pillow reads it as 8-bit RGB; re-encode below
        else:
            return NormalizedImage(data, _KEEP_FORMATS[source_format], height, width, False,
                                   source_format, source_mode)
    rgb = _to_rgb(ImageOps.exif_transpose(image) if orientation not in (1, None) else image)
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return NormalizedImage(out.getvalue(), "png", rgb.height, rgb.width, True,
                           source_format, source_mode)


def decode_rgb(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of encoded image bytes by the rules of normalize_image (EXIF
    rotation applied, first frame, alpha dropped, 16-bit scaled), decoding them once."""
    image = _open_decoded(data)
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        image = ImageOps.exif_transpose(image)
    return np.asarray(_to_rgb(image))


def _png_bit_depth(data: bytes) -> int:
    # IHDR is always the first chunk: 8-byte signature, 8-byte chunk header, width, height, depth.
    return data[24] if len(data) > 24 else 8


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        pixels = np.asarray(image)
        if mode == "F" or (mode == "I" and pixels.max(initial=0) <= 255):
            grey = np.clip(pixels, 0, 255).astype(np.uint8)
        else:  # 16-bit samples (also 16-bit PGM, which Pillow opens as "I")
            grey = (np.clip(pixels.astype(np.int64), 0, 65535) // 257).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def thumbnail(image, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """uint8 [size, size, 3]: an image (encoded bytes or an [H, W, 3] array) resized to fit
    and centred on black."""
    if isinstance(image, (bytes, bytearray)):
        picture = Image.open(io.BytesIO(image))
    else:
        picture = Image.fromarray(np.asarray(image, np.uint8))
    picture = picture.convert("RGB")
    picture.thumbnail((size, size), Image.BILINEAR)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2))
    return np.asarray(canvas)
