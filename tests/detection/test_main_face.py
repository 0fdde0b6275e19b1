"""The main-face rule (facenet_tf.detection.main_face) on hand-made detections: cases computed
by hand, the user's photo of issue 26, an LFW-style portrait, its guarantees on random
detections, and the in-graph rule (main_face_index) against the Python one."""

import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.detection import FaceDetections, main_face, main_face_index
from tests.conftest import old_main_face_rule


def _detections(boxes, scores=None):
    """FaceDetections in the order given (not re-sorted: the test decides who is first)."""
    n = len(boxes)
    scores = np.ones(n) if scores is None else np.asarray(scores)
    return FaceDetections(np.array(boxes, np.float32).reshape(-1, 4), scores,
                          np.zeros((n, 5, 2)))


def _square(cx, cy, side):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def test_by_hand():
    # Image 300 high, 400 wide: centre (200, 150), half-diagonal 250, so centrality falls
    # from 1 at the centre to 1/4 at 125 pixels from it.
    # A: 100x100 at the centre, score 1: 10000 x 1 x 1 = 10000.
    # B: 100x100, 62.5 px right of the centre: centrality 1 - 0.75 x 0.5 = 0.625 -> 6250.
    # C: 200x200 centred at (350, 250), 180 px away: centrality 1/4 -> 40000 / 4 = 10000.
    a, b, c = _square(200, 150, 100), _square(262.5, 150, 100), _square(350, 250, 200)
    assert main_face(_detections([b, a]), 300, 400) == 1
    # A and C tie exactly: the earlier one wins, either way round.
    assert main_face(_detections([a, c]), 300, 400) == 0
    assert main_face(_detections([c, a]), 300, 400) == 0
    # C at score 0.99: 0.99^4 x 10000 = 9606 < 10000: A. B at score 1 over A at 0.6:
    # 0.6^4 x 10000 = 1296 < 6250.
    assert main_face(_detections([c, a], [0.99, 1.0]), 300, 400) == 1
    assert main_face(_detections([a, b], [0.6, 1.0]), 300, 400) == 1
    assert main_face(_detections([]), 300, 400) is None


def test_the_users_photo_keeps_the_large_face_in_the_corner():
    """Issue 26: a 640x420 photo with a 200 px face in a corner, a 110 px face of someone
    else, and a 40x58 box of score 0.89 in the patterned background near the centre."""
    large = [20, 10, 220, 230]       # 200 x 220, top left, score 0.9999
    other = [470, 260, 580, 390]     # 110 x 130, bottom right, score 0.999
    pattern = [300, 190, 340, 248]   # 40 x 58, near the centre, score 0.89
    found = _detections([large, other, pattern], [0.9999, 0.999, 0.89])
    assert old_main_face_rule(found, 420, 640) == 2  # the bug
    assert main_face(found, 420, 640) == 0
    # Without the large face, the other real face still beats the box.
    assert main_face(_detections([other, pattern], [0.999, 0.89]), 420, 640) == 0


def test_a_centred_portrait_subject_beats_a_larger_face_at_the_edge():
    """LFW-style: a 250x250 portrait centred on its subject, with a larger, clear face of
    someone beside them cut by the edge of the frame."""
    subject = [75, 65, 175, 185]          # 100 x 120 at the centre, score 0.9995
    neighbour = [150, 20, 250, 260]       # 100 x 240, twice the area, score 0.99999
    found = _detections([neighbour, subject], [0.99999, 0.9995])
    assert main_face(found, 250, 250) == 1
    # The old rule took the neighbour: 24000 - 2 x (75^2 + 15^2) = 12300 > 12000.
    assert old_main_face_rule(found, 250, 250) == 0


def _random_detections(rng, n):
    height, width = rng.randint(80, 2000, size=2)
    side = rng.uniform(4, min(height, width) / 2, size=n)
    aspect = rng.uniform(0.8, 1.4, size=n)
    cx, cy = rng.uniform(0, width, size=n), rng.uniform(0, height, size=n)
    boxes = np.stack([cx - side / 2, cy - side * aspect / 2, cx + side / 2,
                      cy + side * aspect / 2], axis=1)
    scores = rng.uniform(0.7, 1.0, size=n)
    return boxes, scores, int(height), int(width)


def _area(boxes):
    boxes = np.asarray(boxes, np.float64)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def test_a_clearly_larger_more_confident_face_is_never_passed_over():
    """Whatever the positions: the chosen face has no rival with more than 4x its area and at
    least its score, nor any rival with area x score^4 above 4x its own."""
    rng = np.random.RandomState(0)
    for _ in range(2000):
        found = _detections(*_random_detections(rng, rng.randint(2, 7))[:2])
        height, width = rng.randint(80, 2000, size=2)
        chosen = main_face(found, height, width)
        area, score = _area(found.boxes), found.scores.astype(np.float64)
        strength = area * score ** 4
        for j in range(len(found)):
            assert not (area[j] > 4 * area[chosen] and score[j] >= score[chosen])
            assert not strength[j] > 4 * strength[chosen] * (1 + 1e-9)


def test_larger_more_confident_and_more_central_is_valued_at_least_as_high():
    rng = np.random.RandomState(1)
    for _ in range(500):
        boxes, scores, height, width = _random_detections(rng, 1)
        box, score = boxes[0], scores[0]
        # The same box moved toward the image centre, grown, and more confident.
        centre = np.array([width / 2, height / 2])
        middle, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
        middle = centre + (middle - centre) * rng.uniform(0, 1)
        half = half + rng.uniform(0, 20)
        better = min(1.0, score + rng.uniform(0, 0.1))
        found = _detections([box, np.concatenate([middle - half, middle + half])],
                            [score, better])
        # Not chosen only on an exact tie (the first wins): then the values are equal.
        chosen = main_face(found, height, width)
        assert chosen == 1 or main_face(_detections(found.boxes[::-1],
                                                    found.scores[::-1]), height, width) == 0


@pytest.fixture(scope="module")
def graph_rule():
    return tf.function(main_face_index, input_signature=[
        tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])


def test_the_graph_rule_agrees_with_the_python_rule(graph_rule):
    rng = np.random.RandomState(2)
    for trial in range(300):
        boxes, scores, height, width = _random_detections(rng, rng.randint(0, 8))
        if trial % 5 == 0 and len(boxes) > 1:  # exact ties: duplicates of the best box
            best = main_face(_detections(boxes, scores), height, width)
            boxes[-1], scores[-1] = boxes[best], scores[best]
        found = _detections(boxes, scores)
        python = main_face(found, height, width)
        graph = int(graph_rule(found.boxes, found.scores.astype(np.float32), height, width))
        assert graph == (-1 if python is None else python), (boxes, scores, height, width)
