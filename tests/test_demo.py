"""The demo's identity split, and the whole demo on a few training steps."""

import json
import os
import subprocess
import sys

import pytest

from facenet_tf.data.splits import split_identities
from tests.conftest import REPO_ROOT, make_image_folder


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    src = make_image_folder(tmp_path / "src", num_identities=8, images_per_identity=2)
    train, heldout = split_identities(src, str(tmp_path / "a" / "train"),
                                           str(tmp_path / "a" / "heldout"), 3, seed=1)
    again = split_identities(src, str(tmp_path / "b" / "train"),
                                  str(tmp_path / "b" / "heldout"), 3, seed=1)
    assert (train, heldout) == again
    assert len(heldout) == 3 and not set(train) & set(heldout)
    assert sorted(train + heldout) == sorted(os.listdir(src))
    for name in heldout:
        assert sorted(os.listdir(tmp_path / "a" / "heldout" / name)) == \
            sorted(os.listdir(os.path.join(src, name)))


def test_split_refuses_a_heldout_count_that_leaves_too_few(tmp_path):
    src = make_image_folder(tmp_path / "src", num_identities=4, images_per_identity=2)
    with pytest.raises(ValueError, match="heldout_identities=3"):
        split_identities(src, str(tmp_path / "t"), str(tmp_path / "h"), 3, seed=0)


@pytest.mark.slow
@pytest.mark.integration
def test_demo_runs_end_to_end_on_bundled_orl(tmp_path):
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "facenet_tf.demo", f"--work_dir={work}",
           "--train_flag=--steps=20", "--train_flag=--remine_every_steps=10",
           "--train_flag=--checkpoint_every_steps=10", "--train_flag=--num_subsets=1"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "facenet_tf demo report" in proc.stdout
    with open(work / "report.json") as f:
        report = json.load(f)
    for side in ("before", "after"):
        assert 0.0 <= report[side]["accuracy_mean"] <= 1.0
    assert os.path.isfile(os.path.join(report["saved_model"], "saved_model.pb"))
    assert os.path.isfile(os.path.join(report["plots"], "roc.png"))
