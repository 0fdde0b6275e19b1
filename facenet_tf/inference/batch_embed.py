"""Embeds with a loaded model, in batches, with progress (a bar on a terminal, log lines
elsewhere): image files whole (each distinct file once), encoded images, or the faces of photos
(detected, aligned, then embedded)."""

import dataclasses

import numpy as np
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.common.progress import LOG_EVERY_S, progress
from facenet_tf.data import images as image_utils
from facenet_tf.data import preprocess as pp
from facenet_tf.data.image_files import read_encoded
from facenet_tf.detection.align import AlignConfig
from facenet_tf.detection.faces import find_faces

# Photos read, detected and aligned per detector call.
PHOTOS_PER_CHUNK = 32


def embed_encoded_images(embedder, encoded_images, total: int | None = None,
                         batch_size: int = 64, flip: bool = False, names=None,
                         progress_every_s: float | None = LOG_EVERY_S) -> np.ndarray:
    """Embeds an iterable of encoded images with `embedder.preprocess`, in batches.

    flip=True averages each image's embedding with its mirror image's, then re-normalises.
    `names` (parallel to the images) are used in decoding errors. Progress: see
    facenet_tf.common.progress (progress_every_s=None shows none).
    """
    cfg = embedder.preprocess
    prep = tf.function(lambda b: pp.preprocess_encoded(b, cfg),
                       input_signature=[tf.TensorSpec([], tf.string)])
    names = list(names) if names is not None else None
    bar = progress(total=total, desc="embedding", unit="images", log_every_s=progress_every_s)
    out, batch = [], []

    def flush():
        out.append(embedder.embed_pixels(np.stack(batch), flip))
        batch.clear()

    for i, encoded in enumerate(encoded_images):
        try:
            batch.append(prep(tf.constant(encoded)).numpy())
        except tf.errors.InvalidArgumentError as e:
            name = names[i] if names else f"image {i}"
            raise image_utils.BadImageError(f"{name}: cannot decode ({pp.decode_error_message(e)})"
                                            ) from None
        if len(batch) == batch_size:
            bar.update(len(batch))
            flush()
    if batch:
        bar.update(len(batch))
        flush()
    bar.close()
    if not out:
        return np.zeros((0, embedder.embedding_dim), np.float32)
    return np.concatenate(out)


def embed_files(embedder, paths, batch_size: int = 64, flip: bool = False,
                progress_every_s: float | None = LOG_EVERY_S) -> np.ndarray:
    """Embeddings aligned with `paths`; a path listed twice is read and embedded once."""
    paths = list(paths)
    unique = list(dict.fromkeys(paths))
    emb = embed_encoded_images(embedder, (read_encoded(p) for p in unique), total=len(unique),
                               batch_size=batch_size, flip=flip, names=unique,
                               progress_every_s=progress_every_s)
    row = {p: i for i, p in enumerate(unique)}
    return emb[[row[p] for p in paths]] if paths else emb


def align_config_for(embedder, margin: float = 32.0, method: str = "margin") -> AlignConfig:
    """Square crops as large as the model's input side (its own preprocessing then takes the
    centre at the model's aspect ratio, undistorted)."""
    return AlignConfig(image_size=max(embedder.preprocess.image_size), margin=margin,
                       method=method)


@dataclasses.dataclass
class PhotoFaceTable:
    """Every face found in a list of photos, one row each, and the photos that gave none."""
    embeddings: np.ndarray      # float32 [F, D]
    photos: list                # the photo (name) of each face
    face_index: np.ndarray      # int32 [F]: the face's rank in its photo (by detector score)
    boxes: np.ndarray           # float32 [F, 4] (x1, y1, x2, y2) in the photo's pixels
    scores: np.ndarray          # float32 [F]
    is_main: np.ndarray         # bool [F]: the photo's main face (facenet_tf.detection.main_face)
    skipped: list               # [{"photo", "reason"}]: no face, or unreadable
    thumbnails: np.ndarray | None = None  # uint8 [F, s, s, 3] aligned faces, if asked for


def embed_photo_faces(embedder, detector, paths, names=None, align: AlignConfig | None = None,
                      keep: str = "all", batch_size: int = 64, flip: bool = False,
                      thumbnail_size: int | None = None) -> PhotoFaceTable:
    """Detects, aligns and embeds the faces of photo files (keep="all": every face; "main":
    the main face of each), PHOTOS_PER_CHUNK photos at a time; flip as embed_encoded_images."""
    paths = list(paths)
    names = list(names) if names is not None else paths
    align = align or align_config_for(embedder)
    embeddings, rows, skipped, thumbs = [], [], [], []
    bar = progress(total=len(paths), desc="finding and embedding faces", unit="photos")
    for start in range(0, len(paths), PHOTOS_PER_CHUNK):
        chunk = list(zip(paths[start:start + PHOTOS_PER_CHUNK],
                         names[start:start + PHOTOS_PER_CHUNK]))
        photos = [io_utils.read_bytes(path) for path, _ in chunk]
        found = find_faces(detector, photos, align, keep=keep, names=[n for _, n in chunk])
        crops = []
        for faces in found:
            if faces.error or not faces.kept:
                skipped.append({"photo": faces.name,
                                "reason": faces.error or "no face found"})
                continue
            for k, index in enumerate(faces.kept):
                crops.append(faces.crops[k])
                rows.append((faces.name, index, faces.detections.boxes[index],
                             faces.detections.scores[index], index == faces.main))
                if thumbnail_size:
                    thumbs.append(image_utils.thumbnail(faces.crops[k], thumbnail_size))
        if crops:
            embeddings.append(embedder.embed_faces(np.stack(crops), batch_size, flip))
        bar.update(len(chunk))
    bar.close()
    dim = embedder.embedding_dim
    return PhotoFaceTable(
        embeddings=np.concatenate(embeddings) if embeddings else np.zeros((0, dim), np.float32),
        photos=[r[0] for r in rows],
        face_index=np.array([r[1] for r in rows], np.int32),
        boxes=np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
        scores=np.array([r[3] for r in rows], np.float32),
        is_main=np.array([r[4] for r in rows], bool),
        skipped=skipped,
        thumbnails=np.stack(thumbs) if thumbs else None)
