"""Pretrained FaceNet on LFW View 1 training pairs (pairsDevTrain) under three preprocessings
of the raw lfw_dev images, all with fixed standardization (x - 127.5) / 128:

  center:     the central 52% of the image (pixels 60..190 of 250), resized to 160;
  margin:     MTCNN main face, box + 32 px margin, resized to 160 (davidsandberg's recipe);
  similarity: MTCNN main face, 5 landmarks fitted onto the template at 160.

Images where MTCNN finds no face fall back to the center crop (counted and listed). Metrics:
10-fold accuracy (seeded folds, facenet_tf.evaluation.verification.evaluate_pairs) and
VAL@FAR=1e-3. With --tune, the similarity template is first chosen on pairs generated from the
lfw_dev people that pairsDevTrain does NOT name (so the reported numbers are not tuned on the
pairs they are measured on), and other margins are reported there for information; otherwise
the AlignConfig defaults are used.

    python -m experiments.align_lfw_dev [--tune] [--flip] \
        [--output experiments/results/align_lfw_dev.json]
"""

import dataclasses
import os
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image

from facenet_tf.common import io_utils, runinfo
from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data import preprocess
from facenet_tf.detection import AlignConfig, FaceDetector, aligned_crops, main_face
from facenet_tf.evaluation import verification
from facenet_tf.models.frozen_graph import build_pretrained_model
from facenet_tf.models.inference import inference_function
from facenet_tf.triplets import distances

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
LFW_DEV = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "lfw_dev")
METHODS = ("center", "margin", "similarity")
CENTER = preprocess.PreprocessConfig((160, 160), crop_fraction=0.52, standardization="fixed")
# (template_zoom, template_shift) tried by --tune; the first is the AlignConfig default.
TEMPLATE_CANDIDATES = ((0.91, -0.072), (0.82, -0.072), (1.0, -0.072), (0.91, 0.0), (1.0, 0.0),
                       (1.1, 0.0))
# Margins (pixels) --tune also reports, for information; the evaluation uses the recipe's 32.
MARGIN_CANDIDATES = (24, 32, 44)

flags.DEFINE_string("pairs", os.path.join(LFW_DEV, "pairsDevTrain.txt"), "LFW pairs file.")
flags.DEFINE_string("images", os.path.join(LFW_DEV, "images"), "Image root of the pairs.")
flags.DEFINE_string("output", os.path.join(REPO_ROOT, "experiments", "results",
                                           "align_lfw_dev.json"), "Write the results here.")
flags.DEFINE_bool("tune", False, "Choose the similarity template on held-out people first.")
flags.DEFINE_integer("tune_pairs_per_fold", 100, "Generated tuning pairs per fold (10 folds).")
flags.DEFINE_bool("flip", False, "Also report each method with embeddings averaged with the "
                  "mirror image's (the reference protocol's --use_flipped_images).")
flags.DEFINE_integer("batch_size", 32, "Embedding batch size.")
flags.DEFINE_integer("limit_pairs", 0, "Use only the first N/2 matched and N/2 mismatched "
                     "pairs (0 = all), for a quick run.")
flags.DEFINE_integer("seed", 0, "Seed of the tuning pairs and of the 10 folds.")


@dataclasses.dataclass
class PairSet:
    """Pairs as indices into `paths`."""
    name: str
    paths: list
    first: np.ndarray
    second: np.ndarray
    issame: np.ndarray


def pair_set(name: str, pairs: list, images_root: str) -> PairSet:
    resolver = pairs_lib.ImageResolver(images_root)
    flat = [resolver.path(p.name1, p.idx1) for p in pairs] + \
           [resolver.path(p.name2, p.idx2) for p in pairs]
    paths = list(dict.fromkeys(flat))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{name}: {len(missing)} images missing, e.g. {missing[:3]}")
    index = {p: i for i, p in enumerate(paths)}
    ids = np.array([index[p] for p in flat])
    return PairSet(name, paths, ids[:len(pairs)], ids[len(pairs):],
                   np.array([p.issame for p in pairs]))


def limited(pairs: list, limit: int) -> list:
    if not limit:
        return pairs
    same = [p for p in pairs if p.issame][:limit // 2]
    return same + [p for p in pairs if not p.issame][:limit // 2]


def tuning_pairs(images_root: str, exclude: set, per_fold: int, seed: int) -> list:
    """Pairs among the people of images_root not in `exclude` (10 identity-disjoint folds)."""
    people = sorted(n for n in os.listdir(images_root)
                    if n not in exclude and os.path.isdir(os.path.join(images_root, n)))
    return pairs_lib.generate_pairs(images_root, num_folds=10, pairs_per_fold=per_fold,
                                    seed=seed, identities=people)


def load_rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def crop_function(method: str, config: AlignConfig):
    """tf.function (image, boxes [n, 4], landmarks [n, 5, 2]) -> float32 [n, 160, 160, 3]."""
    spec = [tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None, 5, 2], tf.float32)]
    if method == "center":
        return tf.function(lambda image, boxes, landmarks: preprocess.center_crop_and_resize(
            image, CENTER)[None], input_signature=spec)
    return tf.function(lambda image, boxes, landmarks: aligned_crops(
        image, boxes, landmarks, dataclasses.replace(config, method=method)),
        input_signature=spec)


def embed_images(embed, crop, images, faces, batch_size: int, flip: bool = False) -> tuple:
    """(embeddings, flip-averaged embeddings or None) of every image's crop (the center crop
    where faces[i] is None); flip averages each embedding with its mirror image's, then
    re-normalises (as facenet_tf.evaluation does)."""
    center = crop_function("center", AlignConfig())
    out, flipped = [], []
    for start in range(0, len(images), batch_size):
        batch = []
        for image, face in zip(images[start:start + batch_size], faces[start:start + batch_size]):
            if face is None:
                batch.append(center(image, np.zeros((1, 4), np.float32),
                                    np.zeros((1, 5, 2), np.float32))[0])
            else:
                batch.append(crop(image, face[0][None], face[1][None])[0])
        pixels = preprocess.standardize(tf.stack(batch), "fixed")
        out.append(embed(pixels).numpy())
        if flip:
            both = out[-1] + embed(tf.reverse(pixels, axis=[2])).numpy()
            flipped.append(both / np.linalg.norm(both, axis=1, keepdims=True))
    return np.concatenate(out), (np.concatenate(flipped) if flip else None)


def evaluate(embeddings: np.ndarray, pairs: PairSet, seed: int) -> dict:
    d = distances.squared_l2(embeddings[pairs.first], embeddings[pairs.second])
    return verification.evaluate_pairs(d, pairs.issame, num_folds=10, seed=seed)


def detect_main_faces(detector: FaceDetector, images: list) -> list:
    """(box, landmarks) of each image's main face, or None."""
    faces = []
    for image, found in zip(images, detector.detect(images)):
        i = main_face(found, *image.shape[:2])
        faces.append(None if i is None else (found.boxes[i], found.landmarks[i]))
    return faces


def run_methods(label, methods, pairs, images, faces, embed, batch_size, seed,
                flip=False) -> dict:
    """{name: metrics} per (name, method, AlignConfig); with flip also {name + " +flip": ...}."""
    results = {}
    for name, method, config in methods:
        start = time.perf_counter()
        embeddings, flipped = embed_images(embed, crop_function(method, config), images, faces,
                                           batch_size, flip)
        seconds = time.perf_counter() - start
        for key, e in ((name, embeddings), (name + " +flip", flipped)):
            if e is None:
                continue
            r = evaluate(e, pairs, seed)
            results[key] = {"method": method, "flip": e is flipped,
                            "align_config": dataclasses.asdict(config),
                            "accuracy_mean": r["accuracy_mean"],
                            "accuracy_std": r["accuracy_std"],
                            "val_at_far_1e-3": r["val_at_far_1e-3"], "roc_auc": r["roc_auc"],
                            "crop_and_embed_seconds": round(seconds, 1),
                            "images_per_s": round(len(images) / seconds, 1)}
            print(f"[{label}] {key:34s} acc {r['accuracy_mean']:.4f} +- "
                  f"{r['accuracy_std']:.4f}  VAL@1e-3 {r['val_at_far_1e-3']:.3f}  "
                  f"({seconds:.0f} s)", flush=True)
    return results


def prepare(pairs: PairSet, detector: FaceDetector) -> tuple:
    start = time.perf_counter()
    images = [load_rgb(p) for p in pairs.paths]
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    faces = detect_main_faces(detector, images)
    detect_seconds = time.perf_counter() - start
    no_face = [p for p, f in zip(pairs.paths, faces) if f is None]
    info = {"num_pairs": int(len(pairs.issame)), "num_images": len(images),
            "load_seconds": round(load_seconds, 1), "detect_seconds": round(detect_seconds, 1),
            "detect_images_per_s": round(len(images) / detect_seconds, 1),
            "num_no_face": len(no_face), "no_face_images": no_face}
    print(f"[{pairs.name}] {len(images)} images, {len(pairs.issame)} pairs; detection "
          f"{detect_seconds:.0f} s ({info['detect_images_per_s']} images/s); no face in "
          f"{len(no_face)} (center crop used)", flush=True)
    return images, faces, info


def main(argv):
    del argv
    f = flags.FLAGS
    eval_pairs = limited(pairs_lib.read_pairs(f.pairs), f.limit_pairs)
    detector = FaceDetector()
    model = build_pretrained_model()
    embed = inference_function(model)
    result = {"pairs_file": f.pairs, "standardization": "fixed", "folds": f"seeded 10-fold "
              f"(seed {f.seed})", "center_crop": CENTER.to_dict(), "run_info": runinfo.collect(
                  {k: getattr(f, k) for k in ("tune", "tune_pairs_per_fold", "flip",
                                             "batch_size", "limit_pairs", "seed")})}
    default = AlignConfig()
    chosen = (default.template_zoom, default.template_shift)
    if f.tune:
        named = {p.name1 for p in eval_pairs} | {p.name2 for p in eval_pairs}
        tune = pair_set("tune", tuning_pairs(f.images, named, f.tune_pairs_per_fold, f.seed),
                        f.images)
        images, faces, info = prepare(tune, detector)
        methods = [("center", "center", default)] + [
            (f"margin {m}", "margin", dataclasses.replace(default, margin=m))
            for m in MARGIN_CANDIDATES] + [
            (f"similarity zoom {z} shift {s}", "similarity",
             dataclasses.replace(default, template_zoom=z, template_shift=s))
            for z, s in TEMPLATE_CANDIDATES]
        tuned = run_methods("tune", methods, tune, images, faces, embed, f.batch_size, f.seed)
        best = max((r for r in tuned.values() if r["method"] == "similarity"),
                   key=lambda r: (r["accuracy_mean"], r["val_at_far_1e-3"]))
        chosen = (best["align_config"]["template_zoom"], best["align_config"]["template_shift"])
        result["tuning"] = {**info, "results": tuned, "chosen_template": list(chosen)}
        del images
    evaluated = pair_set("pairsDevTrain", eval_pairs, f.images)
    images, faces, info = prepare(evaluated, detector)
    config = dataclasses.replace(default, template_zoom=chosen[0], template_shift=chosen[1])
    results = run_methods("eval", [(m, m, config) for m in METHODS], evaluated, images, faces,
                          embed, f.batch_size, f.seed, flip=f.flip)
    result.update({"evaluation": {**info, "results": results}})
    best = max(METHODS, key=lambda m: (results[m]["accuracy_mean"],
                                       results[m]["val_at_far_1e-3"]))
    result["best_method"] = best
    print("\n| method | accuracy (10-fold) | VAL@FAR=1e-3 | ROC AUC | crop+embed s |")
    print("|---|---|---|---|---|")
    for m, r in results.items():
        print(f"| {m} | {r['accuracy_mean']:.4f} +- {r['accuracy_std']:.4f} | "
              f"{r['val_at_far_1e-3']:.3f} | {r['roc_auc']:.4f} | "
              f"{r['crop_and_embed_seconds']} |")
    print(f"best: {best}")
    os.makedirs(os.path.dirname(f.output), exist_ok=True)
    io_utils.write_json_atomic(f.output, result)
    print(f"wrote {f.output}")


if __name__ == "__main__":
    app.run(main, argv=sys.argv)
