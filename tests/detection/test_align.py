"""Alignment geometry: the similarity fit against a known transform and a least-squares solve
written here, dots warped onto the template, and the margin crop against a hand-computed box."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facenet_tf.detection import FaceDetector, align, main_face


def _similarity(scale, degrees, shift):
    """[2, 3] matrix of a rotation by `degrees`, uniform `scale`, then `shift`."""
    t = np.deg2rad(degrees)
    c, s = scale * np.cos(t), scale * np.sin(t)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def _apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_similarity_fit_recovers_a_known_transform():
    points = np.random.RandomState(0).uniform(0, 100, (5, 2))
    known = _similarity(1.7, 25.0, (-30.0, 12.5))
    fitted = align.similarity_transform(points, _apply(known, points)).numpy()
    np.testing.assert_allclose(fitted, known, atol=1e-4)


def test_similarity_fit_is_the_least_squares_solution():
    rng = np.random.RandomState(1)
    source = rng.uniform(0, 100, (5, 2))
    target = _apply(_similarity(0.8, -10.0, (5.0, 7.0)), source) + rng.normal(0, 3, (5, 2))
    # target_x = a x - b y + tx, target_y = b x + a y + ty: linear in (a, b, tx, ty).
    rows = [[x, -y, 1, 0] for x, y in source] + [[y, x, 0, 1] for x, y in source]
    values = np.concatenate([target[:, 0], target[:, 1]])
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), values, rcond=None)
    fitted = align.similarity_transform(source, target).numpy()
    np.testing.assert_allclose(fitted, [[a, -b, tx], [b, a, ty]], rtol=1e-4, atol=1e-3)


def test_template_is_the_arcface_points_scaled_about_the_centre():
    same = align.template_points(align.AlignConfig(image_size=112, template_zoom=1.0,
                                                   template_shift=0.0))
    np.testing.assert_allclose(same, align.ARCFACE_112 + 0.5, atol=1e-5)
    doubled = align.template_points(align.AlignConfig(image_size=224, template_zoom=1.0,
                                                      template_shift=0.0))
    np.testing.assert_allclose(doubled, (align.ARCFACE_112 + 0.5) * 2, atol=1e-4)
    # Zoom 0.5 and shift -0.1 at 160: half the ArcFace spread about (80, 80), 16 px up.
    small = align.template_points(align.AlignConfig(image_size=160, template_zoom=0.5,
                                                    template_shift=-0.1))
    expected = (align.ARCFACE_112 + 0.5 - 56) * (0.5 * 160 / 112) + np.array([80, 64])
    np.testing.assert_allclose(small, expected, atol=1e-4)


def _dots_image(points, radius, height=500, width=600):
    image = np.zeros((height, width, 3), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    for x, y in points:
        image[(xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2] = 255
    return image


def _dot_centres(crop, near, window=6):
    """Intensity-weighted centre of the crop around each expected point."""
    grey = crop[..., 0]
    centres = []
    for x, y in near:
        x0, y0 = int(x) - window, int(y) - window
        patch = grey[y0:y0 + 2 * window + 1, x0:x0 + 2 * window + 1]
        yy, xx = np.mgrid[0:patch.shape[0], 0:patch.shape[1]] + 0.5
        centres.append([x0 + np.sum(xx * patch) / np.sum(patch),
                        y0 + np.sum(yy * patch) / np.sum(patch)])
    return np.array(centres)


@pytest.mark.parametrize("scale,degrees", [(2.5, 20.0), (0.7, -15.0), (1.0, 0.0), (4.0, 90.0)])
def test_warped_dots_land_on_the_template(scale, degrees):
    config = align.AlignConfig(method="similarity")
    template = align.template_points(config)
    # A face whose landmarks are the template moved by a known similarity.
    face_to_image = _similarity(scale, degrees, (300.0, 240.0))
    landmarks = _apply(face_to_image, template - config.image_size / 2)
    image = _dots_image(landmarks, radius=3.0 * scale)
    # The fitted transform puts the points on the template ...
    to_template = align.similarity_transform(landmarks, template)
    np.testing.assert_allclose(align.apply_transform(to_template, landmarks), template,
                               atol=0.05)
    # ... and the warped image shows the dots there.
    crop = align.aligned_crop(image, np.zeros(4), landmarks, config).numpy()
    assert crop.shape == (160, 160, 3)
    found = _dot_centres(crop, template)
    assert np.max(np.linalg.norm(found - template, axis=1)) < 2.0, found - template


def test_margin_box_by_hand():
    # Box x 10.3..110.2, y 20.7..150.9 in a 250 x 200 (h x w) image, margin 32:
    # x1 = max(10.3 - 16, 0) = 0; y1 = floor(4.7) = 4; x2 = floor(min(126.2, 200)) = 126;
    # y2 = floor(min(166.9, 250)) = 166.
    box = align.margin_box([10.3, 20.7, 110.2, 150.9], 250, 200, 32).numpy()
    np.testing.assert_array_equal(box, [0, 4, 126, 166])
    # Clipped on the far side too.
    box = align.margin_box([150.0, 200.0, 195.5, 245.0], 250, 200, 32).numpy()
    np.testing.assert_array_equal(box, [134, 184, 200, 250])


def test_margin_crop_reads_exactly_the_margin_box():
    image = np.zeros((250, 200, 3), np.uint8)
    image[4:166, 0:126] = 255  # exactly the box of the case above
    config = align.AlignConfig(image_size=160, margin=32, method="margin")
    crop = align.aligned_crop(image, np.array([10.3, 20.7, 110.2, 150.9]), np.zeros((5, 2)),
                            config).numpy()
    assert crop.shape == (160, 160, 3)
    np.testing.assert_allclose(crop, 255.0, atol=1e-3)
    # One pixel more on any side would bring in black.
    image[3, 60] = 0
    image[100, 126] = 0
    again = align.aligned_crop(image, np.array([10.3, 20.7, 110.2, 150.9]), np.zeros((5, 2)),
                             config).numpy()
    np.testing.assert_array_equal(again, crop)


def test_align_faces_is_align_face_per_face_and_deterministic():
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (120, 140, 3)).astype(np.uint8)
    boxes = np.array([[20, 20, 80, 90], [50, 10, 130, 100]], np.float32)
    landmarks = np.array([[[40, 45], [62, 44], [51, 60], [42, 75], [60, 74]],
                          [[70, 40], [100, 42], [85, 60], [72, 80], [98, 82]]], np.float32)
    for method in align.METHODS:
        config = align.AlignConfig(image_size=64, method=method)
        crops = align.aligned_crops(image, boxes, landmarks, config).numpy()
        assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.float32
        for k in range(2):
            np.testing.assert_array_equal(
                crops[k], align.aligned_crop(image, boxes[k], landmarks[k], config).numpy())
        again = align.aligned_crops(image, boxes, landmarks, config).numpy()
        assert again.tobytes() == crops.tobytes()
        none = align.aligned_crops(image, np.zeros((0, 4)), np.zeros((0, 5, 2)), config)
        assert none.shape == (0, 64, 64, 3)


def test_align_traces_over_unknown_image_sizes():
    config = align.AlignConfig(image_size=32, method="similarity")
    run = tf.function(lambda image, boxes, landmarks: align.aligned_crops(
        image, boxes, landmarks, config), input_signature=[
        tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, 4], tf.float32),
        tf.TensorSpec([None, 5, 2], tf.float32)])
    landmarks = align.template_points(align.AlignConfig(image_size=32))[None] + 10
    for size in ((60, 70), (200, 90)):
        out = run(np.zeros(size + (3,), np.uint8), np.zeros((1, 4), np.float32), landmarks)
        assert out.shape == (1, 32, 32, 3)
    assert run.experimental_get_tracing_count() == 1


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="method"):
        align.AlignConfig(method="affine")
    with pytest.raises(ValueError, match="margin"):
        align.AlignConfig(margin=-1)
    with pytest.raises(ValueError, match="image_size"):
        align.AlignConfig(image_size=0)


@pytest.mark.integration
def test_landmarks_redetected_on_aligned_crops_are_where_the_transform_put_them(shared_data):
    """End to end on real faces: detect, warp, detect again on the 160 px crop. The second
    detection's landmarks must sit where the fitted transform maps the first ones (the fit
    itself leaves a few px between a real face and the template)."""
    lfw = os.path.join(shared_data, "lfw_dev", "images")
    rng = np.random.RandomState(3)
    people = sorted(os.listdir(lfw))
    images = [np.asarray(Image.open(os.path.join(lfw, p, f"{p}_0001.jpg")).convert("RGB"))
              for p in rng.choice(people, 12, replace=False)]
    detector = FaceDetector()
    config = align.AlignConfig(method="similarity")
    template = align.template_points(config)
    crops, mapped = [], []
    for image, found in zip(images, detector.detect(images)):
        i = main_face(found, *image.shape[:2])
        to_template = align.similarity_transform(found.landmarks[i], template)
        mapped.append(align.apply_transform(to_template, found.landmarks[i]).numpy())
        crop = align.aligned_crop(image, found.boxes[i], found.landmarks[i], config).numpy()
        crops.append(np.round(crop).astype(np.uint8))
    errors = []
    for crop, expected, again in zip(crops, mapped, detector.detect(crops)):
        i = main_face(again, *crop.shape[:2])
        errors.append(np.mean(np.linalg.norm(again.landmarks[i] - expected, axis=1)))
    # MTCNN's own landmark jitter between two views of a face is 1-2 px.
    assert np.median(errors) < 2.0 and np.max(errors) < 4.0, errors
