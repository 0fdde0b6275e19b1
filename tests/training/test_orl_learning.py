"""Done-when: on ORL, 2 offline semi-hard generations beat the untrained model on held-out ids.

Runs the recipe the demo uses (configs/orl_demo.flags) through the real command line, at the
trainer's default seed. The run is deterministic on a given machine, but the gain depends on the
seed: with 30 training and 10 held-out identities and this test's 150 steps, seeds 0, 1 and 2
gave +13.0, +15.0 and +2.1 points (measured 2026-12-01; at 300 steps +14.2, +8.7 and +1.6 on
2026-11-26), and changing any random stream (e.g. the semi-hard sampler's
draws) moves it by several points. So this pins one trajectory as a regression check; it is
not evidence that every ORL run gains 10 points.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.training import _helpers

FLAGFILE = os.path.join(_helpers.REPO_ROOT, "configs", "orl_demo.flags")


@pytest.mark.slow
@pytest.mark.integration
def test_two_generations_raise_heldout_accuracy_by_10_points(orl_dir, tmp_path):
    from facenet_tf.data.pairs import generate_pairs, write_pairs
    from facenet_tf.pipelines.build_dataset import build_dataset
    identities = sorted(os.listdir(orl_dir), key=lambda s: int(s.lstrip("s")))
    for sub, names in (("train", identities[:30]), ("heldout", identities[30:])):
        for name in names:
            shutil.copytree(os.path.join(orl_dir, name), tmp_path / sub / name)
    build_dataset(str(tmp_path / "train"), str(tmp_path / "dataset"), num_shards=2)
    # 10 held-out identities: 5 identity-disjoint folds of 2 identities each.
    write_pairs(str(tmp_path / "pairs.txt"), generate_pairs(str(tmp_path / "heldout"),
                                                            num_folds=5, seed=0), num_folds=5)
    cmd = [sys.executable, "-m", "facenet_tf.train", f"--flagfile={FLAGFILE}",
           f"--train_data={tmp_path / 'dataset'}", f"--model_dir={tmp_path / 'run'}",
           f"--eval_pairs={tmp_path / 'pairs.txt'}", f"--eval_images={tmp_path / 'heldout'}",
           "--steps=150", "--remine_every_steps=75", "--verbose=2"]
    proc = subprocess.run(cmd, cwd=_helpers.REPO_ROOT, capture_output=True, text=True,
                          timeout=400, env=dict(os.environ, PYTHONPATH=_helpers.REPO_ROOT))
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["generation"] == 1
    evals = {e["step"]: e["accuracy_mean"] for e in state["evals"]}
    untrained, trained = evals[0], evals[state["step"]]
    assert trained >= untrained + 0.10, evals
    losses = [h["loss"] for h in state["history"]]
    assert losses[-1] < losses[0], losses
