"""Annotated copies of photos: boxes where the faces are (scaled with small photos), a label band
of the box's colour above each box (below it at the top edge)."""

import io

import numpy as np
from PIL import Image

from facenet_tf.evaluation import visualize


def _png(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_boxes_and_labels_are_drawn_in_place(tmp_path):
    photo = np.full((80, 120, 3), 128, np.uint8)  # small: drawn 6x larger (480 / 80)
    out = visualize.annotate_photo(_png(photo), [((60, 40, 100, 76), "Ann 97%", True),
                                                 ((10, 2, 40, 30), "unknown", False)],
                                   str(tmp_path / "a.png"))
    drawn = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert drawn.shape == (480, 720, 3)
    green, red = np.array(visualize.KNOWN_COLOUR), np.array(visualize.UNKNOWN_COLOUR)
    # Box edges at 6x the given coordinates.
    assert (drawn[400, 360] == green).all() and (drawn[300, 599] == green).all()
    assert (drawn[100, 60] == red).all()
    # The known face's label band sits just above its box, the unknown one's below its box
    # (no room above at the top edge); inside the boxes the photo is untouched.
    assert (drawn[239, 362] == green).all()
    assert (drawn[181, 62] == red).all()
    assert (drawn[350, 500] == 128).all()


def test_a_jpeg_path_gets_a_jpeg_and_a_large_photo_keeps_its_size(tmp_path):
    photo = np.full((900, 1200, 3), 200, np.uint8)
    out = visualize.annotate_photo(photo, [((100, 100, 400, 500), "Bob", True)],
                                   str(tmp_path / "b.jpg"))
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (1200, 900)
