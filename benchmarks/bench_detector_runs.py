"""What the index job pays for detecting every photo in a cascade run of its own: the
detector's images/s with one image a run (FaceDetector(max_batch_pixels=ONE_IMAGE_PER_RUN),
the index job's setting) against its default runs (same-size images stacked, 4 LFW images a
run), both as the jobs' workers run it (two runs at once, each op on one thread), in
alternating rounds on the same seeded LFW sample; and how many images get other bytes
(boxes, scores, landmarks) in the default runs than alone, which is why the job runs them
alone (on some CPUs a batch's float rounding depends on its size).

python -m benchmarks.bench_detector_runs [--quick]
"""

import sys

import numpy as np

from benchmarks import common
from benchmarks.bench_detection import alternating_rates, lfw_sample
from facenet_tf.detection.detector import ONE_IMAGE_PER_RUN, FaceDetector
from facenet_tf.pipelines import beam_utils


def _bytes(detections) -> bytes:
    return detections.boxes.tobytes() + detections.scores.tobytes() + \
        detections.landmarks.tobytes()


def run(quick: bool = False) -> list:
    if not beam_utils.one_thread_per_op():
        raise RuntimeError("run this benchmark in a fresh process (TensorFlow had started)")
    n, rounds = (100, 1) if quick else (400, 3)
    _, images = lfw_sample(n, seed=0)
    default = FaceDetector(parallel_runs=beam_utils.DETECTOR_RUNS_IN_FLIGHT)
    alone = FaceDetector(parallel_runs=beam_utils.DETECTOR_RUNS_IN_FLIGHT,
                         max_batch_pixels=ONE_IMAGE_PER_RUN)
    rates = alternating_rates({"default_runs": default.detect, "one_image_per_run": alone.detect},
                              images, rounds)
    differ = sum(_bytes(a) != _bytes(b)
                 for a, b in zip(default.detect(images), alone.detect(images)))
    base, mine = float(np.mean(rates["default_runs"])), float(np.mean(rates["one_image_per_run"]))
    rounds_text = ", ".join(f"{a / b:.2f}" for a, b in zip(rates["one_image_per_run"],
                                                             rates["default_runs"]))
    note = (f"{n} LFW 250x250 images (seed 0), {rounds} alternating round(s) (ratios "
            f"{rounds_text}); two runs at once, one thread per op")
    return [
        {"benchmark": "detector_runs", "metric": "default_runs_images_per_s",
         "value": round(base, 2), "baseline": None, "ratio": None, "target": None,
         "notes": note + "; FaceDetector's default max_batch_pixels"},
        {"benchmark": "detector_runs", "metric": "one_image_per_run_images_per_s",
         "value": round(mine, 2), "baseline": round(base, 2), "ratio": round(mine / base, 2),
         "target": None, "notes": note + "; the index job's setting"},
        {"benchmark": "detector_runs", "metric": "images_whose_bytes_differ",
         "value": int(differ), "baseline": n, "ratio": None, "target": None,
         "notes": "images whose detections (boxes, scores, landmarks) differ in bytes between "
                  "the default runs and one image a run (0 on CPUs whose kernels round alike "
                  "at every batch size)"},
    ]


def main(argv=None):
    return common.bench_main(run, __doc__, "100 images, one round", argv)


if __name__ == "__main__":
    sys.exit(main())
