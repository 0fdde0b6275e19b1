"""Embeds image files or encoded images with a loaded model, in batches, each distinct file once,
with progress (a bar on a terminal, log lines elsewhere)."""

import numpy as np
import tensorflow as tf

from facenet_tf.data import images as image_utils
from facenet_tf.data import preprocess as pp
from facenet_tf.data.image_files import read_encoded
from facenet_tf.progress import LOG_EVERY_S, progress


def embed_encoded_images(embedder, encoded_images, total: int | None = None,
                         batch_size: int = 64, flip: bool = False, names=None,
                         progress_every_s: float | None = LOG_EVERY_S) -> np.ndarray:
    """Embeds an iterable of encoded images with `embedder.preprocess`, in batches.

    flip=True averages each image's embedding with its mirror image's, then re-normalises.
    `names` (parallel to the images) are used in decoding errors. Progress: see
    facenet_tf.progress (progress_every_s=None shows none).
    """
    cfg = embedder.preprocess
    prep = tf.function(lambda b: pp.preprocess_encoded(b, cfg),
                       input_signature=[tf.TensorSpec([], tf.string)])
    names = list(names) if names is not None else None
    bar = progress(total=total, desc="embedding", unit="images", log_every_s=progress_every_s)
    out, batch = [], []

    def flush():
        x = np.stack(batch)
        emb = embedder.embed_pixels(x)
        if flip:
            emb = emb + embedder.embed_pixels(x[:, :, ::-1, :])
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        out.append(emb.astype(np.float32))
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
