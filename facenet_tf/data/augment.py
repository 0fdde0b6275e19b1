"""Seeded training augmentation: random crop, horizontal flip, brightness and contrast.

Every op is a stateless TF random op driven by an explicit seed tensor of shape [2], so the
same image and seed always give the same output, inside tf.data or not.
"""

import dataclasses

import tensorflow as tf

from facenet_tf.data import preprocess as pp


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation on top of a PreprocessConfig.

    min_crop_scale: the random crop is a box of `s` x the center-crop box (s uniform in
      [min_crop_scale, 1]) placed uniformly at random inside the center-crop box, then resized
      to the model input; 1.0 means no crop jitter.
    flip: random left-right flip with probability 0.5.
    max_brightness: brightness delta uniform in [-max_brightness, max_brightness] x 255.
    contrast_range: contrast factor uniform in [lower, upper] ((1, 1) = off).
    """
    min_crop_scale: float = 0.875
    flip: bool = True
    max_brightness: float = 0.1
    contrast_range: tuple = (0.8, 1.2)

    def __post_init__(self):
        if not 0.0 < self.min_crop_scale <= 1.0:
            raise ValueError(f"min_crop_scale must be in (0, 1], got {self.min_crop_scale!r}")
        if not 0.0 <= self.max_brightness <= 1.0:
            raise ValueError(f"max_brightness must be in [0, 1], got {self.max_brightness!r}")
        lower, upper = self.contrast_range
        if not 0.0 < lower <= upper:
            raise ValueError(f"contrast_range must be (lower, upper) with 0 < lower <= upper, "
                             f"got {self.contrast_range!r}")
        object.__setattr__(self, "contrast_range", (float(lower), float(upper)))


def augment_image(image, preprocess: pp.PreprocessConfig, augment: AugmentConfig, seed):
    """Decoded image [H, W, 3] + seed [2] -> standardised, augmented float32 [h, w, 3]."""
    crop_seed, flip_seed, bright_seed, contrast_seed, scale_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5))
    shape = tf.shape(image)
    top, left, bh, bw = pp.center_crop_box(shape[0], shape[1], preprocess.image_size,
                                           preprocess.crop_fraction)
    box = tf.image.crop_to_bounding_box(image, top, left, bh, bw)
    if augment.min_crop_scale < 1.0:
        scale = tf.random.stateless_uniform([], scale_seed, augment.min_crop_scale, 1.0)
        ch = tf.maximum(tf.cast(tf.round(scale * tf.cast(bh, tf.float32)), tf.int32), 1)
        cw = tf.maximum(tf.cast(tf.round(scale * tf.cast(bw, tf.float32)), tf.int32), 1)
        box = tf.image.stateless_random_crop(box, tf.stack([ch, cw, 3]), crop_seed)
    pixels = tf.image.resize(tf.cast(box, tf.float32), preprocess.image_size, method="bilinear")
    if augment.flip:
        pixels = tf.image.stateless_random_flip_left_right(pixels, flip_seed)
    if augment.max_brightness > 0:
        pixels = tf.image.stateless_random_brightness(pixels, augment.max_brightness * 255.0,
                                                      bright_seed)
    lower, upper = augment.contrast_range
    if (lower, upper) != (1.0, 1.0):
        pixels = tf.image.stateless_random_contrast(pixels, lower, upper, contrast_seed)
    pixels = tf.clip_by_value(pixels, 0.0, 255.0)
    return pp.standardize(pixels, preprocess.standardization)


def element_seed(seed, *indices):
    """A [2] int64 stateless seed for one element, from a base seed and its indices."""
    out = tf.stack([tf.constant(0, tf.int64), tf.cast(seed, tf.int64)])
    for index in indices:
        out = tf.random.experimental.stateless_fold_in(out, tf.cast(index, tf.int64))
    return out
