"""The face-alignment job: one aligned crop per photo with a face, every other photo listed
with its reason, the main face kept by the documented rule, the same bytes on every re-run and
runner."""

import filecmp
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facenet_tf.detection import AlignConfig
from facenet_tf.pipelines.align_faces import AlignJobConfig, align_faces
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def _lfw(lfw_dir, name, index):
    return Image.open(os.path.join(lfw_dir, "images", name, f"{name}_{index:04d}.jpg")).convert(
        "RGB")


@pytest.fixture(scope="module")
def photos(lfw_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for person in ("p1", "p2"):
        (root / person).mkdir()
    _lfw(lfw_dir, "Aaron_Peirsol", 1).save(root / "p1" / "a.jpg", quality=95)
    rng = np.random.RandomState(0)
    group = Image.fromarray(np.clip(rng.normal(120, 20, (340, 520, 3)), 0, 255).astype(np.uint8))
    small = _lfw(lfw_dir, "Adam_Sandler", 1).crop((60, 50, 190, 200)).resize((87, 100))
    large = _lfw(lfw_dir, "Aaron_Peirsol", 2).crop((50, 40, 200, 210))
    group.paste(small, (20, 20))    # small, in a corner
    group.paste(large, (190, 90))   # larger, near the centre: the main face
    group.save(root / "p1" / "group.png")
    _lfw(lfw_dir, "Adam_Sandler", 2).save(root / "p2" / "b.jpg", quality=95)
    Image.fromarray(np.clip(rng.normal(120, 20, (200, 200, 3)), 0, 255).astype(np.uint8)).save(
        root / "p2" / "blank.png")
    (root / "p2" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not a JPEG")
    (root / "p2" / "notes.txt").write_text("not an image\n")
    return str(root)


@pytest.fixture(scope="module")
def aligned(photos, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("aligned") / "out")
    return out, align_faces(AlignJobConfig(photos, out, AlignConfig(image_size=96)))


def _main_by_rule(boxes, height, width):
    """The documented rule, by hand: largest area - 2 x squared centre distance."""
    best, best_value = None, None
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        value = (x2 - x1) * (y2 - y1) - 2 * (((x1 + x2) / 2 - width / 2) ** 2 +
                                             ((y1 + y2) / 2 - height / 2) ** 2)
        if best is None or value > best_value:
            best, best_value = i, value
    return best


def test_every_photo_is_aligned_or_listed_with_its_reason(photos, aligned):
    out, manifest = aligned
    assert manifest["num_photos"] == 6
    assert sorted(manifest["aligned"]) == ["p1/a.jpg", "p1/group.png", "p2/b.jpg"]
    assert manifest["no_face"] == ["p2/blank.png"]
    assert sorted(u["image"] for u in manifest["unreadable"]) == ["p2/broken.jpg",
                                                                  "p2/notes.txt"]
    assert all(u["reason"] for u in manifest["unreadable"])
    crops = sorted(os.path.relpath(os.path.join(d, f), os.path.join(out, "images"))
                   for d, _, files in os.walk(os.path.join(out, "images")) for f in files)
    assert crops == ["p1/a.png", "p1/group.png", "p2/b.png"]
    for crop in crops:
        assert Image.open(os.path.join(out, "images", crop)).size == (96, 96)


def test_a_photo_with_several_faces_keeps_the_main_one(aligned):
    _, manifest = aligned
    [group] = manifest["multiple_faces"]
    assert group["image"] == "p1/group.png" and group["num_faces"] == 2
    assert group["kept"] == _main_by_rule(group["boxes"], 340, 520)
    kept = group["boxes"][group["kept"]]
    assert 190 - 20 <= kept[0] and kept[2] <= 190 + 150 + 20  # the large, central face


def test_a_rerun_gives_the_same_crops_byte_for_byte(photos, aligned, tmp_path):
    out, manifest = aligned
    again = str(tmp_path / "again")
    second = align_faces(AlignJobConfig(photos, again, AlignConfig(image_size=96)))
    for name, entry in manifest["aligned"].items():
        assert filecmp.cmp(os.path.join(out, "images", entry["output"]),
                           os.path.join(again, "images", entry["output"]), shallow=False)
    drop = {"run_info", "elapsed_seconds", "beam_counters"}
    assert {k: v for k, v in second.items() if k not in drop} == \
        {k: v for k, v in manifest.items() if k not in drop}


@pytest.mark.slow
def test_the_command_on_two_worker_processes_writes_the_same_crops(photos, aligned, tmp_path):
    out, manifest = aligned
    multi = str(tmp_path / "multi")
    result = subprocess.run(
        [sys.executable, "-m", "beam_jobs.align_faces", f"--input_dir={photos}",
         f"--output_dir={multi}", "--image_size=96", "--batch_size=2",
         "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True,
        text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no face: 1" in result.stdout
    for entry in manifest["aligned"].values():
        assert filecmp.cmp(os.path.join(out, "images", entry["output"]),
                           os.path.join(multi, "images", entry["output"]), shallow=False)
