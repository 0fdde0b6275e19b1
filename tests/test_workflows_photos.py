"""embed, compare and cluster on ordinary photos: every face found with its box, the main face
of each photo compared, faces (not files) clustered, photos without a face listed as skipped."""

import os

import numpy as np
import pytest
from PIL import Image

from facenet_tf.detection import FaceDetector
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.models import frozen_graph
from facenet_tf.recognition import workflows
from facenet_tf.serving.saved_model import export_saved_model
from tests.conftest import make_tiny_embedding_model

# Two people of LFW, three photos each.
PEOPLE = {"a": ("Aaron_Peirsol", (1, 2, 3)), "b": ("Adam_Sandler", (1, 2, 3))}


def _face(lfw_dir, person, index):
    name, _ = PEOPLE[person]
    img = Image.open(os.path.join(lfw_dir, "images", name, f"{name}_{index:04d}.jpg"))
    return img.convert("RGB").crop((50, 40, 200, 210))  # the face with some context


def _canvas(faces_at, size=(640, 420), seed=0):
    """A noise photo with faces pasted at (x, y); returns the image and the pasted rectangles."""
    rng = np.random.RandomState(seed)
    canvas = Image.fromarray(np.clip(rng.normal(120, 20, (size[1], size[0], 3)), 0, 255)
                             .astype(np.uint8))
    rects = []
    for face, (x, y) in faces_at:
        canvas.paste(face, (x, y))
        rects.append((x, y, x + face.width, y + face.height))
    return canvas, rects


@pytest.fixture(scope="module")
def photos(lfw_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    group, group_rects = _canvas([(_face(lfw_dir, "a", 1), (40, 60)),
                                  (_face(lfw_dir, "b", 1), (400, 180))])
    group.save(root / "group.jpg", quality=95)
    for person in ("a", "b"):
        for i in (2, 3):
            single, _ = _canvas([(_face(lfw_dir, person, i), (200 + 30 * i, 100))], seed=i)
            single.save(root / f"{person}{i}.png")
    _canvas([])[0].save(root / "empty.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return str(root), group_rects


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def _inside(box, rect, slack=25):
    return (box[0] >= rect[0] - slack and box[1] >= rect[1] - slack and
            box[2] <= rect[2] + slack and box[3] <= rect[3] + slack)


@pytest.mark.integration
def test_embed_lists_every_face_with_its_box_and_skips_the_rest(photos, detector, tmp_path):
    root, rects = photos
    path = export_saved_model(make_tiny_embedding_model((32, 32, 3)), str(tmp_path / "tiny"),
                              _tiny_preprocess())
    arrays = workflows.embed_folder(load_embedder(path), root, detector=detector)
    ids = list(arrays["image_ids"])
    assert sorted(ids) == sorted(["group.jpg", "group.jpg", "a2.png", "a3.png",
                                  "b2.png", "b3.png"])
    group = [i for i, name in enumerate(ids) if name == "group.jpg"]
    boxes = arrays["boxes"][group]
    # Each pasted face is found once, inside its rectangle.
    assert sorted(next(r for r, rect in enumerate(rects) if _inside(b, rect)) for b in boxes) \
        == [0, 1]
    assert sum(arrays["is_main"][group]) == 1
    skipped = dict(zip(arrays["skipped_images"], arrays["skipped_reasons"]))
    assert skipped.keys() == {"empty.png", "broken.jpg"}
    assert skipped["empty.png"] == "no face found" and "unreadable" in skipped["broken.jpg"]
    assert np.allclose(np.linalg.norm(arrays["embeddings"], axis=1), 1.0, atol=1e-5)


def _tiny_preprocess():
    from facenet_tf.data.preprocess import PreprocessConfig
    return PreprocessConfig((32, 32))


@pytest.fixture(scope="module")
def pretrained_embedder(tmp_path_factory):
    try:
        model = frozen_graph.build_pretrained_model()
    except frozen_graph.PretrainedNotFoundError as e:
        pytest.skip(f"pretrained weights not available: {e}")
    out = str(tmp_path_factory.mktemp("pretrained") / "sm")
    return load_embedder(export_saved_model(model, out, frozen_graph.PRETRAINED_PREPROCESS))


@pytest.mark.integration
@pytest.mark.slow
def test_compare_and_cluster_real_faces_in_photos(photos, detector, pretrained_embedder,
                                                   tmp_path):
    root, _ = photos
    same = workflows.verify(pretrained_embedder, os.path.join(root, "a2.png"),
                             os.path.join(root, "a3.png"), threshold=1.1, detector=detector)
    other = workflows.verify(pretrained_embedder, os.path.join(root, "a2.png"),
                              os.path.join(root, "b3.png"), threshold=1.1, detector=detector)
    assert same["same"] and not other["same"] and same["distance"] < other["distance"]
    with pytest.raises(workflows.NoFaceError, match="empty.png: no face found"):
        workflows.verify(pretrained_embedder, os.path.join(root, "a2.png"),
                          os.path.join(root, "empty.png"), detector=detector)

    sheet = str(tmp_path / "sheet.png")
    listing = workflows.cluster_folder(pretrained_embedder, root, threshold=1.1,
                                       detector=detector, contact_sheet=sheet)
    assert listing["num_faces"] == 6
    assert {s["photo"] for s in listing["skipped"]} == {"empty.png", "broken.jpg"}
    # Two people, two clusters of three faces; the group photo's two faces are apart.
    clusters = [sorted(m["image"] for m in c["members"]) for c in listing["clusters"]]
    assert sorted(clusters) == [["a2.png", "a3.png", "group.jpg"],
                                ["b2.png", "b3.png", "group.jpg"]]
    drawn = np.asarray(Image.open(sheet).convert("RGB"))
    assert drawn.shape[0] == 2 * (64 + 4)
    # As wide as the longest row: a thumbnail reaches the right edge, no empty band.
    assert (drawn[:64, -10:-4] < 250).any()
