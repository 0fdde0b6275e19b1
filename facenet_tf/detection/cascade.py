"""The MTCNN cascade (P-Net proposals over an image pyramid, R-Net and O-Net refinement) as
TF ops over a batch of same-size images, traceable in a tf.function with unknown batch,
height and width.

The steps and the arithmetic are those of the reference detector (the Caffe/MATLAB original
of Zhang et al., as kept by davidsandberg/facenet's detect_face, which aligned the data the
pretrained FaceNet was trained on): pyramid scales (12 / min_face_size) * scale_factor^k while
the scaled short side is >= 12 (images resized with area averaging, sizes rounded up); P-Net
windows (stride 2) kept above thresholds[0]; NMS (IoU 0.5) per scale, then (IoU 0.7) over all
scales; P-Net offsets applied, boxes made square; R-Net on 24x24 crops, kept above
thresholds[1], NMS (IoU 0.7), offsets, square; O-Net on 48x48 crops, kept above thresholds[2],
landmarks placed in the crop box, offsets applied, NMS by intersection over the SMALLER box
(0.7), which drops a box lying mostly inside a stronger one. Crops beyond the image read black.
Left out: the reference truncates boxes to whole pixels before cropping; here crops are
sampled at sub-pixel positions (bilinear, where the reference resizes with area averaging).

Box convention (the reference's): x1, y1, x2, y2 are the 1-based column and row of the first
and last pixel of the box, i.e. the box covers [x1 - 1, x2) x [y1 - 1, y2) where pixel (row i,
column j) covers [j, j+1) x [i, i+1); its width is x2 - x1 + 1. Landmarks are plain
coordinates in that continuous frame. Every box of a batch carries the index of its image;
non-maximum suppression never lets boxes of different images interact.
"""

import dataclasses
import math

import tensorflow as tf

PNET_CELL = 12
PNET_STRIDE = 2
NORMALIZE_OFFSET = 127.5
NORMALIZE_SCALE = 1.0 / 128.0


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
    """Detection parameters (the reference values by default).

    min_face_size: smallest face side in pixels the pyramid looks for.
    thresholds: face-probability thresholds of P-Net, R-Net and O-Net.
    scale_factor: ratio between successive pyramid scales.
    nms_thresholds: P-Net per scale, P-Net over all scales, R-Net (IoU) and O-Net (overlap over
      the smaller box).
    """
    min_face_size: float = 20.0
    thresholds: tuple = (0.6, 0.7, 0.7)
    scale_factor: float = 0.709
    nms_thresholds: tuple = (0.5, 0.7, 0.7, 0.7)

    def __post_init__(self):
        if not self.min_face_size >= PNET_CELL / 4:
            raise ValueError(f"min_face_size must be >= {PNET_CELL / 4}, got "
                             f"{self.min_face_size!r}")
        if not 0.0 < self.scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {self.scale_factor!r}")
        for field, n in (("thresholds", 3), ("nms_thresholds", 4)):
            values = tuple(float(v) for v in getattr(self, field))
            if len(values) != n or not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"{field} must be {n} numbers in [0, 1], got "
                                 f"{getattr(self, field)!r}")
            object.__setattr__(self, field, values)


def _normalize(pixels):
    return (pixels - NORMALIZE_OFFSET) * NORMALIZE_SCALE


def _widths_heights(boxes):
    """Widths and heights in pixels (x2 - x1 + 1)."""
    return boxes[:, 2] - boxes[:, 0] + 1.0, boxes[:, 3] - boxes[:, 1] + 1.0


def continuous(boxes):
    """Reference boxes -> (left, top, right, bottom) edges in continuous coordinates."""
    return boxes - tf.constant([1.0, 1.0, 0.0, 0.0])


def apply_offsets(boxes, offsets, widths_heights=None):
    """Moves each edge by its offset times the box width (x) or height (y)."""
    w, h = _widths_heights(boxes) if widths_heights is None else widths_heights
    return boxes + offsets * tf.stack([w, h, w, h], axis=1)


def square_boxes(boxes):
    """The reference's squaring: side max(x2 - x1, y2 - y1), same centre."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = tf.maximum(w, h)
    x1 = boxes[:, 0] + 0.5 * (w - side)
    y1 = boxes[:, 1] + 0.5 * (h - side)
    return tf.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _separate_images(boxes, image_index):
    """Shifts each image's boxes onto its own cell of a 2-D grid so that boxes of different
    images never overlap (one NMS call then serves the whole batch); the grid keeps the shifts
    small, so float32 keeps sub-pixel precision."""
    lo = tf.minimum(tf.reduce_min(boxes), 0.0)  # the bounds also hold for no boxes at all
    span = tf.maximum(tf.reduce_max(boxes), 0.0) - lo + 1.0
    num_images = tf.maximum(tf.reduce_max(image_index), 0) + 1
    columns = tf.cast(tf.math.ceil(tf.sqrt(tf.cast(num_images, tf.float32))), tf.int32)
    col = tf.cast(image_index % columns, tf.float32) * span
    row = tf.cast(image_index // columns, tf.float32) * span
    shift = tf.stack([col, row, col, row], axis=1)
    return boxes - lo + shift


def nms_by_image(boxes, scores, image_index, iou_threshold):
    """Indices kept by greedy IoU NMS within each image, in descending score order."""
    # tf.image.non_max_suppression reads boxes as (y1, x1, y2, x2); IoU does not care.
    return tf.image.non_max_suppression(_separate_images(continuous(boxes), image_index),
                                        scores, tf.shape(scores)[0], iou_threshold)


def overlap_over_smaller(boxes):
    """[n, n] intersection area over the smaller of the two areas (boxes given by edges)."""
    x1, y1, x2, y2 = (boxes[:, None, k] for k in range(4))
    u1, v1, u2, v2 = (boxes[None, :, k] for k in range(4))
    inter = (tf.maximum(tf.minimum(x2, u2) - tf.maximum(x1, u1), 0.0)
             * tf.maximum(tf.minimum(y2, v2) - tf.maximum(y1, v1), 0.0))
    area = tf.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * tf.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    smaller = tf.minimum(area[:, None], area[None, :])
    return tf.math.divide_no_nan(inter, smaller)


def nms_min_by_image(boxes, scores, image_index, threshold):
    """Greedy NMS within each image by overlap over the smaller box; descending score order."""
    same_image = tf.equal(image_index[:, None], image_index[None, :])
    overlaps = tf.where(same_image, overlap_over_smaller(continuous(boxes)), 0.0)
    return tf.image.non_max_suppression_overlaps(overlaps, scores, tf.shape(scores)[0],
                                                 threshold)


def crop_boxes(images, boxes, image_index, size):
    """[n, size, size, 3] float crops of `boxes` (any box, also beyond the image, read black),
    sampled bilinearly at the centres of a size x size grid over each box."""
    shape = tf.shape(images)
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    left, top, right, bottom = tf.unstack(continuous(boxes), axis=1)
    half_x = 0.5 * (right - left) / size
    half_y = 0.5 * (bottom - top) / size
    # crop_and_resize puts the first and last samples at box_start * (dim - 1) and
    # box_end * (dim - 1) in pixel-index units (pixel centres at integers).
    x1 = (left + half_x - 0.5) / tf.maximum(width - 1.0, 1.0)
    x2 = (right - half_x - 0.5) / tf.maximum(width - 1.0, 1.0)
    y1 = (top + half_y - 0.5) / tf.maximum(height - 1.0, 1.0)
    y2 = (bottom - half_y - 0.5) / tf.maximum(height - 1.0, 1.0)
    return tf.image.crop_and_resize(images, tf.stack([y1, x1, y2, x2], axis=1), image_index,
                                    [size, size], method="bilinear", extrapolation_value=0.0)


def num_pyramid_scales(height, width, config: CascadeConfig):
    """How many pyramid levels an image of this size gets (int32 scalar tensor)."""
    short = tf.cast(tf.minimum(height, width), tf.float64) * (PNET_CELL / config.min_face_size)
    ratio = tf.math.log(PNET_CELL / tf.maximum(short, 1e-9)) / math.log(config.scale_factor)
    # Levels k = 0 .. floor(ratio) have short * factor^k >= 12; the epsilon keeps an exact
    # boundary (short * factor^k == 12) on the inclusive side despite log rounding.
    count = tf.cast(tf.floor(ratio + 1e-9), tf.int32) + 1
    return tf.where(short >= PNET_CELL, count, 0)


def _pnet_level(pnet, pixels, level, config: CascadeConfig):
    """P-Net windows above threshold at one pyramid level, after NMS within each image:
    (boxes, scores, offsets, image_index)."""
    scale = (PNET_CELL / config.min_face_size) * tf.pow(
        tf.constant(config.scale_factor, tf.float64), tf.cast(level, tf.float64))
    shape = tf.shape(pixels)
    scaled_size = tf.cast(tf.math.ceil(tf.cast(shape[1:3], tf.float64) * scale), tf.int32)
    scaled = tf.image.resize(pixels, scaled_size, method="area")
    offsets, probs = pnet(_normalize(scaled))
    where = tf.where(probs[..., 1] > config.thresholds[0])
    scores = tf.gather_nd(probs[..., 1], where)
    offsets = tf.gather_nd(offsets, where)
    image_index = tf.cast(where[:, 0], tf.int32)
    # Window (row i, column j) covers scaled pixels 2j .. 2j + 11: 1-based first and last
    # pixel 2j + 1 and 2j + 12, divided by the scale as the reference does.
    start = tf.reverse(tf.cast(where[:, 1:] * PNET_STRIDE, tf.float32), axis=[1])  # (x, y)
    scale = tf.cast(scale, tf.float32)
    boxes = tf.concat([(start + 1.0) / scale, (start + PNET_CELL) / scale], axis=1)
    keep = nms_by_image(boxes, scores, image_index, config.nms_thresholds[0])
    return (tf.gather(boxes, keep), tf.gather(scores, keep), tf.gather(offsets, keep),
            tf.gather(image_index, keep))


def propose(pnet, pixels, config: CascadeConfig):
    """Stage 1: square candidate boxes [n, 4] and their image indices [n]."""
    shape = tf.shape(pixels)
    levels = num_pyramid_scales(shape[1], shape[2], config)
    arrays = [tf.TensorArray(dtype, size=0, dynamic_size=True, infer_shape=False)
              for dtype in (tf.float32, tf.float32, tf.float32, tf.int32)]

    def body(level, *arrays):
        found = _pnet_level(pnet, pixels, level, config)
        return (level + 1,) + tuple(a.write(level, f) for a, f in zip(arrays, found))

    _, *arrays = tf.while_loop(lambda level, *_: level < levels, body, [0] + arrays)
    empty = (tf.zeros([0, 4]), tf.zeros([0]), tf.zeros([0, 4]), tf.zeros([0], tf.int32))
    boxes, scores, offsets, image_index = [
        tf.ensure_shape(tf.cond(levels > 0, lambda a=a: a.concat(), lambda e=e: e),
                        [None] + e.shape[1:])
        for a, e in zip(arrays, empty)]
    keep = nms_by_image(boxes, scores, image_index, config.nms_thresholds[1])
    boxes = tf.gather(boxes, keep)
    # The reference scales P-Net offsets by x2 - x1 (11 scaled pixels), not the width.
    boxes = apply_offsets(boxes, tf.gather(offsets, keep),
                          (boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    return square_boxes(boxes), tf.gather(image_index, keep)


def refine(rnet, pixels, boxes, image_index, config: CascadeConfig):
    """Stage 2: R-Net keeps, moves and squares the candidates."""
    crops = crop_boxes(pixels, boxes, image_index, 24)
    offsets, probs = rnet(_normalize(crops))
    passed = probs[:, 1] > config.thresholds[1]
    boxes, offsets = tf.boolean_mask(boxes, passed), tf.boolean_mask(offsets, passed)
    scores, image_index = tf.boolean_mask(probs[:, 1], passed), tf.boolean_mask(image_index,
                                                                                passed)
    keep = nms_by_image(boxes, scores, image_index, config.nms_thresholds[2])
    boxes = apply_offsets(tf.gather(boxes, keep), tf.gather(offsets, keep))
    return square_boxes(boxes), tf.gather(image_index, keep)


def finish(onet, pixels, boxes, image_index, config: CascadeConfig):
    """Stage 3: O-Net scores, moves and places 5 landmarks; returns (image_index [n],
    boxes [n, 4], scores [n], landmarks [n, 5, 2])."""
    crops = crop_boxes(pixels, boxes, image_index, 48)
    offsets, points, probs = onet(_normalize(crops))
    passed = probs[:, 1] > config.thresholds[2]
    boxes, offsets = tf.boolean_mask(boxes, passed), tf.boolean_mask(offsets, passed)
    points = tf.boolean_mask(points, passed)
    scores, image_index = tf.boolean_mask(probs[:, 1], passed), tf.boolean_mask(image_index,
                                                                                passed)
    w, h = _widths_heights(boxes)
    left, top = boxes[:, 0:1] - 1.0, boxes[:, 1:2] - 1.0
    landmarks = tf.stack([left + w[:, None] * points[:, 0:5],
                          top + h[:, None] * points[:, 5:10]], axis=2)
    boxes = apply_offsets(boxes, offsets)
    keep = nms_min_by_image(boxes, scores, image_index, config.nms_thresholds[3])
    return (tf.gather(image_index, keep), tf.gather(boxes, keep), tf.gather(scores, keep),
            tf.gather(landmarks, keep))


def detect_batch(nets, images, config: CascadeConfig):
    """The whole cascade over uint8 or float images [B, H, W, 3] (0..255, all one size).

    nets: a networks.MtcnnNetworks. Returns flat (image_index, boxes, scores, landmarks) of
    every face of the batch, each image's faces in descending score order.
    """
    pixels = tf.cast(images, tf.float32)
    boxes, image_index = propose(nets.pnet, pixels, config)
    boxes, image_index = refine(nets.rnet, pixels, boxes, image_index, config)
    return finish(nets.onet, pixels, boxes, image_index, config)
