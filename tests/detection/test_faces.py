"""facenet_tf.detection.faces: photos (bytes or pixels, mixed sizes, some unreadable) to each
photo's faces in input order; the streaming form (iter_detections, what the alignment job
uses with a thread pool) gives the same photos as the list form."""

import concurrent.futures
import io
import os

import numpy as np
import pytest
from PIL import Image

from facenet_tf.detection import AlignConfig, FaceDetector, main_face
from facenet_tf.detection import faces as faces_module
from facenet_tf.detection.faces import align_detected, find_faces, iter_detections


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def _png(pixels) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(shared_data):
    """(encoded photos, pixels or None): an LFW face pasted at a known place on two canvas
    sizes, a blank canvas, and a file that is not an image; bytes and arrays mixed."""
    face = np.asarray(Image.open(os.path.join(shared_data, "lfw_dev", "images", "Aaron_Peirsol",
                                              "Aaron_Peirsol_0001.jpg")).convert("RGB"))[40:210,
                                                                                         50:200]
    rng = np.random.RandomState(0)
    arrays = []
    for (height, width), (x, y) in (((300, 400), (30, 60)), ((260, 260), (90, 40)),
                                    ((300, 400), (220, 100))):
        canvas = np.clip(rng.normal(120, 15, (height, width, 3)), 0, 255).astype(np.uint8)
        canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
        arrays.append(canvas)
    blank = np.full((200, 240, 3), 128, np.uint8)
    inputs = [_png(arrays[0]), b"not an image at all", arrays[1], _png(blank), _png(arrays[2])]
    pixels = [arrays[0], None, arrays[1], blank, arrays[2]]
    return inputs, pixels


@pytest.mark.integration
def test_find_faces_keeps_input_order_and_reports_unreadable(detector, photos):
    inputs, pixels = photos
    config = AlignConfig(image_size=48)
    names = [f"p{i}" for i in range(len(inputs))]
    found = find_faces(detector, inputs, config, keep="main", names=names)
    assert [f.name for f in found] == names
    assert found[1].error and "not an image" in found[1].error
    assert found[3].num_faces == 0 and found[3].main is None and found[3].crops.shape[0] == 0
    for i in (0, 2, 4):
        # The oracle: the detector on the pixels alone, one photo at a time, and the main-face
        # rule applied to its detections.
        alone = detector.detect([pixels[i]])[0]
        np.testing.assert_allclose(found[i].detections.boxes, alone.boxes, atol=1e-3)
        assert found[i].main == main_face(alone, *pixels[i].shape[:2])
        assert found[i].crops.shape == (1, 48, 48, 3) and found[i].crops.dtype == np.uint8


@pytest.mark.integration
def test_iter_detections_on_threads_gives_every_photo_once_and_the_same_faces(detector,
                                                                              photos):
    inputs, _ = photos
    config = AlignConfig(image_size=48)
    serial = find_faces(detector, inputs, config, keep="all")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        streamed = list(iter_detections(detector, inputs, map_fn=pool.map))
        aligned = list(pool.map(lambda p: align_detected(p, config, keep="all"), streamed))
    assert sorted(p.index for p in streamed) == list(range(len(inputs)))
    assert streamed[0].index == 1  # unreadable photos come first, before any detection
    for photo, faces in zip(streamed, aligned):
        expected = serial[photo.index]
        assert faces.name == expected.name and faces.error == expected.error
        if expected.error is None:
            assert faces.kept == expected.kept
            np.testing.assert_array_equal(faces.crops, expected.crops)


@pytest.mark.integration
def test_iter_detections_detects_before_decoding_past_its_pixel_budget(detector, photos,
                                                                      monkeypatch):
    """With a budget smaller than any photo and one photo decoded per step, every detector
    pass holds one photo (decoding stops once the budget is reached), and the faces are those
    of one pass over all the photos."""
    inputs, pixels = photos
    whole = {p.index: p for p in iter_detections(detector, inputs)}
    passes = []
    detect_runs = FaceDetector.detect_runs

    def recording(self, images):
        passes.append(len(images))
        return detect_runs(self, images)

    monkeypatch.setattr(FaceDetector, "detect_runs", recording)
    monkeypatch.setattr(faces_module, "DECODE_STEP", 1)
    parts = list(iter_detections(detector, inputs, max_decoded_pixels=1))
    readable = sum(p is not None for p in pixels)
    assert passes == [1] * readable  # each readable photo alone (the unreadable one: no pass)
    assert [p.index for p in parts] == list(range(len(inputs)))
    for photo in parts:
        expected = whole[photo.index]
        assert photo.name == expected.name and photo.error == expected.error
        if expected.error is None:
            np.testing.assert_array_equal(photo.pixels, expected.pixels)
            np.testing.assert_array_equal(photo.detections.boxes, expected.detections.boxes)
            np.testing.assert_array_equal(photo.detections.scores, expected.detections.scores)


def test_keep_must_be_main_or_all(detector):
    with pytest.raises(ValueError, match="keep must be one of"):
        find_faces(detector, [], AlignConfig(), keep="largest")
