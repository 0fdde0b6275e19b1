"""facenet_tf.data.images: every kind of input becomes TF-decodable RGB, or a clear skip."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facenet_tf.data import images


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def tf_rgb(data: bytes) -> np.ndarray:
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


GREY = (np.arange(12 * 10).reshape(12, 10) * 2).astype(np.uint8)
RGB = np.stack([GREY, 255 - GREY, np.full_like(GREY, 7)], axis=-1)


def test_rgb_jpeg_and_png_kept_byte_for_byte():
    for fmt, name in (("JPEG", "jpeg"), ("PNG", "png")):
        data = encode(Image.fromarray(RGB), fmt)
        out = images.normalize_image(data)
        assert out.encoded == data and out.format == name and not out.converted
        assert (out.height, out.width) == (12, 10)


@pytest.mark.parametrize("fmt", ["PNG", "PPM", "BMP", "TIFF"])
def test_greyscale_becomes_rgb_with_equal_channels(fmt):
    out = images.normalize_image(encode(Image.fromarray(GREY, "L"), fmt))
    assert out.converted and out.format == "png"
    np.testing.assert_array_equal(tf_rgb(out.encoded), np.repeat(GREY[..., None], 3, axis=-1))


def test_rgba_png_drops_alpha():
    alpha = np.full(GREY.shape, 10, np.uint8)
    data = encode(Image.fromarray(np.dstack([RGB, alpha]), "RGBA"), "PNG")
    out = images.normalize_image(data)
    assert out.converted and out.source_mode == "RGBA"
    np.testing.assert_array_equal(tf_rgb(out.encoded), RGB)


def test_16_bit_png_scaled_to_8_bits():
    # Samples 257 * v are exactly v in 8 bits.
    data = encode(Image.fromarray(GREY.astype(np.uint16) * 257), "PNG")
    assert data[24] == 16  # really a 16-bit PNG
    out = images.normalize_image(data)
    assert out.converted
    np.testing.assert_array_equal(tf_rgb(out.encoded)[..., 0], GREY)


def test_palette_gif_first_frame():
    palette_image = Image.fromarray(RGB).quantize(colors=16)
    expected = np.asarray(palette_image.convert("RGB"))
    out = images.normalize_image(encode(palette_image, "GIF"))
    assert out.converted and out.source_format == "GIF"
    np.testing.assert_array_equal(tf_rgb(out.encoded), expected)


def test_cmyk_jpeg_converted_to_rgb():
    # Pure cyan+black-free CMYK (0, 255, 255, 0) is red.
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=100)
    out = images.normalize_image(data)
    assert out.converted and out.source_mode == "CMYK"
    pixels = tf_rgb(out.encoded).astype(int)
    assert np.abs(pixels - np.array([255, 0, 0])).max() <= 3


def test_exif_rotated_jpeg_is_turned_upright():
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    out = images.normalize_image(encode(image, "JPEG", exif=exif.tobytes(), quality=100))
    assert out.converted and (out.height, out.width) == (10, 12)


def _rotated_jpeg() -> bytes:
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = 6
    return encode(image, "JPEG", exif=exif.tobytes(), quality=100)


@pytest.mark.parametrize("data", [
    encode(Image.fromarray(RGB), "JPEG"), encode(Image.fromarray(RGB), "PNG"),
    encode(Image.fromarray(GREY, "L"), "PNG"),
    encode(Image.fromarray(np.dstack([RGB, np.full(GREY.shape, 10, np.uint8)]), "RGBA"), "PNG"),
    encode(Image.fromarray(GREY.astype(np.uint16) * 257), "PNG"),
    encode(Image.fromarray(RGB).quantize(colors=16), "GIF"),
    encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=100),
    _rotated_jpeg(),
], ids=["jpeg", "png", "grey", "rgba", "16bit", "gif", "cmyk", "rotated"])
def test_decode_rgb_equals_decoding_the_normalized_image(data):
    """decode_rgb decodes once; the oracle is the two-step path: normalize, then decode the
    normalized bytes with Pillow."""
    normalized = images.normalize_image(data).encoded
    expected = np.asarray(Image.open(io.BytesIO(normalized)).convert("RGB"))
    got = images.decode_rgb(data)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_decode_rgb_rejects_bad_files_with_the_same_reason():
    with pytest.raises(images.BadImageError, match="not an image"):
        images.decode_rgb(b"hello, I am a text file\n")


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"hello, I am a text file\n", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "corrupt or truncated"),
])
def test_bad_files_raise_with_reason(data, reason):
    with pytest.raises(images.BadImageError, match=reason):
        images.normalize_image(data)


def test_truncated_jpeg_rejected():
    data = encode(Image.fromarray(np.random.RandomState(0).randint(
        0, 256, (64, 64, 3)).astype(np.uint8)), "JPEG")
    with pytest.raises(images.BadImageError, match="truncated"):
        images.normalize_image(data[: len(data) // 2])


def test_decode_error_message_says_what_is_wrong_in_one_line():
    from facenet_tf.data.preprocess import decode_error_message, decode_image
    bad = tf.constant([b"\x89PNG not really"])
    cause = "Unknown image file format"

    def message(call):
        with pytest.raises(tf.errors.OpError) as e:
            call()
        return decode_error_message(e.value)

    # Raised from a tf.function, from inside map_fn in one, and from a tf.data map: each
    # wraps the op's own message differently.
    in_function = message(lambda: tf.function(decode_image)(bad[0]))
    in_map_fn = message(lambda: tf.function(lambda b: tf.map_fn(
        decode_image, b, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8)))(bad))
    in_dataset = message(lambda: list(tf.data.Dataset.from_tensor_slices(bad).map(decode_image)))
    for text in (in_function, in_map_fn, in_dataset):
        assert text.startswith(cause) and "\n" not in text
        assert "{{" not in text and "[Op:" not in text and "Iterator" not in text
