"""kill -9 a training run mid-way, run the same command again: it resumes, it does not restart."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.training import _helpers


@pytest.mark.integration
def test_sigkill_then_rerun_resumes(tmp_path):
    dataset = _helpers.tiny_dataset(str(tmp_path))
    model_dir = tmp_path / "run"
    config = json.dumps(dict(train_data=dataset, model_dir=str(model_dir), steps=24,
                             remine_every_steps=6, checkpoint_every_steps=2, batch_size=4,
                             identities_per_subset=4, images_per_identity=4, verbose=0))
    state_path = model_dir / "train_state.json"
    proc = _helpers.run_script(["train", config], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            if state_path.exists() and json.loads(state_path.read_text())["step"] >= 8:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = json.loads(state_path.read_text())
    assert 8 <= killed["step"] < 24 and killed["generation"] >= 1

    done = _helpers.run_script(["train", config], timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads(state_path.read_text())
    steps = [h["step"] for h in final["history"]]
    # Continued from the checkpoint: history kept verbatim up to the kill, then strictly onward.
    assert final["history"][:len(killed["history"])] == killed["history"]
    assert steps == list(range(2, 25, 2))
    assert final["step"] == 24 and final["generation"] == 3
    gens = [h["generation"] for h in final["history"]]
    assert gens == sorted(gens) and gens[-1] == 3
