"""FaceDetector: MTCNN face boxes, scores and 5 landmarks for a list of images of any sizes.

Images of the same size are stacked and run through the cascade together (at most
max_batch_pixels pixels per run), so R-Net and O-Net see the candidates of all images of a
run in one batch. The cascade is one tf.function over uint8 [B, H, W, 3] with unknown B, H and
W (traced once, without autograph: its loops are explicit tf.while_loop/tf.cond, and autograph's
conversion tripled the trace time), which is also what a SavedModel signature can hold.
"""

import collections
import concurrent.futures
import dataclasses
import typing

import numpy as np
import tensorflow as tf

from facenet_tf.detection import cascade, networks

IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
OUTPUT_NAMES = ("image_index", "boxes", "scores", "landmarks")
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# FaceDetector(max_batch_pixels=ONE_IMAGE_PER_RUN): every image is a cascade run of its own.
ONE_IMAGE_PER_RUN = 1


def _read_only(array, dtype, shape_tail):
    array = np.ascontiguousarray(np.asarray(array, dtype=dtype).reshape((-1,) + shape_tail))
    array.flags.writeable = False
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class FaceDetections:
    """The faces found in one image, sorted by score (descending), ties by x1 then y1.

    boxes: float32 [n, 4] (x1, y1, x2, y2) in pixels; pixel (row i, column j) covers
      [j, j+1) x [i, i+1).
    scores: float32 [n] O-Net face probability.
    landmarks: float32 [n, 5, 2] (x, y) of LANDMARK_NAMES: the eye, mouth corner on the image's
      left first (the person's right), then the other eye, nose, and so on.
    Arrays are read-only.
    """
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "boxes", _read_only(self.boxes, np.float32, (4,)))
        object.__setattr__(self, "scores", _read_only(self.scores, np.float32, ()))
        object.__setattr__(self, "landmarks", _read_only(self.landmarks, np.float32, (5, 2)))
        n = len(self.boxes)
        if len(self.scores) != n or len(self.landmarks) != n:
            raise ValueError(f"boxes ({n}), scores ({len(self.scores)}) and landmarks "
                             f"({len(self.landmarks)}) differ in count")

    def __len__(self):
        return len(self.boxes)

    @classmethod
    def sorted(cls, boxes, scores, landmarks) -> "FaceDetections":
        """Detections in the canonical order: score descending, then x1, then y1."""
        boxes, scores = np.asarray(boxes), np.asarray(scores)
        order = np.lexsort((boxes[:, 1], boxes[:, 0], -scores)) if len(scores) else []
        return cls(boxes[order], scores[order], np.asarray(landmarks)[order])


# The main-face rule, its constants written once: main_face (NumPy), main_face_index (TF ops,
# the SavedModel's detect_and_embed) and the align job's manifest (MAIN_FACE_RULE) use them.
MAIN_FACE_SCORE_POWER = 4
MAIN_FACE_EDGE_WEIGHT = 0.25
MAIN_FACE_REACH = 0.5
MAIN_FACE_RULE = (
    f"per photo the face with the largest box area x score^{MAIN_FACE_SCORE_POWER} x "
    f"centrality; centrality falls linearly from 1 at the image centre to "
    f"{MAIN_FACE_EDGE_WEIGHT} at {MAIN_FACE_REACH} x the half-diagonal from it, and stays "
    f"{MAIN_FACE_EDGE_WEIGHT} beyond; ties to the higher-scored face "
    "(facenet_tf.detection.main_face)")


def main_face_values(boxes, scores, height, width, math=np):
    """What the main-face rule maximises, per box: area x score^MAIN_FACE_SCORE_POWER x
    centrality (see main_face). `math` is numpy (float64 arrays) or tf.math (float32 tensors);
    height and width are numbers of that type."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    dx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
    dy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
    reach = MAIN_FACE_REACH * math.sqrt(height * height + width * width) / 2
    far = math.minimum(math.sqrt(dx * dx + dy * dy) / reach, 1.0)
    centrality = 1.0 - (1.0 - MAIN_FACE_EDGE_WEIGHT) * far
    return area * scores ** MAIN_FACE_SCORE_POWER * centrality


def main_face(detections: FaceDetections, image_height: int, image_width: int):
    """Index of the photo's main face (the face evaluate --align and the align job keep,
    embed marks is_main and detect_and_embed returns as main_face), or None if there is none.

    The face with the largest  area x score^4 x centrality, where area is the box's in
    pixels, score the detector's, and centrality falls linearly from 1 at the image centre to
    1/4 at a quarter of the image diagonal from it (half the half-diagonal), staying 1/4
    beyond (the MAIN_FACE_* constants). Ties go to the earlier face in the detections' order
    (the higher score).

    What it guarantees, wherever the two faces are in the photo:
    - a face with at least the score of another and at least 4 times its area (twice as
      wide) is chosen over it: a clearly larger, more confident face never loses to a small,
      low-scored box near the centre;
    - more generally, face A beats face B whenever
      area_A x score_A^4 > 4 x area_B x score_B^4; e.g. a face of score 0.999 beats any
      box of score 0.89 with less than 39% of its area;
    - a face at least as large, as confident and as central as another is valued at least
      as high.
    And, as in a portrait such as LFW's: a subject at the centre keeps its place against a
    face a quarter diagonal or more away unless that one is 4 times larger (at equal scores).

    It replaces davidsandberg/facenet's align_dataset_mtcnn rule (largest area - 2 x squared
    pixel distance from the centre), which let a small box near the centre beat a large face
    off-centre (issue 26: a 40x58 box of score 0.89 in a patterned background over a 200 px
    face in a corner), because its distance term grows with the photo and knows no score. On the 10,492 lfw_dev photos
    (1,612 with several faces) the two rules pick a different face in 2 photos, both times
    the real face over a box of score 0.94-0.96 that straddles two faces
    (experiments/main_face_rule.py).
    """
    if len(detections) == 0:
        return None
    values = main_face_values(detections.boxes.astype(np.float64),
                              detections.scores.astype(np.float64),
                              float(image_height), float(image_width))
    return int(np.argmax(values))


def main_face_index(boxes, scores, height, width):
    """main_face as TF ops, for graphs (the SavedModel's detect_and_embed): boxes [n, 4],
    scores [n], the image's height and width -> int32 index of the main face, -1 if n = 0.
    Ties go to the first (as main_face)."""
    values = main_face_values(tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32),
                              tf.cast(height, tf.float32), tf.cast(width, tf.float32),
                              math=tf.math)

    def first_best():
        best = tf.where(tf.equal(values, tf.reduce_max(values)))[:, 0]
        return tf.cast(tf.reduce_min(best), tf.int32)

    return tf.cond(tf.size(values) > 0, first_best, lambda: tf.constant(-1, tf.int32))


def as_rgb(image, index=None) -> np.ndarray:
    """uint8 [H, W], [H, W, 1] or [H, W, 3] -> uint8 [H, W, 3] (grey repeated); anything else
    raises, naming the image's position in the input list."""
    where = "image" if index is None else f"image {index}"
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 pixels, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"{where}: expected shape [H, W], [H, W, 1] or [H, W, 3], "
                         f"got {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


class FaceDetector(tf.Module):
    """MTCNN with the weights of PyPI mtcnn==1.0.0 (loaded once, at construction)."""

    def __init__(self, min_face_size: float = 20.0, thresholds=(0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, nms_thresholds=(0.5, 0.7, 0.7, 0.7),
                 weights_dir: str | None = None, max_batch_pixels: int = 250_000,
                 parallel_runs: int = 1):
        """weights_dir: folder with pnet.lz4, rnet.lz4, onet.lz4 (default: the installed mtcnn
        package's). max_batch_pixels bounds how many pixels one cascade run stacks: small runs
        keep the feature maps in cache (measured on 2 cores: 4 LFW images per run about 2x
        the images/s of 64 per run). ONE_IMAGE_PER_RUN makes every image a run of its own, so
        that its detections do not depend on which images share its run: on some CPUs (AVX2
        AMD EPYC) a convolution's or matmul's float rounding depends on the batch size.
        parallel_runs: cascade runs detect_runs keeps in flight on threads of its own (a run's
        small ops leave cores idle that the next run can use); the detections do not depend
        on it."""
        super().__init__(name="face_detector")
        self.config = cascade.CascadeConfig(min_face_size, tuple(thresholds), scale_factor,
                                            tuple(nms_thresholds))
        if max_batch_pixels < 1:
            raise ValueError(f"max_batch_pixels must be >= 1, got {max_batch_pixels!r}")
        if parallel_runs < 1:
            raise ValueError(f"parallel_runs must be >= 1, got {parallel_runs!r}")
        self.max_batch_pixels = int(max_batch_pixels)
        self.parallel_runs = int(parallel_runs)
        self.networks = networks.MtcnnNetworks(weights_dir)

    @tf.function(input_signature=[IMAGE_SPEC], autograph=False)
    def detect_batch(self, images):
        """uint8 [B, H, W, 3] (RGB, one size) -> every face of the batch, flat: {"image_index":
        int32 [n], "boxes": [n, 4], "scores": [n], "landmarks": [n, 5, 2]}, each image's faces
        by descending score. Usable as a SavedModel signature as it is."""
        outputs = cascade.detect_batch(self.networks, images, self.config)
        return dict(zip(OUTPUT_NAMES, outputs))

    def detect(self, images: typing.Sequence[np.ndarray]) -> list:
        """One FaceDetections per image. Images: uint8 RGB [H, W, 3] of any sizes; greyscale
        [H, W] or [H, W, 1] is repeated to 3 channels here."""
        found = [None] * len(images)
        for index, detections in self.detect_runs(images):
            found[index] = detections
        return found

    def detect_runs(self, images: typing.Sequence[np.ndarray]):
        """(index into images, FaceDetections) pairs as each cascade run finishes (images of
        one size together, in input order within a size), so a caller can align and write
        the faces of one run while the next is detected. Up to parallel_runs runs are
        detected at once; they are yielded in the same order either way."""
        rgb = [as_rgb(image, i) for i, image in enumerate(images)]
        by_size = collections.defaultdict(list)
        for i, image in enumerate(rgb):
            by_size[image.shape[:2]].append(i)
        runs = []
        for (height, width), members in by_size.items():
            per_run = max(1, self.max_batch_pixels // max(height * width, 1))
            runs += [members[start:start + per_run]
                     for start in range(0, len(members), per_run)]
        detect = lambda run: self._detect_run([rgb[i] for i in run])  # noqa: E731
        results = map(detect, runs) if self.parallel_runs == 1 else self._in_flight(detect, runs)
        for run, found in zip(runs, results):
            yield from zip(run, found)

    def _in_flight(self, detect, runs):
        """detect(run) of each run in order, parallel_runs of them running at a time."""
        with concurrent.futures.ThreadPoolExecutor(self.parallel_runs,
                                                   thread_name_prefix="detect_run") as pool:
            yield from pool.map(detect, runs)

    def _detect_run(self, images: list) -> list:
        """FaceDetections of each of a few same-size RGB images, in one cascade run."""
        outputs = self.detect_batch(tf.constant(np.stack(images)))
        image_index, boxes, scores, landmarks = (outputs[name].numpy() for name in OUTPUT_NAMES)
        found = []
        for k in range(len(images)):
            mine = image_index == k
            found.append(FaceDetections.sorted(boxes[mine], scores[mine], landmarks[mine]))
        return found
