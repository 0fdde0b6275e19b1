"""The lfw_dev held-out identities as a photo collection, for the indexing benchmark
(benchmarks.bench_index) and the search experiment (experiments.search_lfw_dev); no flags.

- the collection: the original LFW photos of the held-out protocol's images (experiments.protocol:
  400 identities, 2,535 photos), one folder per identity;
- the models: the pretrained FaceNet as a SavedModel (what `embed` runs today) and as int8
  TFLite, calibrated on the protocol's training identities, both with the pretrained threshold;
- scoring: the held-out pairs verified with each photo's main face from an index (or from an
  `embed` .npz), and the search of every identity by one of its photos (mean average
  precision, precision@10).
"""

import os
import shutil

import keras
import numpy as np
from sklearn import metrics as skmetrics

from experiments import protocol as lfw_protocol
from facenet_tf.common import io_utils
from facenet_tf.data import face_tables
from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data.image_files import list_images
from facenet_tf.evaluation import verification
from facenet_tf.inference.batch_embed import embed_files
from facenet_tf.models.frozen_graph import ALIGNED_FACE_THRESHOLD, PRETRAINED_CROP_PREPROCESS
from facenet_tf.recognition import collection as collection_lib
from facenet_tf.serving import tflite
from facenet_tf.serving.saved_model import export_pretrained
from facenet_tf.triplets import distances

MODELS_DIR = "pretrained_models"
SEED = 0


def prepare(work: str) -> dict:
    """The held-out protocol, prepared in $FACENET_TF_LFW_DEV_WORK (shared between runs) or
    under `work`."""
    where = os.environ.get(lfw_protocol.LFW_WORK_ENV) or os.path.join(work, "lfw_dev")
    os.makedirs(where, exist_ok=True)
    return lfw_protocol.prepare_data(where, lfw_protocol.default_params())


def prepare_models(protocol: dict) -> dict:
    """{"saved_model", "keras", "tflite_int8"} paths of the pretrained model, exported once
    next to the protocol's data (the int8 file calibrated on its training identities)."""
    root = os.path.join(os.path.dirname(protocol["pairs_path"]), MODELS_DIR)
    if not io_utils.is_complete(root):
        lfw_protocol.stage(f"export the pretrained model to {root}")
        export_pretrained(root, threshold=ALIGNED_FACE_THRESHOLD)
    tflite_dir = os.path.join(root, "tflite")
    int8 = os.path.join(tflite_dir, tflite.INT8_FILE)
    if not os.path.exists(int8):
        lfw_protocol.stage(f"convert it to int8 TFLite in {tflite_dir}")
        network = keras.models.load_model(os.path.join(root, "model.keras"), compile=False)
        tflite.export_tflite(network, tflite_dir, PRETRAINED_CROP_PREPROCESS,
                             calibration_images=protocol["dataset"],
                             threshold=ALIGNED_FACE_THRESHOLD, seed=SEED)
    return {"saved_model": os.path.join(root, "saved_model"),
            "keras": os.path.join(root, "model.keras"), "tflite_int8": int8}


def photo_of(heldout_image: str, heldout_root: str) -> str:
    """An aligned held-out crop's original photo, relative to the collection (and to LFW):
    identity/name.jpg."""
    return os.path.splitext(os.path.relpath(heldout_image, heldout_root))[0] + ".jpg"


def collection_folder(protocol: dict, dest: str, limit: int | None = None) -> list:
    """Copies the original photos of the held-out images (the first `limit` in sorted order)
    into dest/identity/; returns their relative paths."""
    root = protocol["heldout_images_root"]
    photos = [photo_of(p, root) for p in list_images(root)][:limit]
    for rel in photos:
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        shutil.copyfile(os.path.join(protocol["params"]["images"], rel), os.path.join(dest, rel))
    return photos


def main_faces_from_index(index_dir: str) -> dict:
    """{photo: embedding of its main face} of an index_faces output."""
    manifest = io_utils.read_manifest(index_dir)
    data_dir = os.path.join(index_dir, manifest["data_dir"])
    found = {}
    for name in manifest["shards"][face_tables.FACES]:
        for row in face_tables.rows(face_tables.read_table(os.path.join(data_dir, name))):
            if row["is_main"]:
                found[row["photo"]] = row["embedding"]
    return found


def main_faces_from_npz(path: str) -> dict:
    """{photo: embedding of its main face} of an `embed` .npz of a photo folder."""
    with np.load(path) as arrays:
        main = arrays["is_main"]
        return dict(zip(arrays["image_ids"][main], arrays["embeddings"][main]))


def pairs_accuracy(main_faces: dict, protocol: dict, photos: list, photos_dir: str,
                   embedder) -> dict:
    """The held-out pairs of these photos verified with these main-face embeddings (the
    protocol's folds, thresholds chosen on the other folds, as facenet_tf.evaluate does); a
    photo without one is embedded whole with `embedder`, as evaluate --align does, and
    counted."""
    parsed = pairs_lib.parse_pairs(protocol["pairs_path"])
    resolver = pairs_lib.ImageResolver(protocol["heldout_images_root"], ext="png")
    root = protocol["heldout_images_root"]
    listed = set(photos)
    pairs, issame, folds = [], [], []
    for p, fold in zip(parsed.pairs, parsed.folds):
        pair = (photo_of(resolver.path(p.name1, p.idx1), root),
                photo_of(resolver.path(p.name2, p.idx2), root))
        if set(pair) <= listed:
            pairs.append(pair)
            issame.append(p.issame)
            folds.append(fold)
    missing = sorted({x for pair in pairs for x in pair} - set(main_faces))
    whole = dict(zip(missing, embed_files(embedder, [os.path.join(photos_dir, m)
                                                     for m in missing]))) if missing else {}
    lookup = {**whole, **main_faces}
    d = distances.squared_l2(np.stack([lookup[a] for a, _ in pairs]),
                             np.stack([lookup[b] for _, b in pairs]))
    result = verification.evaluate_pairs(d, np.array(issame, bool), folds=np.array(folds))
    return {"accuracy_mean": result["accuracy_mean"], "val_at_far_1e-3":
            result["val_at_far_1e-3"], "roc_auc": result["roc_auc"],
            "num_pairs": result["num_pairs"], "num_embedded_whole": len(missing)}


def search_metrics(index_dir: str, photos: list) -> dict:
    """Every identity queried with its first photo's main face against the whole collection:
    photos ranked by their nearest face (facenet_tf.recognition.collection.nearest_photos, no
    threshold), the query's own photo left out; mean average precision (sklearn's, over all
    other photos: a photo with no face found ranks last) and precision@10 (relevant = the
    query's identity), averaged over the identities."""
    collection = collection_lib.open_collection(index_dir)
    main = main_faces_from_index(index_dir)
    by_identity = {}
    for rel in sorted(photos):
        by_identity.setdefault(rel.split("/")[0], []).append(rel)
    aps, p10s, p1s = [], [], []
    for identity, own in sorted(by_identity.items()):
        query = own[0]
        if query not in main or len(own) < 2:
            continue
        ranked = collection_lib.nearest_photos(collection, main[query], top_k=len(photos))
        ranked = [r["photo"] for r in ranked if r["photo"] != query]
        others = [p for p in photos if p != query]
        score = {p: -rank for rank, p in enumerate(ranked)}
        relevant = np.array([p.split("/")[0] == identity for p in others])
        scores = np.array([score.get(p, -len(photos)) for p in others], np.float64)
        aps.append(skmetrics.average_precision_score(relevant, scores))
        top = [p.split("/")[0] == identity for p in ranked[:10]]
        p10s.append(sum(top) / 10)
        p1s.append(float(top[0]) if top else 0.0)
    return {"map": float(np.mean(aps)), "precision_at_10": float(np.mean(p10s)),
            "precision_at_1": float(np.mean(p1s)), "num_queries": len(aps),
            "num_photos": len(photos),
            "mean_relevant_per_query": float(np.mean([len(v) - 1 for v in by_identity.values()
                                                      if len(v) > 1]))}
