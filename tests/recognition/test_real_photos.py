"""Enrol real LFW people from ordinary photos and name the faces of a group photo, a stranger
and a photo without a face, with the pretrained model and its shipped calibration."""

import os

import pytest
from PIL import Image

from facenet_tf.detection import FaceDetector
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.models import frozen_graph
from facenet_tf.recognition import gallery as gallery_lib
from tests._photos import noise_canvas  # faces pasted on a noise photo

KNOWN = ("Aaron_Peirsol", "Adam_Sandler", "Colin_Powell")


def _photo(lfw_dir, name, i):
    return os.path.join(lfw_dir, "images", name, f"{name}_{i:04d}.jpg")


def _face(lfw_dir, name, i):
    return Image.open(_photo(lfw_dir, name, i)).convert("RGB").crop((50, 40, 200, 210))


@pytest.mark.integration
@pytest.mark.slow
def test_enrol_and_identify_real_people(lfw_dir, tmp_path):
    try:
        embedder = load_embedder("pretrained")
    except frozen_graph.PretrainedNotFoundError as e:
        pytest.skip(f"pretrained weights not available: {e}")
    known = {name: [_photo(lfw_dir, name, i) for i in (1, 2)] for name in KNOWN}
    group, rects = noise_canvas([(_face(lfw_dir, "Aaron_Peirsol", 3), (40, 60)),
                            (_face(lfw_dir, "Adam_Sandler", 3), (400, 180))])
    group.save(tmp_path / "group.jpg", quality=95)
    stranger = _photo(lfw_dir, "George_W_Bush", 1)
    noise_canvas([])[0].save(tmp_path / "empty.png")
    detector = FaceDetector()
    gallery = gallery_lib.open_gallery(str(tmp_path / "g"), embedder, create=True)
    report = gallery.enroll_photos(embedder, detector, known)
    assert gallery.people() == {name: 2 for name in KNOWN}
    assert report["faces_enrolled"] == 6
    assert gallery.calibration.calibrated  # the pretrained model's is shipped

    result = gallery_lib.identify_photos(
        gallery, embedder, detector,
        [str(tmp_path / "group.jpg"), stranger, str(tmp_path / "empty.png")], top_k=3)
    faces = result["faces"]
    assert result["skipped"] == [{"photo": str(tmp_path / "empty.png"),
                                  "reason": "no face found"}]
    in_group = [f for f in faces if f["photo"].endswith("group.jpg")]
    named = {}
    for face in in_group:
        x1, y1, x2, y2 = face["box"]
        rect = [r for r in rects if r[0] - 25 <= x1 and r[1] - 25 <= y1
                and x2 <= r[2] + 25 and y2 <= r[3] + 25]
        assert len(rect) == 1, face["box"]
        named[rects.index(rect[0])] = face["identity"]
        assert face["confidence"] > 0.5
    assert named == {0: "Aaron_Peirsol", 1: "Adam_Sandler"}
    bush = [f for f in faces if f["photo"] == stranger]
    assert bush and all(f["identity"] is None for f in bush)
    assert all(f["confidence"] < 0.5 for f in bush)
    written = gallery_lib.annotate_photos(faces, str(tmp_path / "annotated"),
                                          skipped=result["skipped"])
    assert sorted(os.path.basename(p) for p in written) == sorted(
        ["group.jpg", os.path.basename(stranger), "empty.png"])
