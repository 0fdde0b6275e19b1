"""facenet_tf.data.degrade against oracles written here: JPEG re-encoding with Pillow, and the
resize as plain loops (area averaging down, bilinear with half-pixel centres up)."""

import numpy as np
import pytest

from facenet_tf.data import preprocess as pp
from facenet_tf.data.degrade import Degradation
from tests.conftest import pillow_jpeg


def _face(shape=(48, 40), seed=0):
    """A float face-like image: smooth gradients, an edge and some noise, off the 8-bit grid."""
    rng = np.random.RandomState(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.stack([120 + 80 * np.sin(x / 7.0), 60 + 2 * y, 200 - 3 * x], axis=-1)
    image[h // 3:h // 2, w // 4:3 * w // 4] -= 50
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.float32) + 0.3


def _area_weights(n_in, n_out):
    """[n_out, n_in]: the part of input pixel j that output pixel i covers, normalised."""
    scale = n_in / n_out
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        start, end = i * scale, (i + 1) * scale
        for j in range(n_in):
            weights[i, j] = max(0.0, min(end, j + 1) - max(start, j))
    return weights / weights.sum(axis=1, keepdims=True)


def _bilinear_weights(n_in, n_out):
    """[n_out, n_in]: linear interpolation at the output pixel centres, clamped at the edges."""
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        source = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        low = int(np.floor(source))
        high = min(low + 1, n_in - 1)
        weights[i, low] += 1.0 - (source - low)
        weights[i, high] += source - low
    return weights


def _pixels_oracle(image, n):
    """The degraded image, and where it reads a small pixel whose mean is a rounding tie
    (x.5 to float precision: float32 may round it either way)."""
    h, w = image.shape[:2]
    image = np.round(image).astype(np.float64)
    small = np.einsum("ij,jkc,lk->ilc", _area_weights(h, n), image, _area_weights(w, n))
    ties = (np.abs(small - np.floor(small) - 0.5) < 1e-3).astype(np.float64)
    small = np.clip(np.round(small), 0, 255)
    up_h, up_w = _bilinear_weights(n, h), _bilinear_weights(n, w)
    touched = np.einsum("ij,jkc,lk->ilc", up_h > 0, ties, up_w > 0) > 0
    return np.einsum("ij,jkc,lk->ilc", up_h, small, up_w), touched


@pytest.mark.parametrize("quality", [10, 20, 50, 90])
def test_jpeg_equals_pillow_reencoding(quality):
    face = _face()
    got = Degradation("jpeg", quality).apply(face).numpy()
    expected = pillow_jpeg(face, quality)
    np.testing.assert_array_equal(got, expected)
    # Lower quality, further from the face.
    assert np.abs(got - np.round(face)).mean() > 0.5


@pytest.mark.parametrize("shape,n", [((48, 48), 20), ((48, 48), 12), ((40, 32), 24),
                                     ((48, 40), 40)])
def test_pixels_equals_area_down_then_bilinear_up(shape, n):
    face = _face(shape, seed=n)
    got = Degradation("pixels", n).apply(face).numpy()
    expected, touched = _pixels_oracle(face, n)
    assert got.shape == face.shape and got.dtype == np.float32
    np.testing.assert_allclose(got[~touched], expected[~touched], atol=2e-3)
    np.testing.assert_allclose(got[touched], expected[touched], atol=1.0 + 1e-3)
    assert touched.mean() < 0.5  # most of the image is checked exactly


def test_pixels_at_full_size_only_rounds():
    face = _face((32, 32))
    np.testing.assert_allclose(Degradation("pixels", 32).apply(face).numpy(), np.round(face),
                               atol=1e-4)


@pytest.mark.parametrize("spec,expected", [("jpeg:20", Degradation("jpeg", 20)),
                                           (" pixels:80 ", Degradation("pixels", 80)),
                                           ("JPEG:100", Degradation("jpeg", 100)),
                                           ("none", None), ("", None), (None, None)])
def test_parse(spec, expected):
    assert Degradation.parse(spec) == expected
    if expected is not None:
        assert Degradation.parse(str(expected)) == expected


@pytest.mark.parametrize("spec,message", [
    ("jpeg:abc", "'jpeg:abc': expected jpeg:Q"), ("jpeg", "'jpeg': expected"),
    ("pixels:-5", "'pixels:-5': expected"), ("jpeg:0", "jpeg:0: out of range"),
    ("jpeg:101", "jpeg:101: out of range"), ("pixels:0", "pixels:0: out of range"),
    ("blur:3", "'blur': unknown kind")])
def test_bad_specs_name_the_value(spec, message):
    with pytest.raises(ValueError, match=message):
        Degradation.parse(spec)


def test_preprocess_config_carries_it_and_checks_it():
    config = pp.PreprocessConfig((40, 32), degrade=Degradation("pixels", 20))
    assert config.to_dict()["degrade"] == "pixels:20"
    assert pp.PreprocessConfig.from_dict(config.to_dict()) == config
    assert "degrade" not in pp.PreprocessConfig((40, 32)).to_dict()  # exports unchanged
    with pytest.raises(ValueError, match="pixels:33: .* input is 40x32; N must be at most 32"):
        pp.PreprocessConfig((40, 32), degrade=Degradation("pixels", 33))
    with pytest.raises(ValueError, match="not for an exported model"):
        config.check_servable()


def test_preprocess_image_degrades_after_crop_and_resize():
    image = _face((60, 50)).astype(np.uint8)
    base = pp.PreprocessConfig((32, 32), crop_fraction=0.8)
    config = pp.PreprocessConfig((32, 32), crop_fraction=0.8, degrade=Degradation("jpeg", 30))
    resized = pp.center_crop_and_resize(image, base).numpy()
    expected = (pillow_jpeg(resized, 30) - 127.5) / 128.0
    np.testing.assert_array_equal(pp.preprocess_image(image, config).numpy(), expected)
