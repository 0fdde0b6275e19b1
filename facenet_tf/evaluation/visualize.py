"""Pictures of embeddings: a TensorBoard projector log (points, labels, face sprites) and a
contact sheet of clusters (one row of thumbnails per cluster)."""

import io
import math
import os

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont, ImageOps
from tensorboard.plugins import projector

from facenet_tf.common import io_utils
from facenet_tf.data.image_files import read_encoded
from facenet_tf.data.images import THUMBNAIL_SIZE, thumbnail

# TensorBoard's projector reads sprites up to 8192 x 8192 pixels.
MAX_SPRITE_SIDE = 8192
_TENSOR_NAME = "embeddings/.ATTRIBUTES/VARIABLE_VALUE"


def file_thumbnails(paths, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """uint8 [N, size, size, 3] thumbnails of image files."""
    return np.stack([thumbnail(read_encoded(p), size) for p in paths]) if paths else \
        np.zeros((0, size, size, 3), np.uint8)


def sprite(thumbnails: np.ndarray) -> np.ndarray:
    """The projector's sprite: thumbnails [N, s, s, 3] in rows of ceil(sqrt(N)), row-major,
    padded with black."""
    n, s = thumbnails.shape[0], thumbnails.shape[1]
    per_row = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / per_row)
    sheet = np.zeros((rows * s, per_row * s, 3), np.uint8)
    for i, thumb in enumerate(thumbnails):
        r, c = divmod(i, per_row)
        sheet[r * s:(r + 1) * s, c * s:(c + 1) * s] = thumb
    return sheet


def sprite_thumbnail_size(num_images: int, largest: int = THUMBNAIL_SIZE) -> int:
    """The largest thumbnail side (<= largest) whose sprite of num_images fits the projector."""
    per_row = max(1, math.ceil(math.sqrt(num_images)))
    return max(1, min(largest, MAX_SPRITE_SIDE // per_row))


def _tsv_field(value) -> str:
    return str(value).replace("\t", " ").replace("\n", " ")


def write_projector(log_dir: str, embeddings, metadata: dict, thumbnails=None) -> dict:
    """Writes a TensorBoard projector log: `tensorboard --logdir log_dir`, tab Projector.

    metadata: {column: [value per embedding]} (e.g. identity, image id), written as
    metadata.tsv; thumbnails: uint8 [N, s, s, 3] faces, written as sprite.png. Returns the
    written paths.
    """
    embeddings = np.asarray(embeddings, np.float32)
    n = embeddings.shape[0]
    for column, values in metadata.items():
        if len(values) != n:
            raise ValueError(f"metadata column {column!r} has {len(values)} values for "
                             f"{n} embeddings")
    tf.io.gfile.makedirs(log_dir)
    checkpoint = tf.train.Checkpoint(embeddings=tf.Variable(embeddings))
    # save() also writes the `checkpoint` state file the projector finds its tensors by.
    checkpoint_prefix = checkpoint.save(os.path.join(log_dir, "embeddings.ckpt"))
    columns = list(metadata)
    lines = ["\t".join(columns)] if len(columns) > 1 else []
    lines += ["\t".join(_tsv_field(metadata[c][i]) for c in columns) for i in range(n)]
    io_utils.write_bytes_atomic(os.path.join(log_dir, "metadata.tsv"),
                                ("\n".join(lines) + "\n").encode("utf-8"))
    config = projector.ProjectorConfig()
    entry = config.embeddings.add()
    entry.tensor_name = _TENSOR_NAME
    entry.metadata_path = "metadata.tsv"
    written = {"checkpoint": checkpoint_prefix,
               "metadata": os.path.join(log_dir, "metadata.tsv")}
    if thumbnails is not None:
        thumbnails = np.asarray(thumbnails, np.uint8)
        if thumbnails.shape[0] != n:
            raise ValueError(f"{thumbnails.shape[0]} thumbnails for {n} embeddings")
        buffer = io.BytesIO()
        Image.fromarray(sprite(thumbnails)).save(buffer, "PNG")
        io_utils.write_bytes_atomic(os.path.join(log_dir, "sprite.png"), buffer.getvalue())
        entry.sprite.image_path = "sprite.png"
        entry.sprite.single_image_dim.extend([thumbnails.shape[2], thumbnails.shape[1]])
        written["sprite"] = os.path.join(log_dir, "sprite.png")
    projector.visualize_embeddings(log_dir, config)
    written["config"] = os.path.join(log_dir, "projector_config.pbtxt")
    return written


# Pixels left of a contact sheet's thumbnails, for the row titles.
CONTACT_LABEL_WIDTH = 110


def contact_sheet(path: str, rows, thumbnail_size: int = THUMBNAIL_SIZE,
                  per_row: int = 12) -> str:
    """A PNG with one row per cluster: its title, then up to `per_row` of its thumbnails
    (and "+k" for the rest). rows: [(title, [uint8 [s, s, 3] thumbnails])]."""
    label_width, gap = CONTACT_LABEL_WIDTH, 4
    longest = max((min(len(thumbs), per_row) for _, thumbs in rows), default=0)
    width = label_width + max(1, longest) * (thumbnail_size + gap)
    height = max(1, len(rows)) * (thumbnail_size + gap)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (title, thumbs) in enumerate(rows):
        y = r * (thumbnail_size + gap)
        shown = list(thumbs)[:per_row]
        more = len(thumbs) - len(shown)
        draw.text((4, y + thumbnail_size // 2 - 6),
                  f"{title}" + (f"  +{more}" if more else ""), fill="black")
        for c, thumb in enumerate(shown):
            picture = Image.fromarray(thumbnail(thumb, thumbnail_size))
            sheet.paste(picture, (label_width + c * (thumbnail_size + gap), y))
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    io_utils.write_bytes_atomic(path, buffer.getvalue())
    return path


# An annotated copy of a photo is drawn at least this many pixels on its shorter side (small
# photos are enlarged first, so that names stay legible).
ANNOTATE_MIN_SIDE = 480
KNOWN_COLOUR = (20, 160, 60)
UNKNOWN_COLOUR = (215, 40, 40)


def annotate_photo(photo, faces, path: str) -> str:
    """Writes a copy of a photo (encoded bytes or uint8 [H, W, 3]) with each face's box and
    label drawn; faces: [(box (x1, y1, x2, y2) in the photo's pixels, label, known)]; known
    faces are boxed in green, unknown ones in red. The format follows `path`'s extension."""
    if isinstance(photo, (bytes, bytearray)):
        picture = ImageOps.exif_transpose(Image.open(io.BytesIO(photo))).convert("RGB")
    else:
        picture = Image.fromarray(np.asarray(photo, np.uint8)).convert("RGB")
    scale = max(1.0, ANNOTATE_MIN_SIDE / min(picture.size))
    if scale > 1.0:
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                                 Image.BICUBIC)
    draw = ImageDraw.Draw(picture)
    side = min(picture.size)
    font = ImageFont.load_default(size=max(14, round(side / 28)))
    line = max(2, round(side / 250))
    pad = max(2, line)
    for box, label, known in faces:
        colour = KNOWN_COLOUR if known else UNKNOWN_COLOUR
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        tx = min(max(0.0, x1 - line / 2), max(0.0, picture.width - w))
        ty = y1 - h if y1 - h >= 0 else min(y2, picture.height - h)  # above, else below
        draw.rectangle([tx, ty, tx + w, ty + h], fill=colour)
        draw.text((tx + pad - left, ty + pad - top), label, fill="white", font=font)
    buffer = io.BytesIO()
    jpeg = path.lower().endswith((".jpg", ".jpeg"))
    picture.save(buffer, "JPEG" if jpeg else "PNG", **({"quality": 92} if jpeg else {}))
    io_utils.write_bytes_atomic(path, buffer.getvalue())
    return path
