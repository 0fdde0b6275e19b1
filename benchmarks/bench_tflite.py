"""On-device export: TFLite float32 and int8 (facenet_tf.serving.tflite) against the SavedModel
(facenet_tf.export), per network, in one run: file size, images/s at batch 1 on 1 and on 2
threads, held-out verification accuracy and VAL@FAR=1e-3 (float embeddings, and the int8 byte
codes of facenet_tf.models.quantize) on two protocols.

Networks: NNS2, NNS1 and NN4 trained on ORL, and the pretrained Inception-ResNet-v1 (FaceNet
20180408-102900, models.pretrained) as it is. The ORL networks follow the demo's protocol: the
bundled ORL faces split by identity (seed 0) into 30 training and 10 held-out identities; each
is trained on the 30 with the demo recipe (configs/orl_demo.flags: offline semi-hard mining by
Beam, re-mined half-way, Adam, seed 0) for TRAIN_STEPS[name] steps, a brief budget (the
comparison is between forms of the same weights, not of well-trained networks; but a network
trained for only a few dozen steps maps faces close together, where int8's small errors flip
decisions: NN4 after 30 steps lost 2.8 points in int8, 2026-12-02), then exported three ways
from the same weights; int8 is calibrated on 200 training images (ORL's; lfw_dev's training
identities for the pretrained model).

Protocols: "orl", the demo's verification pairs on the 10 held-out ORL identities
(generate_pairs, 5 identity-disjoint folds, seed 0, 900 pairs); "lfw_dev", the held-out
protocol of docs/experiments.md (experiments.protocol: the lfw_dev photos aligned by the
align_faces job, 400 held-out identities, 3,000 pairs in 10 identity-disjoint folds), where
0.5 points are 15 pairs instead of 4.5. The ORL networks meet lfw_dev's colour photos for the
first time there (they saw 30 people in grey), so their accuracy is low; the comparison of
their three forms still holds. The aligned lfw_dev protocol is prepared in the run (about 5
minutes) unless FACENET_TF_LFW_DEV_WORK names a directory to keep it in between runs.

Accuracy is given twice for each form: with the per-fold thresholds re-learnt on its own
distances (the protocol as `facenet_tf.evaluate` runs it), and at the float32 model's per-fold
thresholds (how an app decides that ships one threshold with both files). The int8 target is
judged on the second, a paired comparison: re-learning moves a threshold with any change of
the distances and, on 900 pairs, flipped 5-6 pairs either way (int8 "gaining" 0.67 points
on one network and losing 0.67 on another in the same run, 2026-12-06).

Speed: the SavedModel's `embed` signature (XLA at batch 1) with TF's intra/inter-op threads set
to 1 or 2; TFLite run by LiteRT (ai_edge_litert, XNNPACK) with the interpreter's num_threads;
one image per call, median of alternating rounds, each thread count in its own process.

    python -m benchmarks.bench_tflite [--quick]
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks import common
from experiments import protocol as lfw_protocol
from facenet_tf import datasets
from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data.image_files import list_images, read_encoded
from facenet_tf.data.splits import split_identities
from facenet_tf.evaluation.protocols import evaluate_pairs_file
from facenet_tf.inference.embedders import load_embedder, load_tflite_embedder
from facenet_tf.models.frozen_graph import PRETRAINED_CROP_PREPROCESS, build_pretrained_model
from facenet_tf.pipelines.build_dataset import build_dataset
from facenet_tf.serving import tflite, tflite_runtime
from facenet_tf.serving.saved_model import export_saved_model
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.loop import train
from facenet_tf.training.restore import restore_network

NETWORKS = ("nns2", "nns1", "nn4", "pretrained")
TRAIN_STEPS = {"nns2": 300, "nns1": 160, "nn4": 300, "pretrained": 0}
QUICK_NETWORKS = ("nns2",)
QUICK_STEPS = 20
VARIANTS = ("saved_model", "tflite_float32", "tflite_int8")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
FLAGFILE = os.path.join(REPO_ROOT, "configs", "orl_demo.flags")
HELDOUT_IDENTITIES = 10
NUM_FOLDS = 5
SEED = 0


def _prepare_data(work: str) -> dict:
    """The "orl" protocol (the demo's split of ORL) and its training dataset: {"dataset",
    "images", "pairs"}."""
    split = os.path.join(work, "split")
    split_identities(datasets.ORL_FACES_DIR, os.path.join(split, "train"),
                     os.path.join(split, "heldout"), HELDOUT_IDENTITIES, SEED)
    dataset = os.path.join(work, "dataset")
    build_dataset(os.path.join(split, "train"), dataset, num_shards=4)
    heldout = os.path.join(split, "heldout")
    pairs_path = os.path.join(work, "heldout_pairs.txt")
    pairs_lib.write_pairs(pairs_path, pairs_lib.generate_pairs(heldout, num_folds=NUM_FOLDS,
                                                               seed=SEED), num_folds=NUM_FOLDS)
    return {"dataset": dataset, "images": heldout, "pairs": pairs_path}


def _prepare_lfw(work: str) -> dict | None:
    """The "lfw_dev" protocol (experiments.protocol's defaults), or None without the shared
    lfw_dev photos."""
    if not os.path.isdir(lfw_protocol.LFW_IMAGES):
        print(f"lfw_dev protocol skipped: {lfw_protocol.LFW_IMAGES} not found", flush=True)
        return None
    where = os.environ.get(lfw_protocol.LFW_WORK_ENV) or os.path.join(work, "lfw_dev")
    os.makedirs(where, exist_ok=True)
    prepared = lfw_protocol.prepare_data(where, lfw_protocol.default_params())
    return {"dataset": prepared["dataset"], "images": prepared["heldout_images_root"],
            "pairs": prepared["pairs_path"]}


def _train(name: str, steps: int, dataset: str, model_dir: str) -> float:
    """Trains `name` with the demo recipe (facenet_tf.train(config), in this process);
    returns seconds."""
    config = TrainConfig.from_flagfile(
        FLAGFILE, train_data=dataset, model_dir=model_dir, architecture=name, steps=steps,
        remine_every_steps=max(1, steps // 2), checkpoint_every_steps=steps, seed=SEED,
        verbose=2)
    start = time.time()
    train(config)
    return time.time() - start


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def _weights(name: str, steps: int, orl: dict, lfw: dict | None, work: str) -> tuple:
    """(Keras model, preprocess, calibration dataset, training seconds) of one network: an ORL
    network trained `steps` steps, or the pretrained model as it is (calibrated on lfw_dev's
    training identities when that protocol is there, else on ORL's)."""
    if name == "pretrained":
        return (build_pretrained_model(), PRETRAINED_CROP_PREPROCESS,
                (lfw or orl)["dataset"], 0.0)
    model_dir = os.path.join(work, f"run_{name}")
    train_s = _train(name, steps, orl["dataset"], model_dir)
    restored = restore_network(os.path.join(model_dir, "checkpoints"))
    return restored.network, restored.preprocess, orl["dataset"], train_s


def _export(model, preprocess, out: str, calibration_data: str) -> dict:
    """The weights as a SavedModel and as TFLite files; their paths and sizes."""
    saved = export_saved_model(model, os.path.join(out, "saved_model"), preprocess)
    start = time.time()
    meta = tflite.export_tflite(model, os.path.join(out, "tflite"), preprocess,
                                calibration_images=calibration_data, seed=SEED)
    return {
        "paths": {"saved_model": saved,
                  "tflite_float32": os.path.join(out, "tflite", tflite.FLOAT32_FILE),
                  "tflite_int8": os.path.join(out, "tflite", tflite.INT8_FILE)},
        "bytes": {"saved_model": _dir_bytes(saved),
                  "tflite_float32": meta["files"]["float32"]["bytes"],
                  "tflite_int8": meta["files"]["int8"]["bytes"]},
        "tflite_export_s": time.time() - start,
        "int8_float_ops": meta["files"]["int8"]["float_ops"],
        "int8_agreement": meta["files"]["int8"]["agreement_on_calibration_images"],
    }


def _load(variant: str, path: str, num_threads=None):
    if variant == "saved_model":
        return load_embedder(path)
    return load_tflite_embedder(path, num_threads=num_threads)


def _accuracy(paths: dict, protocols: dict) -> dict:
    """{protocol: {variant: accuracy, VAL, pairs, accuracy at float32's thresholds}} of every
    model form on every protocol. The float32 TFLite model is scored first; its per-fold
    thresholds then also judge the other forms (the threshold an app ships with both files)."""
    out = {}
    order = ["tflite_float32"] + [v for v in paths if v != "tflite_float32"]
    for name, protocol in protocols.items():
        out[name], reference = {}, None
        for variant in order:
            # evaluate_pairs_file also scores the int8 byte codes an app would store
            # (models.quantize).
            r = evaluate_pairs_file(_load(variant, paths[variant], num_threads=2), protocol["pairs"],
                               protocol["images"], reference_thresholds=reference)
            reference = reference or r["fold_thresholds"]
            out[name][variant] = {"accuracy": r["accuracy_mean"], "val": r["val_at_far_1e-3"],
                                  "num_pairs": r["num_pairs"],
                                  "at_float32_thresholds": r.get("reference_accuracy_mean",
                                                                 r["accuracy_mean"])}
            out[name][variant + "_codes"] = {"accuracy": r["int8_accuracy_mean"],
                                             "val": r["int8_val_at_far_1e-3"],
                                             "num_pairs": r["num_pairs"]}
    return out


def speed_child(argv) -> None:
    """In a fresh process: images/s at batch 1 of every model in a JSON job, `threads` threads
    each (TF's thread pools can only be sized before TF starts). Prints one JSON line."""
    threads, job_path = int(argv[0]), argv[1]
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    with open(job_path) as f:
        job = json.load(f)
    fns = {}
    for net, spec in job["networks"].items():
        pixels = np.load(spec["pixels"])
        for variant, path in spec["paths"].items():
            if variant == "saved_model":
                embedder = _load(variant, path)
                fn = embedder.embed_pixels
            else:
                fn = tflite_runtime.InterpreterRunner(path, num_threads=threads)
            fn(pixels[:1])  # warm-up: XLA compile, XNNPACK set-up
            fns[(net, variant)] = (fn, pixels)
    rates = {key: [] for key in fns}
    for _ in range(job["rounds"]):
        for key, (fn, pixels) in fns.items():
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < job["seconds"]:
                fn(pixels[done % len(pixels)][None])
                done += 1
            rates[key].append(done / (time.perf_counter() - start))
    print("SPEED_JSON " + json.dumps({f"{n}/{v}": float(np.median(r))
                                      for (n, v), r in rates.items()}), flush=True)


def _speed(job: dict, work: str, threads: int) -> dict:
    job_path = os.path.join(work, "speed_job.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    code = "import sys; from benchmarks.bench_tflite import speed_child; speed_child(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, str(threads), job_path], cwd=REPO_ROOT,
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SPEED_JSON ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"speed measurement ({threads} threads) failed: {proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("SPEED_JSON "):])


def _heldout_pixels(model_path: str, heldout: str, path: str) -> str:
    """The held-out faces preprocessed for a model, saved for the speed processes."""
    embedder = _load("tflite_float32", model_path)
    np.save(path, embedder.preprocess_encoded([read_encoded(p) for p in
                                               list_images(heldout)[:32]]))
    return path


def markdown_table(results: dict) -> str:
    """A size and speed table, then one accuracy table per protocol; a row per network and
    model form."""
    lines = ["| network | model | size MB | img/s 1 thread | img/s 2 threads | train steps (s) |",
             "|" + "---|" * 6]
    for net, r in results.items():
        for variant in VARIANTS:
            lines.append(f"| {net} | {variant} | {r['bytes'][variant] / 1e6:.2f} | "
                         f"{r['speed'][1][f'{net}/{variant}']:.1f} | "
                         f"{r['speed'][2][f'{net}/{variant}']:.1f} | "
                         f"{r['steps']} ({r['train_s']:.0f}) |")
    for protocol in next(iter(results.values()))["accuracy"]:
        pairs = next(iter(results.values()))["accuracy"][protocol]["tflite_float32"]
        lines += ["", f"Held-out accuracy, {protocol} protocol ({pairs['num_pairs']} pairs):", "",
                  "| network | model | accuracy | at float32's thresholds | VAL@FAR=1e-3 | "
                  "accuracy, int8 codes |", "|" + "---|" * 6]
        for net, r in results.items():
            for variant in VARIANTS:
                acc = r["accuracy"][protocol][variant]
                codes = r["accuracy"][protocol][variant + "_codes"]
                lines.append(f"| {net} | {variant} | {100 * acc['accuracy']:.2f}% | "
                             f"{100 * acc['at_float32_thresholds']:.2f}% | "
                             f"{100 * acc['val']:.1f}% | {100 * codes['accuracy']:.2f}% |")
    return "\n".join(lines)


def _rows(net: str, r: dict) -> list:
    size, speed = r["bytes"], r["speed"]
    base = f"tflite_{net}"
    rows = [
        {"benchmark": base, "metric": "int8 size MB (baseline: float32)",
         "value": size["tflite_int8"] / 1e6, "baseline": size["tflite_float32"] / 1e6,
         "ratio": size["tflite_float32"] / size["tflite_int8"], "target": ">= 3x smaller",
         "notes": f"ratio = float32 / int8; SavedModel {size['saved_model'] / 1e6:.1f} MB"}]
    for protocol, acc in r["accuracy"].items():
        int8, float32 = acc["tflite_int8"], acc["tflite_float32"]
        paired = 100 * (float32["accuracy"] - int8["at_float32_thresholds"])
        relearnt = 100 * (float32["accuracy"] - int8["accuracy"])
        rows.append({
            "benchmark": base, "metric": f"int8 held-out accuracy at float32's thresholds, "
                                         f"{protocol} (baseline: float32)",
            "value": int8["at_float32_thresholds"], "baseline": float32["accuracy"],
            "ratio": int8["at_float32_thresholds"] / float32["accuracy"],
            "target": "loss <= 0.5 points",
            "notes": f"loss {paired:.2f} points; with thresholds re-learnt on int8's own "
                     f"distances {100 * int8['accuracy']:.2f}% (loss {relearnt:.2f}); "
                     f"SavedModel {100 * acc['saved_model']['accuracy']:.2f}%; VAL@1e-3 int8 "
                     f"{int8['val']:.3f} vs float32 {float32['val']:.3f}; "
                     f"{int8['num_pairs']} pairs; {r['steps']} training steps"})
    for threads in (1, 2):
        s = speed[threads]
        rows.append({
            "benchmark": base, "metric": f"int8 images/s, batch 1, {threads} thread(s) "
                                         "(baseline: float32)",
            "value": s[f"{net}/tflite_int8"], "baseline": s[f"{net}/tflite_float32"],
            "ratio": s[f"{net}/tflite_int8"] / s[f"{net}/tflite_float32"], "target": None,
            "notes": f"SavedModel {s[f'{net}/saved_model']:.1f} images/s"})
    return rows


def run(quick: bool) -> list:
    networks = QUICK_NETWORKS if quick else NETWORKS
    results = {}
    with tempfile.TemporaryDirectory() as work:
        started = time.time()
        orl = _prepare_data(work)
        protocols = {"orl": orl}
        lfw = None if quick else _prepare_lfw(work)
        if lfw:
            protocols["lfw_dev"] = lfw
        job = {"networks": {}, "rounds": 2 if quick else 3, "seconds": 1.0 if quick else 2.0}
        for net in networks:
            steps = QUICK_STEPS if quick else TRAIN_STEPS[net]
            model, preprocess, calibration, train_s = _weights(net, steps, orl, lfw, work)
            exported = _export(model, preprocess, os.path.join(work, f"export_{net}"),
                               calibration)
            results[net] = {"steps": steps, "train_s": train_s, **exported,
                            "accuracy": _accuracy(exported["paths"], protocols)}
            job["networks"][net] = {"paths": exported["paths"], "pixels": _heldout_pixels(
                exported["paths"]["tflite_float32"], orl["images"],
                os.path.join(work, f"pixels_{net}.npy"))}
            print(f"{net}: trained {steps} steps in {train_s:.0f} s; int8 float ops "
                  f"{exported['int8_float_ops']}; int8 vs float32 on calibration images "
                  f"{exported['int8_agreement']}", flush=True)
        speeds = {threads: _speed(job, work, threads) for threads in (1, 2)}
        for net in networks:
            results[net]["speed"] = speeds
        print(f"\nTFLite vs SavedModel ({time.time() - started:.0f} s, 1-min load "
              f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):\n", flush=True)
        print(markdown_table(results), flush=True)
    return [row for net in networks for row in _rows(net, results[net])]


def main(argv=None):
    return common.bench_main(run, __doc__, f"{QUICK_NETWORKS[0]} only, {QUICK_STEPS} training "
                             "steps, shorter timing", argv)


if __name__ == "__main__":
    sys.exit(main())
