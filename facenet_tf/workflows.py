"""What the embed, compare and cluster commands do, as library functions: embed a folder of
images or image TFRecords, compare two images, cluster the images of a folder."""

import io
import os

import numpy as np
import tensorflow as tf

from facenet_tf import io_utils
from facenet_tf.data import image_files
from facenet_tf.data import records
from facenet_tf.evaluation import batch_embed, clustering, verification

DEFAULT_CLUSTER_THRESHOLD = 1.0


def embed_folder(embedder, folder: str, batch_size: int = 64, flip: bool = False) -> dict:
    """Every image under `folder`: embeddings, ids (paths relative to it) and identities (the
    first folder of each id, "" for images at the top)."""
    paths = image_files.list_images(folder)
    if not paths:
        raise ValueError(f"{folder}: no images found")
    ids = [os.path.relpath(p, folder) for p in paths]
    emb = batch_embed.embed_files(embedder, paths, batch_size=batch_size, flip=flip)
    return {"embeddings": emb, "image_ids": np.array(ids),
            "identities": np.array([i.split(os.sep)[0] if os.sep in i else "" for i in ids])}


def embed_tfrecords(embedder, pattern: str, batch_size: int = 64, flip: bool = False) -> dict:
    """Every image record of the TFRecord files matching `pattern`: embeddings, ids,
    identities."""
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"{pattern}: no TFRecord files match")
    parsed = [records.parse_image_example(s) for s in tf.data.TFRecordDataset(files)]
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


def compare(embedder, path1: str, path2: str, threshold: float | None = None) -> dict:
    """Squared L2 distance of two images and, given a threshold (or the model's), same or not."""
    emb = batch_embed.embed_files(embedder, [path1, path2], progress_every_s=None)
    d = float(verification.squared_l2(emb[:1], emb[1:])[0])
    t = threshold if threshold is not None else embedder.threshold
    return {"image1": path1, "image2": path2, "distance": d, "threshold": t,
            "same": None if t is None else d <= t}


def cluster_folder(embedder, folder: str, threshold: float | None = None,
                   linkage: str = "average", batch_size: int = 64) -> dict:
    """Agglomerative clusters of a folder's images (largest first), as paths relative to it;
    NMI and AMI against the identity sub-folders when every image is in one."""
    paths = image_files.list_images(folder)
    if not paths:
        raise ValueError(f"{folder}: no images found")
    t = threshold if threshold is not None else (embedder.threshold or DEFAULT_CLUSTER_THRESHOLD)
    emb = batch_embed.embed_files(embedder, paths, batch_size=batch_size)
    ids = clustering.agglomerative_clusters(emb, distance_threshold=t, linkage=linkage)
    rel = [os.path.relpath(p, folder) for p in paths]
    groups = {}
    for r, c in zip(rel, ids):
        groups.setdefault(int(c), []).append(r)
    ordered = sorted(groups.values(), key=lambda g: (-len(g), g[0]))
    result = {"folder": folder, "threshold": t, "linkage": linkage,
              "model_fingerprint": embedder.fingerprint, "num_images": len(paths),
              "clusters": [{"cluster": i, "images": g} for i, g in enumerate(ordered)]}
    if all(os.sep in r for r in rel):
        result.update(clustering.clustering_scores([r.split(os.sep)[0] for r in rel], ids))
    return result
