"""Face detection throughput: facenet_tf.detection.FaceDetector (batched) against the PyPI
mtcnn package called one image at a time (`MTCNN().detect_faces(image)` in a loop, its usual
use), on the same seeded sample of LFW images, in alternating rounds of the same run; and the
face-alignment Beam job (beam_jobs.align_faces, in-process) over the same images as files, in
the same rounds.

Both detectors run the same three networks with the same weights; the difference is batching
(same-size images stacked, R-Net and O-Net over all candidates of a run at once) and one
compiled graph per run instead of eager stages with NumPy in between. The job's rate is end to
end (start-up, building and tracing its detector, reading and decoding the JPEGs, detection in
its 32-photo batches, aligning and writing each crop as PNG, the manifest), against the
module's on decoded images.

python -m benchmarks.bench_detection [--quick]
"""

import glob
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from mtcnn import MTCNN
from PIL import Image

from benchmarks import common
from facenet_tf.detection import FaceDetector
from facenet_tf.pipelines.align_faces import AlignJobConfig, align_faces

SHARED_LFW = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
                          os.pardir, "shared", "data", "lfw_dev", "images")
TARGET_RATIO = 3.0
JOB_TARGET_RATIO = 0.7


def lfw_sample(n: int, seed: int = 0, root: str = SHARED_LFW) -> tuple:
    """(paths, uint8 RGB images) of n LFW images drawn without replacement with `seed`."""
    paths = sorted(glob.glob(os.path.join(root, "*", "*.jpg")))
    if len(paths) < n:
        raise FileNotFoundError(f"{root}: {len(paths)} LFW images, the benchmark needs {n}")
    chosen = [paths[i] for i in np.random.RandomState(seed).choice(len(paths), n, replace=False)]
    return chosen, [np.asarray(Image.open(p).convert("RGB")) for p in chosen]


def alternating_rates(runners: dict, images: list, rounds: int, warmup: int = 4,
                      cold: tuple = ()) -> dict:
    """{name: [images/s per round]} of each runner(images), the runners taking turns within
    every round so load drifts reach all alike. Each runner not named in `cold` first gets
    `warmup` images once (tracing, model building); a cold runner pays its start-up in every
    round (the alignment job builds and traces its own detector in every run, as a real run
    does)."""
    for name, run in runners.items():
        if name not in cold:
            run(images[:warmup])
    rates = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(images)
            rates[name].append(len(images) / (time.perf_counter() - start))
    return rates


def detection_runners() -> dict:
    """The two ways of detecting faces in a list of images, each a callable(images)."""
    package = MTCNN()
    detector = FaceDetector()
    return {"facenet_tf_batched": detector.detect,
            "mtcnn_package_loop": lambda images: [package.detect_faces(i) for i in images]}


class AlignJobRunner:
    """callable(images) running beam_jobs.align_faces' pipeline (in-process runner, the job's
    defaults) over `paths`, the files those images were decoded from, copied once into an
    identity-per-folder tree; keeps each run's seconds inside its detect-align-write stage."""

    def __init__(self, paths: list, work_dir: str):
        self.photos = os.path.join(work_dir, "photos")
        self.output = os.path.join(work_dir, "aligned")
        self.count = len(paths)
        for path in paths:
            person = os.path.basename(os.path.dirname(path))
            os.makedirs(os.path.join(self.photos, person), exist_ok=True)
            shutil.copy(path, os.path.join(self.photos, person))
        self.stage_seconds = []

    def __call__(self, images):
        manifest = align_faces(AlignJobConfig(self.photos, self.output))
        if manifest["num_photos"] != self.count:
            raise RuntimeError(f"the job read {manifest['num_photos']} of {self.count} photos")
        self.stage_seconds.append(manifest["beam_counters"].get("detect_align_write_ms", 0)
                                  / 1000)


def run(quick: bool) -> list:
    n, rounds = (100, 1) if quick else (500, 2)
    paths, images = lfw_sample(n)
    with tempfile.TemporaryDirectory() as work:
        job = AlignJobRunner(paths, work)
        rates = alternating_rates({**detection_runners(), "align_faces_job": job}, images,
                                  rounds, cold=("align_faces_job",))
    mine = float(np.mean(rates["facenet_tf_batched"]))
    package = float(np.mean(rates["mtcnn_package_loop"]))
    job_rate = float(np.mean(rates["align_faces_job"]))
    job_seconds = n / job_rate
    stage_seconds = float(np.mean(job.stage_seconds))
    note = f"{n} LFW 250x250 images (seed 0), {rounds} alternating round(s)"
    return [
        {"benchmark": "detection", "metric": "mtcnn_package_loop_images_per_s",
         "value": round(package, 2), "baseline": None, "ratio": None, "target": None,
         "notes": note + "; MTCNN().detect_faces(image) per image"},
        {"benchmark": "detection", "metric": "facenet_tf_batched_images_per_s",
         "value": round(mine, 2), "baseline": round(package, 2),
         "ratio": round(mine / package, 2), "target": f">= {TARGET_RATIO:g}x",
         "notes": note + "; FaceDetector().detect(images) on decoded images, warm, default "
                  "max_batch_pixels"},
        {"benchmark": "detection", "metric": "align_faces_job_images_per_s",
         "value": round(job_rate, 2), "baseline": round(mine, 2),
         "ratio": round(job_rate / mine, 2), "target": f">= {JOB_TARGET_RATIO:g}x",
         "notes": f"the same {n} images as JPEG files; beam_jobs.align_faces in-process, end "
                  f"to end, in the same rounds ({job_seconds:.1f} s a run, of which "
                  f"{stage_seconds:.1f} s read, decode, detect in 32-photo batches, align and "
                  "PNG writes; the rest Beam start-up and publishing; every run builds and "
                  "traces its own detector) vs the module's rate above"},
    ]


def main(argv=None):
    return common.bench_main(run, __doc__, "100 images, one round", argv)


if __name__ == "__main__":
    sys.exit(main())
