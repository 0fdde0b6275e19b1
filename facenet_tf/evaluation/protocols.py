"""The evaluation protocols: LFW-format verification pairs, and retrieval and clustering of an
identity-per-folder dataset (the command is facenet_tf.evaluate; the trainer evaluates with
evaluate_pairs_file too)."""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

from facenet_tf.common import io_utils
from facenet_tf.data import image_files
from facenet_tf.data import images as image_utils
from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data import preprocess as pp
from facenet_tf.detection.align import AlignConfig
from facenet_tf.evaluation import clustering, plots, retrieval, verification, visualize
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import Embedder
from facenet_tf.models import quantize
from facenet_tf.triplets import distances

MAX_LISTED_MISSING = 50


def override_preprocess(base: pp.PreprocessConfig, image_size=None, crop_fraction=None,
                        standardization=None, degrade=None) -> pp.PreprocessConfig:
    """`base` with the given fields replaced (None keeps the model's value). degrade: a
    facenet_tf.data.degrade.Degradation applied to every face (see its module)."""
    changes = {k: v for k, v in (("image_size", image_size), ("crop_fraction", crop_fraction),
                                 ("standardization", standardization), ("degrade", degrade))
               if v is not None}
    if "image_size" in changes:
        changes["image_size"] = tuple(int(s) for s in changes["image_size"])
    return dataclasses.replace(base, **changes)


def evaluate_pairs_file(embedder: Embedder, pairs_path: str, images_root: str, *,
                        flip: bool = False, skip_missing: bool = False, batch_size: int = 64,
                        ext: str = "jpg", naming: str = "auto", num_folds: int = 10,
                        seed: int = 0, plots_dir: str | None = None,
                        output_json: str | None = None, quantized: bool = True, detector=None,
                        align: AlignConfig | None = None, reference_thresholds=None) -> dict:
    """Runs the verification protocol of a pairs file with a loaded model (an Embedder; load one
    with facenet_tf.inference.embedders.load_embedder, or pass `embedder.with_preprocess(...)`
    to evaluate under other preprocessing).

    Files with a `FOLDS<TAB>N` header (LFW View 2, our generated files) use their own folds;
    others a seeded `num_folds` split. Missing images raise FileNotFoundError listing them,
    unless skip_missing, which drops their pairs and reports how many. With a `detector`
    (facenet_tf.detection.FaceDetector) each image's main face is detected and aligned
    (`align`, default: the model's input size, margin 32) before embedding; an image where no
    face is found is embedded whole and counted (num_no_face, no_face_images).
    reference_thresholds: another model's per-fold thresholds on the same pairs (its result's
    "fold_thresholds"), to also score this one at them (verification.evaluate_pairs).
    """
    parsed = pairs_lib.parse_pairs(pairs_path)
    resolver = pairs_lib.ImageResolver(images_root, ext=ext, naming=naming)
    paths = [(resolver.path(p.name1, p.idx1), resolver.path(p.name2, p.idx2))
             for p in parsed.pairs]
    unique = list(dict.fromkeys(x for pair in paths for x in pair))
    missing = [x for x in unique if not tf.io.gfile.exists(x)]
    keep = np.ones(len(paths), bool)
    if missing:
        listed = "\n  ".join(missing[:MAX_LISTED_MISSING])
        more = len(missing) - MAX_LISTED_MISSING
        if not skip_missing:
            raise FileNotFoundError(
                f"{pairs_path}: {len(missing)} images under {images_root} are missing:\n  "
                f"{listed}" + (f"\n  ... and {more} more" if more > 0 else "") +
                "\n(use --skip_missing to drop their pairs)")
        gone = set(missing)
        keep = np.array([a not in gone and b not in gone for a, b in paths])
        logging.warning("%d missing images: skipping %d of %d pairs", len(missing),
                        int((~keep).sum()), len(paths))
    kept = [p for p, k in zip(paths, keep) if k]
    issame = np.array([p.issame for p, k in zip(parsed.pairs, keep) if k], bool)
    folds = parsed.folds[keep] if parsed.folds is not None else None
    if not kept:
        raise ValueError(f"{pairs_path}: no pair has both images under {images_root}")
    flat = [x for pair in kept for x in pair]
    no_face = []
    if detector is None:
        emb = batch_embed.embed_files(embedder, flat, batch_size=batch_size, flip=flip)
    else:
        align = align or batch_embed.align_config_for(embedder)
        emb, no_face = _embed_main_faces(embedder, detector, flat, align, batch_size, flip)
    d = distances.squared_l2(emb[0::2], emb[1::2])
    result = verification.evaluate_pairs(d, issame, folds=folds, num_folds=num_folds, seed=seed,
                                         reference_thresholds=reference_thresholds)
    if quantized:
        # The paper's 128-byte embeddings: distances between the stored int8 codes.
        q = quantize.dequantize_embeddings(quantize.quantize_embeddings(emb))
        qr = verification.evaluate_pairs(distances.squared_l2(q[0::2], q[1::2]), issame,
                                         folds=folds, num_folds=num_folds, seed=seed)
        for key in ("accuracy_mean", "accuracy_std", "val_at_far_1e-3", "val_at_far_1e-2",
                    "roc_auc"):
            result[f"int8_{key}"] = qr[key]
    result.update({
        "num_pairs": int(len(kept)),
        "num_images": int(len(set(flat))),
        "num_skipped_pairs": int((~keep).sum()),
        "num_missing_images": len(missing),
        "missing_images": missing[:MAX_LISTED_MISSING],
        "folds": "from file" if folds is not None else f"seeded {num_folds}-fold (seed {seed})",
        "pairs_file": pairs_path,
        "images_root": images_root,
        "model": embedder.source,
        "model_fingerprint": embedder.fingerprint,
        "preprocess": embedder.preprocess.to_dict(),
        "flip": bool(flip),
        "align": dataclasses.asdict(align) if detector is not None else None,
        "num_no_face": len(no_face),
        "no_face_images": no_face[:MAX_LISTED_MISSING],
    })
    if plots_dir:
        tf.io.gfile.makedirs(plots_dir)
        result["roc_png"] = plots.roc_png(d, issame, os.path.join(plots_dir, "roc.png"))
        result["histogram_png"] = plots.distance_histogram_png(
            d, issame, os.path.join(plots_dir, "distance_histogram.png"),
            threshold=result["threshold_mean"])
    if output_json:
        io_utils.write_json_atomic(output_json, result)
    return result


def _embed_main_faces(embedder, detector, paths, align, batch_size, flip):
    """Embeddings aligned with `paths` of each image's main face (an image without a face:
    whole), and the images without a face."""
    unique = list(dict.fromkeys(paths))
    table = batch_embed.embed_photo_faces(embedder, detector, unique, align=align, keep="main",
                                          batch_size=batch_size, flip=flip)
    unreadable = [s for s in table.skipped if s["reason"] != "no face found"]
    if unreadable:
        raise image_utils.BadImageError(f"{unreadable[0]['photo']}: {unreadable[0]['reason']}")
    by_path = dict(zip(table.photos, table.embeddings))
    no_face = [s["photo"] for s in table.skipped]
    if no_face:
        logging.warning("no face found in %d of %d images; embedding them whole",
                        len(no_face), len(unique))
        by_path.update(zip(no_face, batch_embed.embed_files(embedder, no_face,
                                                            batch_size=batch_size, flip=flip)))
    return np.stack([by_path[p] for p in paths]), no_face


def identity_labels(paths, root: str) -> list:
    """The identity (first folder under root) of each image path."""
    return [os.path.relpath(p, root).split(os.sep)[0] for p in paths]


def evaluate_identity_folder(embedder: Embedder, images_root: str, *, flip: bool = False,
                             batch_size: int = 64, distance_threshold: float | None = None,
                             linkage: str = "average", output_json: str | None = None,
                             projector_dir: str | None = None) -> dict:
    """Retrieval (P@1, R-precision, MAP@R) and agglomerative clustering (NMI, AMI) of an
    identity-per-folder dataset. The clustering threshold defaults to the model's recommended
    threshold, else the true number of identities is used as the cluster count. projector_dir:
    also write a TensorBoard projector log (identity, predicted cluster, image, sprite)."""
    paths = image_files.list_images(images_root)
    if not paths:
        raise ValueError(f"{images_root}: no images found")
    labels = identity_labels(paths, images_root)
    emb = batch_embed.embed_files(embedder, paths, batch_size=batch_size, flip=flip)
    result = retrieval.retrieval_metrics(emb, labels)
    threshold = distance_threshold if distance_threshold is not None else embedder.threshold
    if threshold is not None:
        ids = clustering.agglomerative_clusters(emb, distance_threshold=threshold, linkage=linkage)
    else:
        ids = clustering.agglomerative_clusters(emb, num_clusters=len(set(labels)),
                                                linkage=linkage)
    result.update(clustering.clustering_scores(labels, ids))
    if projector_dir:
        size = visualize.sprite_thumbnail_size(len(paths))
        result["projector"] = visualize.write_projector(
            projector_dir, emb,
            {"identity": labels, "cluster": [int(c) for c in ids],
             "image": [os.path.relpath(p, images_root) for p in paths]},
            visualize.file_thumbnails(paths, size))
    result.update({"cluster_threshold": threshold, "linkage": linkage,
                   "images_root": images_root, "model": embedder.source,
                   "model_fingerprint": embedder.fingerprint,
                   "preprocess": embedder.preprocess.to_dict(), "flip": bool(flip)})
    if output_json:
        io_utils.write_json_atomic(output_json, result)
    return result
