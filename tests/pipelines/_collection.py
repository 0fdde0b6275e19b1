"""The photo collection the index-job tests share (ORL faces in folders, a photo of two people,
one without a face, a broken JPEG, a text file) and the byte-identity check of two indexes."""

import os

import numpy as np
from PIL import Image

from facenet_tf.common import io_utils
from tests.conftest import REPO_ROOT

ORL = os.path.join(REPO_ROOT, "facenet_tf", "datasets", "orl_faces", "images")


def orl_face(identity: int, index: int) -> np.ndarray:
    return np.asarray(Image.open(os.path.join(ORL, f"s{identity}", f"{index}.pgm")).convert("RGB"))


def two_faces() -> np.ndarray:
    canvas = np.full((160, 240, 3), 90, np.uint8)
    canvas[10:122, 10:102] = orl_face(1, 1)
    canvas[30:142, 130:222] = orl_face(2, 1)
    return canvas


def write_collection(root) -> str:
    """Three people's photos in two folders, a photo of two of them, a photo without a face,
    a broken JPEG and a text file."""
    for identity in (1, 2, 3):
        os.makedirs(os.path.join(root, f"p{identity}"), exist_ok=True)
        for index in (2, 3, 4):
            Image.fromarray(orl_face(identity, index)).save(
                os.path.join(root, f"p{identity}", f"{index}.png"))
    os.makedirs(os.path.join(root, "misc"), exist_ok=True)
    Image.fromarray(two_faces()).save(os.path.join(root, "misc", "two.png"))
    noise = np.random.RandomState(0).randint(0, 256, (120, 100, 3)).astype(np.uint8)
    Image.fromarray(noise).save(os.path.join(root, "misc", "noise.png"))
    with open(os.path.join(root, "misc", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff not a JPEG")
    with open(os.path.join(root, "misc", "notes.txt"), "w") as f:
        f.write("not a photo\n")
    return str(root)


def assert_same_shards(expected_dir: str, actual_dir: str) -> None:
    """Both indexes' manifests agree but for run-specific fields, and every shard and the
    search index (when it has a file: an exact one has none) are byte-identical."""
    expected = io_utils.read_manifest(expected_dir)
    actual = io_utils.read_manifest(actual_dir)
    drop = {"run_info", "elapsed_seconds", "index_seconds", "beam_runner", "beam_counters"}
    assert {k: v for k, v in actual.items() if k not in drop} == \
        {k: v for k, v in expected.items() if k not in drop}
    names = [n for table in ("faces", "photos") for n in expected["shards"][table]]
    index_file = expected["search_index"]["file"]
    for name in names + ([index_file] if index_file else []):
        with open(os.path.join(expected_dir, expected["data_dir"], name), "rb") as f:
            want = f.read()
        with open(os.path.join(actual_dir, actual["data_dir"], name), "rb") as f:
            assert f.read() == want, f"{name} differs"
