"""Aligned face crops from detections, as TF ops (eager or inside a tf.function).

Two methods (AlignConfig.method):
- "margin": the reference recipe of davidsandberg/facenet's align_dataset_mtcnn: the box
  widened by margin/2 pixels of the ORIGINAL image on each side, clipped to the image, corners
  truncated to whole pixels, resized (bilinear, antialiased) to image_size x image_size. The
  aspect ratio is not kept (MTCNN boxes are taller than wide).
- "similarity": the least-squares similarity transform (rotation, uniform scale, translation)
  taking the 5 landmarks onto a 5-point template, then a bilinear warp. Output pixels that map
  outside the image are black. When the face is larger than the output, the region around it
  is first shrunk with an antialiased resize so the warp does not alias.

The template is the widely used 5-point reference of 112x112 ArcFace-style crops
(ARCFACE_112), scaled about the crop centre by template_zoom * image_size / 112 and moved
down by template_shift * image_size. The defaults put the template where the landmarks fall,
on average, in margin-32 crops of LFW (measured on 300 LFW images of people outside
pairsDevTrain): the face then has the margin method's scale, without its distortion.

Coordinates are those of the detector: pixel (row i, column j) covers [j, j+1) x [i, i+1).
"""

import dataclasses

import numpy as np
import tensorflow as tf

METHODS = ("margin", "similarity")

# Left eye, right eye, nose, left and right mouth corner of a 112x112 crop, in pixel-index
# coordinates (pixel centres at integers), as published with ArcFace/InsightFace.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
ARCFACE_SIZE = 112


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """How a detected face becomes an image_size x image_size crop (see the module docstring).

    margin: pixels of the original image added around the box, in total per axis ("margin").
    template_zoom, template_shift: the template's scale relative to the ArcFace 112 framing and
      its downward shift as a fraction of image_size ("similarity").
    """
    image_size: int = 160
    margin: float = 32.0
    method: str = "margin"
    template_zoom: float = 0.91
    template_shift: float = -0.072

    def __post_init__(self):
        if int(self.image_size) != self.image_size or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        object.__setattr__(self, "image_size", int(self.image_size))
        if not self.margin >= 0:
            raise ValueError(f"margin must be >= 0 pixels, got {self.margin!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not self.template_zoom > 0:
            raise ValueError(f"template_zoom must be > 0, got {self.template_zoom!r}")


def template_points(config: AlignConfig) -> np.ndarray:
    """float32 [5, 2] (x, y) where the similarity method puts the 5 landmarks."""
    size = config.image_size
    arcface = ARCFACE_112 + 0.5  # to pixel-edge coordinates
    points = (arcface - ARCFACE_SIZE / 2) * (config.template_zoom * size / ARCFACE_SIZE)
    points = points + size / 2 + np.array([0.0, config.template_shift * size])
    return points.astype(np.float32)


def similarity_transform(source, target):
    """float32 [2, 3] matrix [[a, -b, tx], [b, a, ty]] of the similarity minimising the squared
    distances from (matrix @ [source; 1]) to target; source and target are [k, 2] points.

    Points as complex numbers z = x + iy: the least-squares fit of target = c * source + t has
    c = sum(conj(s_i) t_i) / sum(|s_i|^2) over the centred points, t = mean(target) - c mean(s).
    """
    source = tf.cast(source, tf.float32)
    target = tf.cast(target, tf.float32)
    mean_s, mean_t = tf.reduce_mean(source, 0), tf.reduce_mean(target, 0)
    s, t = source - mean_s, target - mean_t
    norm = tf.maximum(tf.reduce_sum(tf.square(s)), 1e-12)
    a = tf.reduce_sum(s[:, 0] * t[:, 0] + s[:, 1] * t[:, 1]) / norm
    b = tf.reduce_sum(s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]) / norm
    tx = mean_t[0] - (a * mean_s[0] - b * mean_s[1])
    ty = mean_t[1] - (b * mean_s[0] + a * mean_s[1])
    return tf.stack([tf.stack([a, -b, tx]), tf.stack([b, a, ty])])


def apply_transform(matrix, points):
    """[k, 2] points mapped by a [2, 3] affine matrix."""
    points = tf.cast(points, tf.float32)
    return tf.matmul(points, matrix[:, :2], transpose_b=True) + matrix[:, 2]


def invert_affine(matrix):
    """The [2, 3] affine matrix of the inverse map."""
    linear_inv = tf.linalg.inv(matrix[:, :2])
    return tf.concat([linear_inv, -tf.matmul(linear_inv, matrix[:, 2:])], axis=1)


def margin_box(box, image_height, image_width, margin):
    """int32 (x1, y1, x2, y2) of the reference crop: the box grown by margin/2 on every side,
    clipped to the image, truncated to whole pixels; at least one pixel wide and high."""
    box = tf.cast(box, tf.float32)
    half = tf.cast(margin, tf.float32) / 2.0
    width = tf.cast(image_width, tf.float32)
    height = tf.cast(image_height, tf.float32)
    x1 = tf.floor(tf.clip_by_value(box[0] - half, 0.0, width - 1.0))
    y1 = tf.floor(tf.clip_by_value(box[1] - half, 0.0, height - 1.0))
    x2 = tf.maximum(tf.floor(tf.minimum(box[2] + half, width)), x1 + 1.0)
    y2 = tf.maximum(tf.floor(tf.minimum(box[3] + half, height)), y1 + 1.0)
    return tf.cast(tf.stack([x1, y1, x2, y2]), tf.int32)


def margin_crop(image, box, config: AlignConfig):
    """float32 [S, S, 3] (0..255): the margin box resized to S x S."""
    shape = tf.shape(image)
    x1, y1, x2, y2 = tf.unstack(margin_box(box, shape[0], shape[1], config.margin))
    crop = tf.cast(image[y1:y2, x1:x2], tf.float32)
    size = [config.image_size, config.image_size]
    return tf.image.resize(crop, size, method="bilinear", antialias=True)


def warp_affine(image, output_to_input, size: int):
    """float32 [size, size, 3]: output pixel-edge point p samples the image at
    output_to_input @ [p; 1] (bilinear, black outside); large faces are shrunk first."""
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    # Input pixels per output pixel; above 1 the region is shrunk by it first.
    shrink = tf.maximum(tf.sqrt(tf.abs(tf.linalg.det(output_to_input[:, :2]))), 1.0)
    corners = apply_transform(output_to_input, tf.constant(
        [[0.0, 0.0], [size, 0.0], [0.0, size], [size, size]], tf.float32))
    pad = 2.0 * shrink
    lo = tf.floor(tf.reduce_min(corners, 0) - pad)
    hi = tf.math.ceil(tf.reduce_max(corners, 0) + pad)
    x0 = tf.clip_by_value(lo[0], 0.0, width - 1.0)
    y0 = tf.clip_by_value(lo[1], 0.0, height - 1.0)
    x1 = tf.clip_by_value(hi[0], x0 + 1.0, width)
    y1 = tf.clip_by_value(hi[1], y0 + 1.0, height)
    region = image[tf.cast(y0, tf.int32):tf.cast(y1, tf.int32),
                   tf.cast(x0, tf.int32):tf.cast(x1, tf.int32)]
    small_h = tf.maximum(tf.round((y1 - y0) / shrink), 1.0)
    small_w = tf.maximum(tf.round((x1 - x0) / shrink), 1.0)
    small = tf.image.resize(region, tf.cast(tf.stack([small_h, small_w]), tf.int32),
                            method="bilinear", antialias=True)
    ratio = tf.stack([small_w / (x1 - x0), small_h / (y1 - y0)])[:, None]
    to_small = ratio * (output_to_input - tf.stack([[0.0, 0.0, x0], [0.0, 0.0, y0]]))
    # ImageProjectiveTransformV3 works in pixel-index coordinates (centres at integers).
    a = to_small[:, :2]
    offset = to_small[:, 2] + 0.5 * tf.reduce_sum(a, axis=1) - 0.5
    transform = tf.concat([a[0], offset[0:1], a[1], offset[1:2], tf.zeros([2])], axis=0)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=small[None], transforms=transform[None], output_shape=[size, size],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return warped[0]


def similarity_crop(image, landmarks, config: AlignConfig):
    """float32 [S, S, 3] (0..255): the face warped so its landmarks fit the template."""
    to_template = similarity_transform(landmarks, template_points(config))
    return warp_affine(image, invert_affine(to_template), config.image_size)


def aligned_crop(image, box, landmarks, config: AlignConfig):
    """One face of a uint8 [H, W, 3] image -> float32 [S, S, 3] in 0..255, by config.method."""
    if config.method == "margin":
        crop = margin_crop(image, box, config)
    else:
        crop = similarity_crop(image, landmarks, config)
    crop.set_shape([config.image_size, config.image_size, 3])
    return tf.clip_by_value(crop, 0.0, 255.0)


def aligned_crops(image, boxes, landmarks, config: AlignConfig):
    """Every face of one image: boxes [n, 4], landmarks [n, 5, 2] -> float32 [n, S, S, 3]."""
    size = config.image_size
    return tf.map_fn(lambda face: aligned_crop(image, face[0], face[1], config),
                     (tf.cast(boxes, tf.float32), tf.cast(landmarks, tf.float32)),
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
