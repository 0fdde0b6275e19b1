"""Datasets bundled with facenet_tf, so the demo needs nothing outside the project.

ORL (AT&T) faces: 40 people x 10 greyscale 92x112 PGM images, taken 1992-1994 at the
Olivetti Research Laboratory, Cambridge, UK. Credit: Olivetti Research Laboratory; reference:
F. Samaria and A. Harter, "Parameterisation of a stochastic model for human face
identification", 2nd IEEE Workshop on Applications of Computer Vision, 1994.
"""

import os

ORL_FACES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "orl_faces", "images")
ORL_CREDIT = ("ORL faces: credit to Olivetti Research Laboratory (F. Samaria and A. Harter, "
              "2nd IEEE Workshop on Applications of Computer Vision, 1994)")
