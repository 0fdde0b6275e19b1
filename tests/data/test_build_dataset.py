"""beam_jobs.build_dataset: counts, bad files, labels, determinism, atomic publish, CLI."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facenet_tf.common import io_utils
from facenet_tf.data import records
from facenet_tf.pipelines import build_dataset as job
from tests.conftest import REPO_ROOT, make_image_folder


def read_records(out_dir, manifest):
    recs = []
    for name in manifest["shards"]:
        for raw in tf.data.TFRecordDataset(os.path.join(out_dir, name)).as_numpy_iterator():
            recs.append(records.image_record_from_bytes(raw))
    return recs


def count_files(root):
    return sum(len(files) for _, _, files in os.walk(root))


def save(image: Image.Image, path, fmt, **kwargs):
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    with open(path, "wb") as f:
        f.write(out.getvalue())


GREY = (np.arange(20 * 16).reshape(20, 16) % 251).astype(np.uint8)


def plant_bad_and_odd_files(folder):
    """Writes the issue's eight awkward files; returns {file name: expected outcome}."""
    rng = np.random.RandomState(1)
    rgb = rng.randint(0, 256, (20, 16, 3)).astype(np.uint8)
    good_jpeg = io.BytesIO()
    Image.fromarray(rgb).save(good_jpeg, format="JPEG")
    with open(os.path.join(folder, "corrupt.jpg"), "wb") as f:
        f.write(good_jpeg.getvalue()[: len(good_jpeg.getvalue()) // 2])
    open(os.path.join(folder, "empty.jpg"), "wb").close()
    with open(os.path.join(folder, "notes.jpg"), "w") as f:
        f.write("this is text, not a JPEG\n")
    save(Image.new("CMYK", (16, 20), (0, 255, 255, 0)), os.path.join(folder, "cmyk.jpg"),
         "JPEG", quality=100)
    save(Image.fromarray(np.dstack([rgb, np.full((20, 16), 9, np.uint8)]), "RGBA"),
         os.path.join(folder, "rgba.png"), "PNG")
    save(Image.fromarray(GREY.astype(np.uint16) * 257), os.path.join(folder, "deep.png"), "PNG")
    save(Image.fromarray(rgb).quantize(colors=8), os.path.join(folder, "palette.gif"), "GIF")
    save(Image.fromarray(GREY, "L"), os.path.join(folder, "grey.pgm"), "PPM")
    return {"corrupt.jpg": "skip", "empty.jpg": "skip", "notes.jpg": "skip",
            "cmyk.jpg": "convert", "rgba.png": "convert", "deep.png": "convert",
            "palette.gif": "convert", "grey.pgm": "convert"}


def test_planted_files_are_converted_or_listed_and_nothing_else_lost(tmp_path):
    src = make_image_folder(tmp_path / "faces", num_identities=3, images_per_identity=4)
    good_ids = sorted(f"{d}/{f}" for d in os.listdir(src) for f in os.listdir(os.path.join(src, d)))
    planted = plant_bad_and_odd_files(os.path.join(src, "person_01"))
    with open(os.path.join(src, "README.txt"), "w") as f:
        f.write("top-level file, not in an identity folder\n")

    manifest = job.build_dataset(src, str(tmp_path / "out"), num_shards=3)

    skipped = {os.path.basename(s["path"]): s["reason"] for s in manifest["skipped"]}
    assert skipped.keys() == {n for n, o in planted.items() if o == "skip"} | {"README.txt"}
    assert "empty file" in skipped["empty.jpg"]
    assert "not an image" in skipped["notes.jpg"]
    assert "truncated" in skipped["corrupt.jpg"]
    assert "identity folder" in skipped["README.txt"]
    assert manifest["num_skipped"] == 4

    recs = read_records(str(tmp_path / "out"), manifest)
    converted = sorted(f"person_01/{n}" for n, o in planted.items() if o == "convert")
    assert sorted(r.image_id for r in recs) == sorted(good_ids + converted)
    assert manifest["num_images"] == len(recs) == 12 + 5
    assert manifest["num_converted"] == 5
    assert manifest["beam_counters"] == {"images_converted": 5, "images_ok": 17,
                                         "images_skipped": 4}
    assert manifest["images_per_identity"] == {"person_00": 4, "person_01": 9, "person_02": 4}
    by_id = {r.image_id: r for r in recs}
    for rec in recs:
        pixels = tf.io.decode_image(rec.encoded, expand_animations=False).numpy()
        assert pixels.shape == (rec.height, rec.width, 3), rec.image_id
    np.testing.assert_array_equal(
        tf.io.decode_png(by_id["person_01/grey.pgm"].encoded).numpy(),
        np.repeat(GREY[..., None], 3, axis=-1))
    np.testing.assert_array_equal(
        tf.io.decode_png(by_id["person_01/deep.png"].encoded).numpy()[..., 1], GREY)


def test_labels_are_sorted_identities_and_shards_group_identities(tmp_path):
    src = make_image_folder(tmp_path / "faces", num_identities=5, images_per_identity=2)
    os.makedirs(os.path.join(src, "all_bad"))
    open(os.path.join(src, "all_bad", "x.jpg"), "wb").close()
    out = str(tmp_path / "out")
    manifest = job.build_dataset(src, out, num_shards=2)
    identities = sorted(d for d in os.listdir(src) if d != "all_bad")
    assert manifest["label_map"] == {name: i for i, name in enumerate(identities)}
    assert manifest["num_identities"] == 5 and manifest["format"] == "facenet_tf.images"
    assert manifest["shards"] == [records.shard_name("images", i, 2) for i in range(2)]
    assert manifest["source"] == src and "git_revision" in manifest["run_info"]
    shard_of_identity = {}
    for name in manifest["shards"]:
        ids = [records.image_record_from_bytes(raw) for raw in
               tf.data.TFRecordDataset(os.path.join(out, name)).as_numpy_iterator()]
        assert [r.image_id for r in ids] == sorted(r.image_id for r in ids)
        for r in ids:
            assert r.label == manifest["label_map"][r.identity]
            assert r.image_id == f"{r.identity}/{r.image_id.split('/')[1]}"
            assert shard_of_identity.setdefault(r.identity, name) == name


def test_two_runs_are_byte_identical_and_rerun_replaces_output(tmp_path):
    src = make_image_folder(tmp_path / "faces", num_identities=6, images_per_identity=3)
    plant_bad_and_odd_files(os.path.join(src, "person_02"))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ma = job.build_dataset(src, a, num_shards=4)
    mb = job.build_dataset(src, b, num_shards=4)
    assert ma["shards"] == mb["shards"]
    for name in ma["shards"]:
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            assert fa.read() == fb.read(), name
    # Re-run into `a` with fewer shards: the old shards are gone, no staging folder is left.
    mc = job.build_dataset(src, a, num_shards=2)
    assert sorted(os.listdir(a)) == sorted(mc["shards"] + ["manifest.json"])
    assert io_utils.read_manifest(a)["num_shards"] == 2


def test_failed_run_keeps_previous_output(tmp_path):
    src = make_image_folder(tmp_path / "faces", num_identities=2, images_per_identity=2)
    out = str(tmp_path / "out")
    before = job.build_dataset(src, out, num_shards=1)
    empty = tmp_path / "nothing_usable" / "someone"
    os.makedirs(empty)
    (empty / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="no usable image"):
        job.build_dataset(str(tmp_path / "nothing_usable"), out, num_shards=1)
    assert io_utils.read_manifest(out)["num_images"] == before["num_images"] == 4
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        job.build_dataset(str(tmp_path / "no_such_dir"), str(tmp_path / "o2"))


@pytest.mark.integration
def test_cli_passes_beam_options_through(tmp_path):
    src = make_image_folder(tmp_path / "faces", num_identities=2, images_per_identity=2)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    help_text = subprocess.run(
        [sys.executable, "-m", "beam_jobs.build_dataset", "--help"], cwd=REPO_ROOT,
        env=env, capture_output=True, text=True, timeout=120).stdout
    assert "--input_dir" in help_text and "--num_shards" in help_text
    run = subprocess.run(
        [sys.executable, "-m", "beam_jobs.build_dataset", f"--input_dir={src}",
         f"--output_dir={out}", "--num_shards=2", "--runner=DirectRunner",
         "--direct_num_workers=1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "images: 4" in run.stdout
    manifest = io_utils.read_manifest(str(out))
    assert manifest["num_images"] == 4
    assert "--direct_num_workers=1" in manifest["run_info"]["argv"]


@pytest.mark.integration
def test_orl_counts_match_files(orl_dir, tmp_path):
    manifest = job.build_dataset(orl_dir, str(tmp_path / "orl"), num_shards=4)
    assert manifest["num_images"] == count_files(orl_dir) == 400
    assert manifest["num_identities"] == len(os.listdir(orl_dir)) == 40
    assert manifest["num_skipped"] == 0
    assert sum(1 for _ in read_records(str(tmp_path / "orl"), manifest)) == 400


@pytest.mark.integration
@pytest.mark.slow
def test_lfw_counts_match_files(lfw_dir, tmp_path):
    images_dir = os.path.join(lfw_dir, "images")
    manifest = job.build_dataset(images_dir, str(tmp_path / "lfw"), num_shards=8)
    per_identity = {d: len(os.listdir(os.path.join(images_dir, d)))
                    for d in os.listdir(images_dir)}
    assert manifest["num_images"] == sum(per_identity.values()) == 10492
    assert manifest["images_per_identity"] == per_identity
    assert manifest["num_skipped"] == 0
    total = sum(sum(1 for _ in tf.data.TFRecordDataset(os.path.join(tmp_path / "lfw", n)))
                for n in manifest["shards"])
    assert total == 10492
