"""A small world for the service's tests: a tiny exported model (threshold 0.05), three
people with two enrolled face crops each and a third crop each as a probe, a stranger, and a
key file with a user and an admin key; world["embed"](path) is a file's embedding by the
model's own in-graph decoding (float64). Galleries are copied per use (the service writes)."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import gallery as gallery_lib
from facenet_tf.serving.saved_model import export_saved_model
from tests.conftest import make_image_folder, make_tiny_embedding_model

USER_KEY = "user-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
THRESHOLD = 0.05
PEOPLE = ("person_00", "person_01", "person_02")


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    model = export_saved_model(make_tiny_embedding_model((32, 32, 3)), str(root / "tiny"),
                               PreprocessConfig((32, 32)), threshold=THRESHOLD)
    faces = make_image_folder(root / "faces", num_identities=3, images_per_identity=3,
                              size=(32, 32))
    known = {p: [os.path.join(faces, p, f"img_{j:03d}.png") for j in (0, 1)] for p in PEOPLE}
    probes = {p: os.path.join(faces, p, "img_002.png") for p in PEOPLE}
    stranger = str(root / "stranger.png")
    Image.fromarray(np.random.RandomState(9).randint(0, 256, (32, 32, 3)).astype(np.uint8)
                    ).save(stranger)
    embedder = load_embedder(model)
    gallery = gallery_lib.open_gallery(str(root / "gallery"), embedder, create=True)
    gallery.enroll_photos(embedder, None, known)
    key_file = root / "keys.json"
    key_file.write_text(json.dumps({"keys": [
        {"name": "app", "role": "user", "key": USER_KEY},
        {"name": "ops", "role": "admin", "key": ADMIN_KEY}]}))
    every = [p for paths in known.values() for p in paths] + [*probes.values(), stranger]
    rows = dict(zip(every, embedder.embed_encoded([read(p) for p in every]).astype(np.float64)))
    return {"root": root, "model": model, "embedder": embedder, "embed": rows.__getitem__,
            "known": known,
            "probes": probes, "stranger": stranger, "gallery": str(root / "gallery"),
            "key_file": str(key_file)}


def copy_gallery(world, dest) -> str:
    shutil.copytree(world["gallery"], dest)
    return str(dest)


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


USER = {"X-API-Key": USER_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}
