"""What the embed, compare and cluster commands do, as library functions.

On ordinary photos (a `detector` given) every path finds the faces first (MTCNN), aligns them
(facenet_tf.detection) and embeds the crops: embed and cluster work on every face with its
photo and box, compare on the main face of each photo; a photo without a face is listed as
skipped, never a crash. Without a detector each image file is embedded whole (pre-cropped
faces), as the model's own preprocessing takes it.
"""

import io
import os

import numpy as np
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data import image_files, records
from facenet_tf.data import preprocess as pp
from facenet_tf.data.images import THUMBNAIL_SIZE
from facenet_tf.detection.align import AlignConfig
from facenet_tf.evaluation import clustering, visualize
from facenet_tf.inference import batch_embed
from facenet_tf.inference.batch_embed import embed_photo_faces
from facenet_tf.triplets import distances

DEFAULT_CLUSTER_THRESHOLD = 1.0


class NoFaceError(ValueError):
    """A photo in which no face was found (or that could not be read)."""


def embed_folder(embedder, folder: str, batch_size: int = 64, flip: bool = False,
                 detector=None, align: AlignConfig | None = None,
                 projector_dir: str | None = None) -> dict:
    """Every image under `folder`, as arrays for an .npz file.

    Whole images (no detector): `embeddings`, `image_ids` (paths relative to the folder) and
    `identities` (their first folder, "" at the top). Photos (a detector): one row per face,
    with `image_ids`, `identities`, `face_index`, `boxes`, `scores`, `is_main`, and the photos
    without a face in `skipped_images` / `skipped_reasons`. projector_dir: also write a
    TensorBoard projector log of the faces.
    """
    paths = image_files.list_images(folder)
    if not paths:
        raise ValueError(f"{folder}: no images found")
    ids = [os.path.relpath(p, folder) for p in paths]
    size = visualize.sprite_thumbnail_size(len(paths)) if projector_dir else None
    if detector is None:
        emb = batch_embed.embed_files(embedder, paths, batch_size=batch_size, flip=flip)
        arrays = {"embeddings": emb, "image_ids": np.array(ids)}
        thumbs = visualize.file_thumbnails(paths, size) if projector_dir else None
    else:
        table = embed_photo_faces(embedder, detector, paths, ids, align, keep="all",
                                  batch_size=batch_size, thumbnail_size=size)
        arrays = {"embeddings": table.embeddings, "image_ids": np.array(table.photos, str),
                  "face_index": table.face_index, "boxes": table.boxes,
                  "scores": table.scores, "is_main": table.is_main,
                  "skipped_images": np.array([s["photo"] for s in table.skipped], str),
                  "skipped_reasons": np.array([s["reason"] for s in table.skipped], str)}
        thumbs = table.thumbnails
    arrays["identities"] = np.array([_identity(i) for i in arrays["image_ids"]], str)
    if projector_dir and len(arrays["embeddings"]):
        metadata = {"identity": list(arrays["identities"]), "image": list(arrays["image_ids"])}
        if "face_index" in arrays:
            metadata["face"] = [int(i) for i in arrays["face_index"]]
        visualize.write_projector(projector_dir, arrays["embeddings"], metadata, thumbs)
    return arrays


def _identity(image_id: str) -> str:
    return image_id.split(os.sep)[0] if os.sep in image_id else ""


def tfrecord_files(pattern: str) -> list:
    """The files matching `pattern`, sorted; FileNotFoundError naming it if none does."""
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"{pattern}: no such folder, and no TFRecord files match")
    return files


def embed_tfrecords(embedder, pattern: str, batch_size: int = 64, flip: bool = False) -> dict:
    """Every image record of the TFRecord files matching `pattern` (faces already, as a
    dataset holds them): embeddings, ids, identities."""
    parsed = []
    for path in tfrecord_files(pattern):
        try:
            parsed.extend(records.parse_image_example(s) for s in tf.data.TFRecordDataset(path))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise ValueError(f"{path}: not a TFRecord file of image records "
                             f"({pp.decode_error_message(e)})") from e
    if not parsed:
        raise ValueError(f"{pattern}: no image records (expected a photo folder or TFRecord "
                         "files of image records)")
    ids = [p[records.IMAGE_ID].numpy().decode() for p in parsed]
    emb = batch_embed.embed_encoded_images(
        embedder, (p[records.ENCODED].numpy() for p in parsed), total=len(parsed),
        batch_size=batch_size, flip=flip, names=ids)
    return {"embeddings": emb, "image_ids": np.array(ids),
            "identities": np.array([p[records.IDENTITY].numpy().decode() for p in parsed])}


def write_npz(path: str, arrays: dict, fingerprint: str) -> None:
    """The arrays and the model's fingerprint as one .npz file, written atomically."""
    buf = io.BytesIO()
    np.savez(buf, model_fingerprint=np.array(fingerprint), **arrays)
    io_utils.write_bytes_atomic(path, buf.getvalue())


def verify(embedder, path1: str, path2: str, threshold: float | None = None,
            detector=None, align: AlignConfig | None = None) -> dict:
    """Squared L2 distance of two images (with a detector: of the main face of each photo)
    and, given a threshold (or the model's), same or not. A photo without a face raises
    NoFaceError naming it."""
    t = threshold if threshold is not None else embedder.threshold
    result = {"image1": path1, "image2": path2, "threshold": t}
    if detector is None:
        emb = batch_embed.embed_files(embedder, [path1, path2], progress_every_s=None)
    else:
        table = embed_photo_faces(embedder, detector, [path1, path2], align=align, keep="main")
        if table.skipped:
            raise NoFaceError("; ".join(f"{s['photo']}: {s['reason']}" for s in table.skipped))
        emb = table.embeddings
        for k, key in enumerate(("face1", "face2")):
            result[key] = {"box": [round(float(v), 1) for v in table.boxes[k]],
                           "score": float(table.scores[k])}
    d = float(distances.squared_l2(emb[:1], emb[1:])[0])
    result.update({"distance": d, "same": None if t is None else d <= t})
    return result


def cluster_folder(embedder, folder: str, threshold: float | None = None,
                   linkage: str = "average", batch_size: int = 64, detector=None,
                   align: AlignConfig | None = None,
                   contact_sheet: str | None = None) -> dict:
    """Agglomerative clusters (largest first). Whole images: of the folder's images, as paths
    relative to it. Photos (a detector): of the faces, each member naming its photo, face rank
    and box; photos without a face are listed as skipped. NMI and AMI against the identity
    sub-folders when every image is in one. contact_sheet: a PNG path for one row of
    thumbnails per cluster."""
    paths = image_files.list_images(folder)
    if not paths:
        raise ValueError(f"{folder}: no images found")
    t = threshold if threshold is not None else (embedder.threshold or DEFAULT_CLUSTER_THRESHOLD)
    rel = [os.path.relpath(p, folder) for p in paths]
    size = THUMBNAIL_SIZE if contact_sheet else None
    skipped = []
    if detector is None:
        emb = batch_embed.embed_files(embedder, paths, batch_size=batch_size)
        members = [{"image": r} for r in rel]
        thumbs = visualize.file_thumbnails(paths, size) if contact_sheet else None
    else:
        table = embed_photo_faces(embedder, detector, paths, rel, align, keep="all",
                                  batch_size=batch_size, thumbnail_size=size)
        emb, skipped, thumbs = table.embeddings, table.skipped, table.thumbnails
        members = [{"image": photo, "face": int(i), "box": [round(float(v), 1) for v in box]}
                   for photo, i, box in zip(table.photos, table.face_index, table.boxes)]
    result = {"folder": folder, "threshold": t, "linkage": linkage,
              "model_fingerprint": embedder.fingerprint, "num_images": len(paths),
              "num_faces": len(members), "skipped": skipped, "clusters": []}
    if not members:
        return result
    ids = (clustering.agglomerative_clusters(emb, distance_threshold=t, linkage=linkage)
           if len(members) > 1 else np.zeros(1, int))
    groups = {}
    for k, c in enumerate(ids):
        groups.setdefault(int(c), []).append(k)
    ordered = sorted(groups.values(), key=lambda g: (-len(g), members[g[0]]["image"]))
    result["clusters"] = [{"cluster": i, "members": [members[k] for k in g],
                           "images": sorted({members[k]["image"] for k in g})}
                          for i, g in enumerate(ordered)]
    labels = [m["image"] for m in members]
    if len(members) > 1 and all(os.sep in r for r in labels):
        result.update(clustering.clustering_scores([r.split(os.sep)[0] for r in labels], ids))
    if contact_sheet:
        result["contact_sheet"] = visualize.contact_sheet(
            contact_sheet, [(f"cluster {i} ({len(g)})", [thumbs[k] for k in g])
                            for i, g in enumerate(ordered)])
    return result
