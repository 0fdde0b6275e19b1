"""What the embed, compare and cluster commands do, as library functions.

On ordinary photos (a `detector` given) every path finds the faces first (MTCNN), aligns them
(facenet_tf.detection) and embeds the crops: embed and cluster work on every face with its
photo and box, compare on the best-matching pair of faces of two photos; a photo without a
face is listed as skipped, never a crash. Without a detector each image file is embedded whole
(pre-cropped faces), as the model's own preprocessing takes it.
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
           detector=None, align: AlignConfig | None = None, face1: int | None = None,
           face2: int | None = None) -> dict:
    """Is the person of one photo in the other? The squared L2 distance of two images and,
    given a threshold (or the model's), same or not.

    With a detector, every face of both photos is found, aligned and embedded: `faces1` and
    `faces2` list them ({"face": index, "box", "score"}; indices in detector-score order).
    The pair compared is the best-matching one, the smallest distance over every face of
    photo 1 against every face of photo 2 (ties: the lowest indices); face1 / face2 pick one
    face of a photo by its index instead. The result's `face1` and `face2` are the indices
    compared, `pairs_compared` how many pairs were scored and `pair` how the pair was chosen
    ("best match", "given" or "only faces"). A photo without a face raises NoFaceError naming
    it; an index the photo does not have raises ValueError. Without a detector the two files
    are embedded whole.
    """
    t = threshold if threshold is not None else embedder.threshold
    result = {"image1": path1, "image2": path2, "threshold": t}
    if detector is None:
        if face1 is not None or face2 is not None:
            raise ValueError("face1 / face2 pick faces found by the detector; without one "
                             "the two files are compared whole")
        emb = batch_embed.embed_files(embedder, [path1, path2], progress_every_s=None)
        d = float(distances.squared_l2(emb[:1], emb[1:])[0])
        result.update({"distance": d, "same": None if t is None else d <= t})
        return result
    keys = ("1", "2")  # the photos' names in the table: the same path may be given twice
    table = embed_photo_faces(embedder, detector, [path1, path2], names=keys, align=align,
                              keep="all")
    paths = dict(zip(keys, (path1, path2)))
    if table.skipped:
        raise NoFaceError("; ".join(f"{paths[s['photo']]}: {s['reason']}"
                                    for s in table.skipped))
    candidates = []
    for key, pick in zip(keys, (face1, face2)):
        rows = [r for r, photo in enumerate(table.photos) if photo == key]
        result[f"faces{key}"] = [{"face": int(table.face_index[r]),
                                  "box": [round(float(v), 1) for v in table.boxes[r]],
                                  "score": round(float(table.scores[r]), 5)} for r in rows]
        if pick is not None and not 0 <= pick < len(rows):
            raise ValueError(f"{paths[key]}: face{key}={pick}, but the photo has {len(rows)} "
                             f"face{'s' * (len(rows) != 1)} (indices 0 to {len(rows) - 1})")
        candidates.append(rows if pick is None else [rows[pick]])
    d = distances.squared_l2_matrix(table.embeddings[candidates[0]],
                                    table.embeddings[candidates[1]])
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    result.update({
        "face1": int(table.face_index[candidates[0][i]]),
        "face2": int(table.face_index[candidates[1][j]]),
        "pairs_compared": int(d.size),
        "pair": ("best match" if d.size > 1 else
                 "given" if face1 is not None or face2 is not None else "only faces"),
        "distance": float(d[i, j]), "same": None if t is None else float(d[i, j]) <= t})
    return result


def verification_summary(result: dict) -> str:
    """A verify result in one line: the decision, the distance, which faces were compared."""
    verdict = {True: "same person", False: "different people",
               None: "no threshold to decide"}[result["same"]]
    head = f"{verdict}: distance {result['distance']:.3f} (threshold {result['threshold']})"
    if "face1" not in result:
        return f"{head}, the two files compared whole"
    faces = [f"face {result[f'face{k}']} of {len(result[f'faces{k}'])} in "
             f"{result[f'image{k}']}" for k in ("1", "2")]
    how = {"best match": f"the best-matching of {result['pairs_compared']} pairs",
           "given": "the faces asked for", "only faces": "the only faces"}[result["pair"]]
    return f"{head} between {faces[0]} and {faces[1]} ({how})"


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
