"""embed, compare and cluster on ordinary photos: every face found with its box, the best
matching faces of two photos compared, faces (not files) clustered, photos without a face listed
as skipped; the main face of a photo whose subject is off-centre."""

import os

import numpy as np
import pytest
from PIL import Image

from facenet_tf.detection import FaceDetector
from facenet_tf.detection.faces import find_faces
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.models import frozen_graph
from facenet_tf.recognition import workflows
from facenet_tf.serving.saved_model import export_saved_model
from tests._photos import noise_canvas
from tests.conftest import make_tiny_embedding_model, old_main_face_rule

# Two people of LFW, three photos each.
PEOPLE = {"a": ("Aaron_Peirsol", (1, 2, 3)), "b": ("Adam_Sandler", (1, 2, 3)),
          "c": ("Aaron_Eckhart", (1,))}


def _face(lfw_dir, person, index):
    name, _ = PEOPLE[person]
    img = Image.open(os.path.join(lfw_dir, "images", name, f"{name}_{index:04d}.jpg"))
    return img.convert("RGB").crop((50, 40, 200, 210))  # the face with some context


@pytest.fixture(scope="module")
def photos(lfw_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    group, group_rects = noise_canvas([(_face(lfw_dir, "a", 1), (40, 60)),
                                  (_face(lfw_dir, "b", 1), (400, 180))])
    group.save(root / "group.jpg", quality=95)
    for person in ("a", "b"):
        for i in (2, 3):
            single, _ = noise_canvas([(_face(lfw_dir, person, i), (200 + 30 * i, 100))], seed=i)
            single.save(root / f"{person}{i}.png")
    noise_canvas([])[0].save(root / "empty.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return str(root), group_rects


@pytest.fixture(scope="module")
def corner_photo(lfw_dir, tmp_path_factory):
    """Issue 26's photo, rebuilt: person a's face about 190 px wide in the top left corner,
    person b's about 100 px wide right of centre, and a 40 px face near the centre (person c,
    standing in for the user's small, low-scored box) on a patterned, noisy 640x420
    background. Returns its path and the rectangles pasted for a, b and c."""
    rng = np.random.RandomState(7)
    y, x = np.mgrid[0:420, 0:640]
    pattern = 128 + 60 * np.sign(np.sin(x / 9.0) * np.sin(y / 11.0))[..., None] \
        + rng.normal(0, 25, (420, 640, 3))
    canvas = Image.fromarray(np.clip(pattern, 0, 255).astype(np.uint8))
    rects = []
    for person, scale, (left, top) in (("a", 2.0, (4, 4)), ("b", 1.1, (420, 150)),
                                       ("c", 0.4, (297, 178))):
        face = _face(lfw_dir, person, 1)
        face = face.resize((round(face.width * scale), round(face.height * scale)),
                           Image.BILINEAR)
        canvas.paste(face, (left, top))
        rects.append((left, top, left + face.width, top + face.height))
    path = tmp_path_factory.mktemp("corner") / "corner.jpg"
    canvas.save(path, quality=95)
    return str(path), rects


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory):
    path = export_saved_model(make_tiny_embedding_model((32, 32, 3)),
                              str(tmp_path_factory.mktemp("tiny") / "sm"), _tiny_preprocess())
    return load_embedder(path)


@pytest.mark.integration
def test_the_main_face_of_the_corner_photo_is_the_large_face(corner_photo, detector):
    path, (rect_a, rect_b, rect_c) = corner_photo
    found = find_faces(detector, [path])[0]
    boxes = found.detections.boxes
    # Each pasted face is found, once.
    assert sorted(next(r for r, rect in enumerate((rect_a, rect_b, rect_c))
                       if _inside(b, rect, slack=10)) for b in boxes) == [0, 1, 2]
    assert _inside(boxes[found.main], rect_a)
    # The rule of davidsandberg/facenet's alignment chose the small face near the centre.
    assert _inside(boxes[old_main_face_rule(found.detections, 420, 640)], rect_c)


@pytest.mark.integration
def test_compare_takes_the_best_matching_pair_or_the_faces_asked_for(
        corner_photo, photos, detector, tiny_embedder):
    """Against a plain loop over every pair of faces of the two photos (a tiny model: which
    pair wins does not matter here, only that it is the closest one)."""
    path1, path2 = corner_photo[0], os.path.join(photos[0], "group.jpg")
    align = batch_embed.align_config_for(tiny_embedder)
    found = find_faces(detector, [path1, path2], align)
    e1, e2 = (tiny_embedder.embed_faces(f.crops) for f in found)
    loop = {(i, j): float(np.sum((e1[i].astype(np.float64) - e2[j]) ** 2))
            for i in range(len(e1)) for j in range(len(e2))}
    best = min(loop, key=lambda ij: (loop[ij], ij))

    result = workflows.verify(tiny_embedder, path1, path2, threshold=1.0, detector=detector)
    assert (result["face1"], result["face2"]) == best
    assert result["distance"] == pytest.approx(loop[best], abs=1e-5)
    assert result["pairs_compared"] == len(loop) >= 4
    for k, faces in (("1", found[0]), ("2", found[1])):
        np.testing.assert_allclose([f["box"] for f in result[f"faces{k}"]],
                                   faces.detections.boxes, atol=0.051)
        assert [f["face"] for f in result[f"faces{k}"]] == list(range(faces.num_faces))
    assert result["pair"] == "best match"
    assert workflows.verification_summary(result).endswith(
        f"between face {best[0]} of {len(e1)} in {path1} and face {best[1]} of {len(e2)} in "
        f"{path2} (the best-matching of {len(loop)} pairs)")
    for pick in ((1, 0), (0, 1)):
        chosen = workflows.verify(tiny_embedder, path1, path2, threshold=1.0,
                                  detector=detector, face1=pick[0], face2=pick[1])
        assert (chosen["face1"], chosen["face2"]) == pick
        assert chosen["distance"] == pytest.approx(loop[pick], abs=1e-5)
        assert chosen["pairs_compared"] == 1 and chosen["pair"] == "given"
    only = workflows.verify(tiny_embedder, path1, path2, threshold=1.0, detector=detector,
                            face2=1)
    assert only["pairs_compared"] == len(e1) and only["face2"] == 1
    assert only["distance"] == pytest.approx(min(loop[i, 1] for i in range(len(e1))),
                                             abs=1e-5)
    with pytest.raises(ValueError, match=r"corner.jpg: face1=9, but the photo has \d faces"):
        workflows.verify(tiny_embedder, path1, path2, detector=detector, face1=9)


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
def test_compare_and_cluster_real_faces_in_photos(photos, corner_photo, detector,
                                                   pretrained_embedder, tmp_path):
    root, _ = photos
    # Issue 26: is person a (190 px, in the corner of a photo with b and c) in a2.png? Yes.
    corner, (rect_a, rect_b, _) = corner_photo
    found = workflows.verify(pretrained_embedder, corner, os.path.join(root, "a2.png"),
                             threshold=1.1, detector=detector)
    assert found["same"] and _inside(found["faces1"][found["face1"]]["box"], rect_a)
    assert len(found["faces1"]) == 3 and found["pairs_compared"] == 3
    b_index = next(f["face"] for f in found["faces1"] if _inside(f["box"], rect_b))
    asked = workflows.verify(pretrained_embedder, corner, os.path.join(root, "a2.png"),
                             threshold=1.1, detector=detector, face1=b_index)
    assert not asked["same"] and asked["distance"] > found["distance"]
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
