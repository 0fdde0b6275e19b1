"""Pieces of the MTCNN cascade against hand-computed cases and plain loops written here."""

import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.detection import cascade


def _iou_edges(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _iom_edges(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _greedy_nms(boxes, scores, image_index, threshold, overlap):
    """Plain greedy NMS per image on reference boxes (pixels x1..x2 -> edges x1 - 1, x2)."""
    edges = boxes - np.array([1.0, 1.0, 0.0, 0.0])
    kept = []
    for i in np.argsort(-scores, kind="stable"):
        if all(image_index[k] != image_index[i] or overlap(edges[k], edges[i]) <= threshold
               for k in kept):
            kept.append(i)
    return kept


def _random_boxes(rng, n, num_images):
    xy = rng.uniform(0, 60, (n, 2))
    wh = rng.uniform(8, 40, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n  # distinct scores: one right answer
    return boxes, scores, rng.randint(0, num_images, n).astype(np.int32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_by_image_matches_a_greedy_loop(seed):
    boxes, scores, image_index = _random_boxes(np.random.RandomState(seed), 120, 5)
    got = cascade.nms_by_image(boxes, scores, image_index, 0.5).numpy()
    expected = _greedy_nms(boxes, scores, image_index, 0.5, _iou_edges)
    assert sorted(got.tolist()) == sorted(expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_nms_min_by_image_matches_a_greedy_loop(seed):
    boxes, scores, image_index = _random_boxes(np.random.RandomState(seed), 80, 3)
    got = cascade.nms_min_by_image(boxes, scores, image_index, 0.7).numpy()
    expected = _greedy_nms(boxes, scores, image_index, 0.7, _iom_edges)
    assert sorted(got.tolist()) == sorted(expected)


def test_nms_keeps_identical_boxes_of_different_images():
    boxes = np.array([[10, 10, 50, 50]] * 3, np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    image_index = np.array([0, 1, 0], np.int32)
    assert sorted(cascade.nms_by_image(boxes, scores, image_index, 0.5).numpy()) == [0, 1]
    assert sorted(cascade.nms_min_by_image(boxes, scores, image_index, 0.7).numpy()) == [0, 1]


def test_nms_of_no_boxes_is_empty():
    empty = np.zeros((0, 4), np.float32)
    assert cascade.nms_by_image(empty, np.zeros(0, np.float32), np.zeros(0, np.int32),
                                0.5).shape == (0,)


def test_square_and_offsets_by_hand():
    # Box x 10..30 (21 px wide), y 20..60 (41 px high).
    box = np.array([[10.0, 20.0, 30.0, 60.0]], np.float32)
    # Squaring uses x2 - x1 = 20 and y2 - y1 = 40: side 40, centre x 20 kept.
    np.testing.assert_allclose(cascade.square_boxes(box), [[0.0, 20.0, 40.0, 60.0]])
    # Offsets scale by the width in pixels (21) and height (41).
    moved = cascade.apply_offsets(box, np.array([[0.1, -0.1, 0.2, 0.5]], np.float32))
    np.testing.assert_allclose(moved, [[12.1, 15.9, 34.2, 80.5]], rtol=1e-6)


def _reference_num_scales(height, width, min_face_size, factor):
    """The reference detector's loop."""
    m = 12.0 / min_face_size
    short = min(height, width) * m
    count = 0
    while short >= 12:
        count += 1
        short *= factor
    return count


@pytest.mark.parametrize("height,width,min_face", [
    (250, 250, 20), (112, 92, 20), (1000, 700, 40), (12, 30, 12), (11, 500, 12), (19, 19, 20),
    (20, 20, 20), (3000, 4000, 20)])
def test_num_pyramid_scales_matches_the_reference_loop(height, width, min_face):
    config = cascade.CascadeConfig(min_face_size=min_face)
    got = int(cascade.num_pyramid_scales(height, width, config))
    assert got == _reference_num_scales(height, width, min_face, config.scale_factor)


def test_crop_of_a_box_its_own_size_reads_the_pixels():
    image = np.random.RandomState(0).randint(0, 256, (1, 40, 50, 3)).astype(np.float32)
    # Reference box x 5..28, y 3..26: 0-based pixels 4..27 and 2..25, 24 x 24.
    crop = cascade.crop_boxes(image, np.array([[5.0, 3.0, 28.0, 26.0]], np.float32),
                              np.array([0], np.int32), 24)
    np.testing.assert_allclose(crop[0], image[0, 2:26, 4:28], atol=1e-3)


def test_crop_beyond_the_image_reads_black():
    image = np.full((1, 30, 30, 3), 200.0, np.float32)
    # 0-based pixels -24..-1 (left of the image) then a box half inside.
    crops = cascade.crop_boxes(image, np.array([[-23.0, 1.0, 0.0, 24.0],
                                                [-11.0, 1.0, 12.0, 24.0]], np.float32),
                               np.array([0, 0], np.int32), 24)
    assert np.all(crops[0] == 0.0)
    np.testing.assert_allclose(crops[1][:, :11], 0.0)
    np.testing.assert_allclose(crops[1][:, 13:], 200.0)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="thresholds"):
        cascade.CascadeConfig(thresholds=(0.6, 0.7))
    with pytest.raises(ValueError, match="scale_factor"):
        cascade.CascadeConfig(scale_factor=1.2)
    with pytest.raises(ValueError, match="min_face_size"):
        cascade.CascadeConfig(min_face_size=1)


def test_detect_batch_traces_once_for_any_batch_and_size():
    nets_spec = tf.TensorSpec([None, None, None, 3], tf.uint8)

    class NoNetworks:
        """Stand-ins returning 'no face' everywhere, to trace the cascade cheaply."""

        def pnet(self, x):
            shape = tf.shape(x)
            h, w = (shape[1] - 12) // 2 + 1, (shape[2] - 12) // 2 + 1
            return tf.zeros([shape[0], h, w, 4]), tf.zeros([shape[0], h, w, 2])

        def rnet(self, x):
            return tf.zeros([tf.shape(x)[0], 4]), tf.zeros([tf.shape(x)[0], 2])

        def onet(self, x):
            n = tf.shape(x)[0]
            return tf.zeros([n, 4]), tf.zeros([n, 10]), tf.zeros([n, 2])

    run = tf.function(lambda images: cascade.detect_batch(NoNetworks(), images,
                                                          cascade.CascadeConfig()),
                      input_signature=[nets_spec])
    for shape in [(1, 40, 30, 3), (3, 13, 200, 3), (2, 5, 5, 3)]:
        image_index, boxes, scores, landmarks = run(np.zeros(shape, np.uint8))
        assert boxes.shape == (0, 4) and landmarks.shape == (0, 5, 2)
    assert run.experimental_get_tracing_count() == 1
