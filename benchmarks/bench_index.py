"""Photos/s of the indexing job (beam_jobs.index_faces) against today's `embed` command on the
same photos and cores, and the held-out verification accuracy of both.

    python -m benchmarks.bench_index [--quick]

Photos: the original LFW photos of the lfw_dev held-out protocol (experiments.protocol: 400
identities, 2,535 photos; prepared once in $FACENET_TF_LFW_DEV_WORK if set). Both commands run
end to end as a user runs them (a fresh process: Python and TensorFlow start-up, model load,
every face of every photo found and embedded, the output written), taking turns in every
round so load drifts reach all alike:
- embed: `python -m facenet_tf.embed --model SAVED_MODEL --input PHOTOS --output x.npz`, the
  pretrained FaceNet as `python -m facenet_tf.pretrained` exports it (the baseline);
- the job, in-process runner, with the same model as int8 TFLite (calibrated on the protocol's
  training identities), at the default --min_face_size 20 and at --min_face_size 40 (LFW's
  faces are 100 px and more; the pyramid then starts at 40 px faces).
Each command's CPU seconds (user + system, all its threads) are measured too: on a machine
shared with other work, wall-clock ratios also reflect how many threads each process can keep
runnable, while CPU ms a photo is what each costs. Accuracy: the held-out pairs (3,000, the protocol's 10 folds) verified with each photo's main
face from each output, against the embed output's (today's path); the target is at most 0.2
points lost. Where the time goes: each stage timed alone, in this process, on the first 200
photos (wall and CPU ms a photo), and the job's own per-stage counters.
Quick: 300 photos, one round, no min_face_size 40 variant.
"""

import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common
from experiments import heldout_collection as heldout
from facenet_tf.common import io_utils
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.detection.faces import align_detected, decode_photo, iter_detections
from facenet_tf.inference.batch_embed import align_config_for
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.pipelines.index_faces import EMBED_GROUP

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
TARGET_RATIO = 2.0
MAX_ACCURACY_LOSS = 0.002
FAST_MIN_FACE_SIZE = 40
PROFILE_PHOTOS = 200
COUNTERS = ("read_ms", "detect_ms", "align_ms", "embed_ms", "batch_ms")


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _command(args: list) -> tuple:
    """Runs `python -m ...` in a fresh process; returns its (wall, CPU) seconds."""
    started, cpu = time.perf_counter(), _child_cpu_seconds()
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT,
                            env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started, _child_cpu_seconds() - cpu


def runners(photos_dir: str, models: dict, work: str, quick: bool) -> dict:
    """name -> (callable returning (wall, CPU) seconds, output path)."""
    npz = os.path.join(work, "embed.npz")
    found = {"embed": (lambda: _command(["facenet_tf.embed", "--model", models["saved_model"],
                                         "--input", photos_dir, "--output", npz]), npz)}
    sizes = (20,) if quick else (20, FAST_MIN_FACE_SIZE)
    for size in sizes:
        out = os.path.join(work, f"index_min{size}")
        found[f"index_job_min{size}"] = (
            lambda out=out, size=size: _command([
                "beam_jobs.index_faces", "--input_dir", photos_dir, "--model",
                models["tflite_int8"], "--output_dir", out, "--min_face_size", str(size),
                "--full_rebuild"]), out)
    return found


def _timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def stage_profile(photos_dir: str, photos: list, models: dict) -> dict:
    """{stage: (wall ms, CPU ms) a photo} of each stage alone, warm, on these photos: read,
    decode, detect (at both minimum face sizes), align every face, embed every face with the
    SavedModel (embed's batches of 64) and with int8 TFLite (the job's groups)."""
    data = []
    for rel in photos:
        with open(os.path.join(photos_dir, rel), "rb") as f:
            data.append(f.read())
    n = len(photos)
    per_photo = lambda wall, cpu: (1000 * wall / n, 1000 * cpu / n)  # noqa: E731
    images, wall, cpu = _timed(lambda: [decode_photo(d) for d in data])
    profile = {"decode": per_photo(wall, cpu)}
    detected = None
    for size in (20, FAST_MIN_FACE_SIZE):
        detector = FaceDetector(min_face_size=size)
        detector.detect(images[:4])
        found, wall, cpu = _timed(lambda: list(iter_detections(detector, images)))
        profile[f"detect (min_face_size {size})"] = per_photo(wall, cpu)
        detected = detected or found
    int8 = load_embedder(models["tflite_int8"])
    align = align_config_for(int8)
    faces, wall, cpu = _timed(lambda: [align_detected(p, align, keep="all") for p in detected])
    profile["align"] = per_photo(wall, cpu)
    crops = np.concatenate([f.crops for f in faces if f.kept])
    saved = load_embedder(models["saved_model"])
    saved.embed_faces(crops[:64])
    _, wall, cpu = _timed(saved.embed_faces, crops, 64)
    profile["embed SavedModel (batches of 64)"] = per_photo(wall, cpu)
    int8.embed_faces(crops[:EMBED_GROUP])
    groups = [np.concatenate([f.crops for f in faces[i:i + EMBED_GROUP] if f.kept] or
                             [crops[:0]]) for i in range(0, n, EMBED_GROUP)]
    _, wall, cpu = _timed(lambda: [int8.embed_faces(g) for g in groups if len(g)])
    profile[f"embed int8 TFLite (groups of {EMBED_GROUP} photos)"] = per_photo(wall, cpu)
    return profile


def format_profile(profile: dict) -> str:
    lines = ["| stage | wall ms a photo | CPU ms a photo |", "|---|---|---|"]
    lines += [f"| {stage} | {wall:.2f} | {cpu:.2f} |" for stage, (wall, cpu) in profile.items()]
    return "\n".join(lines)


def run(quick: bool) -> list:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        protocol = heldout.prepare(work)
        models = heldout.prepare_models(protocol)
        photos_dir = os.path.join(work, "photos")
        photos = heldout.collection_folder(protocol, photos_dir, 300 if quick else None)
        n = len(photos)
        jobs = runners(photos_dir, models, work, quick)
        rounds = 1 if quick else 2
        seconds, cpu = {name: [] for name in jobs}, {name: [] for name in jobs}
        for k in range(rounds):
            for name, (fn, _) in jobs.items():
                wall, used = fn()
                seconds[name].append(wall)
                cpu[name].append(used)
                print(f"round {k + 1}: {name} {n / wall:.1f} photos/s ({wall:.1f} s, CPU "
                      f"{1000 * used / n:.1f} ms a photo; load {os.getloadavg()[0]:.1f})",
                      flush=True)
        counters = {name: io_utils.read_manifest(out) for name, (_, out) in jobs.items()
                    if name.startswith("index_job")}
        baseline_faces = heldout.main_faces_from_npz(jobs["embed"][1])
        saved = load_embedder(models["saved_model"])
        int8 = load_embedder(models["tflite_int8"])
        accuracy = {"embed": heldout.pairs_accuracy(baseline_faces, protocol, photos, photos_dir,
                                                        saved)}
        for name in counters:
            accuracy[name] = heldout.pairs_accuracy(
                heldout.main_faces_from_index(jobs[name][1]), protocol, photos, photos_dir, int8)
        profile = stage_profile(photos_dir, photos[:PROFILE_PHOTOS], models)
    load_after = os.getloadavg()[0]
    rates = {name: n / float(np.mean(s)) for name, s in seconds.items()}
    cpu_ms = {name: 1000 * float(np.mean(c)) / n for name, c in cpu.items()}
    print("\nWhere the time goes, each stage alone (this process, warm, "
          f"{min(n, PROFILE_PHOTOS)} photos):\n\n{format_profile(profile)}\n", flush=True)
    load = (f"1-min load average {load_before:.1f} before, {load_after:.1f} after, "
            f"{os.cpu_count()} cores")
    base = rates["embed"]
    note = f"{n} lfw_dev held-out photos, {rounds} alternating round(s), end to end; {load}"
    rows = [{"benchmark": "index", "metric": "embed_photos_per_s", "value": round(base, 1),
             "notes": note + f"; facenet_tf.embed, pretrained SavedModel; CPU "
                             f"{cpu_ms['embed']:.1f} ms a photo"}]
    for name, manifest in counters.items():
        c = manifest["beam_counters"]
        stages = ", ".join(f"{k} {c.get(k, 0) / 1000:.1f} s" for k in COUNTERS)
        rows.append({"benchmark": "index", "metric": f"{name}_photos_per_s",
                     "value": round(rates[name], 1), "baseline": round(base, 1),
                     "ratio": round(rates[name] / base, 2), "target": f">= {TARGET_RATIO:g}x",
                     "notes": f"int8 TFLite; CPU {cpu_ms[name]:.1f} ms a photo "
                              f"({cpu_ms['embed'] / cpu_ms[name]:.2f}x less than embed); "
                              f"{manifest['num_faces']} faces; last run "
                              f"{manifest['elapsed_seconds']:.1f} s in the job ({stages}; "
                              f"detect_ms is the main thread's wait for the detector, "
                              f"align_ms and embed_ms the embedding threads' work, summed)"})
    acc = {name: a["accuracy_mean"] for name, a in accuracy.items()}
    rows.append({"benchmark": "index", "metric": "embed_heldout_accuracy",
                 "value": round(acc["embed"], 4),
                 "notes": f"{accuracy['embed']['num_pairs']} held-out pairs, main faces, "
                          f"VAL@1e-3 {accuracy['embed']['val_at_far_1e-3']:.4f}"})
    for name in counters:
        rows.append({"benchmark": "index", "metric": f"{name}_heldout_accuracy",
                     "value": round(acc[name], 4), "baseline": round(acc["embed"], 4),
                     "ratio": round(acc[name] - acc["embed"], 4),
                     "target": f">= -{MAX_ACCURACY_LOSS:g} (difference)",
                     "notes": f"VAL@1e-3 {accuracy[name]['val_at_far_1e-3']:.4f}; "
                              f"{accuracy[name]['num_embedded_whole']} pair photos without a "
                              "main face, embedded whole"})
    for stage, (wall, cpu) in profile.items():
        rows.append({"benchmark": "index", "metric": f"stage: {stage}", "value": round(wall, 2),
                     "notes": f"wall ms a photo, alone; CPU {cpu:.2f} ms"})
    return rows


def main(argv=None):
    return common.bench_main(run, __doc__, "300 photos, one round, min_face_size 20 only",
                             argv)


if __name__ == "__main__":
    sys.exit(main())
