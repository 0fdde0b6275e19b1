"""The demo's identity split, and the whole demo, trained long enough to learn."""

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


# Gains of held-out accuracy (900 pairs among 10 held-out identities) from the demo's
# settings below at --seed 0, 1 and 2, on an AVX2 AMD EPYC with one thread per op (2026-12-08):
# +6.0, +11.0 and +8.1 points; seed 0 at 250 steps: +11.0. Each run pins one trajectory on
# one machine, so the test asserts half of seed 1's gain. At the recipe's full 140x116 input
# the same 150 steps took twice as long (seeds 0-2 on the first 30 identities: +13.0,
# +15.0, +2.1 points, 2026-12-01); 20 steps lost 4 to 8 points on all three seeds.
SEED = 1
MIN_GAIN = 0.05


@pytest.mark.slow
@pytest.mark.integration
def test_demo_trains_a_model_that_beats_the_untrained_one_on_heldout_orl(tmp_path):
    """The whole demo (split, ingest, pairs, baseline, offline Beam mining, training, export,
    evaluation) on the bundled ORL faces, with the recipe of configs/orl_demo.flags cut to
    150 steps re-mined at step 75 (2 generations) and run at half its input size (70x58, a
    quarter of the compute): training raises held-out accuracy."""
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "facenet_tf.demo", f"--work_dir={work}", f"--seed={SEED}",
           "--train_flag=--steps=150", "--train_flag=--remine_every_steps=75",
           "--train_flag=--checkpoint_every_steps=75", "--train_flag=--num_subsets=1",
           "--train_flag=--input_shape=70,58"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "facenet_tf demo report" in proc.stdout
    with open(work / "report.json") as f:
        report = json.load(f)
    before, after = report["before"], report["after"]
    assert report["held_out_identities"] == 10 and report["num_pairs"] > 0
    assert after["accuracy_mean"] >= before["accuracy_mean"] + MIN_GAIN, (before, after)
    assert after["roc_auc"] > before["roc_auc"], (before, after)
    with open(work / "model" / "train_state.json") as f:
        state = json.load(f)
    assert state["step"] == 150 and state["generation"] == 1
    losses = [h["loss"] for h in state["history"]]
    assert losses[-1] < losses[0], losses
    with open(work / "model" / "train_config.json") as f:
        assert json.load(f)["input_shape"] == [70, 58, 3]
    assert os.path.isfile(os.path.join(report["saved_model"], "saved_model.pb"))
    assert os.path.isfile(os.path.join(report["plots"], "roc.png"))
    assert os.listdir(report["tensorboard"])
