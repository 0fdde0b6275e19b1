"""Photos made for tests: real faces pasted on a noise background."""

import numpy as np
from PIL import Image


def noise_canvas(faces_at, size=(640, 420), seed=0):
    """A noise photo with faces pasted at (x, y); returns the image and the pasted rectangles."""
    rng = np.random.RandomState(seed)
    canvas = Image.fromarray(np.clip(rng.normal(120, 20, (size[1], size[0], 3)), 0, 255)
                             .astype(np.uint8))
    rects = []
    for face, (x, y) in faces_at:
        canvas.paste(face, (x, y))
        rects.append((x, y, x + face.width, y + face.height))
    return canvas, rects
