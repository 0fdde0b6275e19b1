"""facenet_tf.data.augment: seeded, and each op does what it says."""

import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.data import augment as aug
from facenet_tf.data.preprocess import PreprocessConfig

IMAGE = np.random.RandomState(0).randint(0, 256, (20, 16, 3)).astype(np.uint8)
SAME_SIZE = PreprocessConfig(image_size=(20, 16), crop_fraction=1.0)
OFF = dict(min_crop_scale=1.0, flip=False, max_brightness=0.0, contrast_range=(1.0, 1.0))


def run(config, seed, preprocess=SAME_SIZE):
    return aug.augment_image(tf.constant(IMAGE), preprocess, config,
                             aug.element_seed(seed, 0)).numpy()


def fixed(pixels):
    return (pixels.astype(np.float32) - 127.5) / 128.0


def test_everything_off_is_plain_standardisation():
    np.testing.assert_allclose(run(aug.AugmentConfig(**OFF), 3), fixed(IMAGE), atol=1e-5)


def test_same_seed_same_output_other_seed_other_output():
    config = aug.AugmentConfig()
    np.testing.assert_array_equal(run(config, 1), run(config, 1))
    assert not np.array_equal(run(config, 1), run(config, 2))


def test_flip_gives_original_or_mirror_and_both_happen():
    config = aug.AugmentConfig(**{**OFF, "flip": True})
    flipped = 0
    for seed in range(16):
        out = run(config, seed)
        if np.allclose(out, fixed(IMAGE[:, ::-1]), atol=1e-5):
            flipped += 1
        else:
            np.testing.assert_allclose(out, fixed(IMAGE), atol=1e-5)
    assert 0 < flipped < 16


def test_brightness_is_one_constant_shift_within_bound():
    config = aug.AugmentConfig(**{**OFF, "max_brightness": 0.05})
    mid = np.full((20, 16, 3), 128, np.uint8)  # far from clipping
    out = aug.augment_image(tf.constant(mid), SAME_SIZE, config,
                            aug.element_seed(4, 0)).numpy() * 128.0 + 127.5
    shift = out - 128.0
    assert np.allclose(shift, shift.flat[0], atol=1e-3)
    assert 0 < abs(shift.flat[0]) <= 0.05 * 255 + 1e-3


def test_random_crop_is_a_resized_window_of_the_image():
    config = aug.AugmentConfig(**{**OFF, "min_crop_scale": 0.6})
    windows = np.stack([
        fixed(tf.image.resize(IMAGE[t:t + h, l:l + w].astype(np.float32), (20, 16)).numpy())
        for h in range(12, 21) for w in range(9, 17)
        for t in range(21 - h) for l in range(17 - w)])
    outputs = [run(config, seed) for seed in range(5)]
    for out in outputs:
        assert np.abs(windows - out).max(axis=(1, 2, 3)).min() < 1e-3
    assert len({out.tobytes() for out in outputs}) > 1


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="min_crop_scale"):
        aug.AugmentConfig(min_crop_scale=0.0)
    with pytest.raises(ValueError, match="contrast_range"):
        aug.AugmentConfig(contrast_range=(1.2, 0.8))
