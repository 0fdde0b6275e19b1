"""Multi-replica and multi-worker training, each in fresh subprocesses (own TF runtimes)."""

import json
import os
import socket

import numpy as np
import pytest

from tests.training import _helpers


def _first_update(replicas, out):
    proc = _helpers.run_script(["first_update", str(replicas), str(out)], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


def test_two_cpu_replicas_make_the_same_first_update_as_one(tmp_path):
    one = _first_update(1, tmp_path / "one.npz")
    two = _first_update(2, tmp_path / "two.npz")
    weights = sorted(k for k in one if k.startswith("w"))
    # Both start from the same weights and actually move them...
    moved = max(np.abs(one[k] - one["init" + k[1:]]).max() for k in weights)
    assert moved > 1e-4
    # ...by the same step: the loss is a per-example mean over the GLOBAL batch, not
    # multiplied by the replica count (the Keras 3 scalar-loss trap).
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    for k in weights:
        np.testing.assert_allclose(two[k], one[k], atol=1e-6, err_msg=k)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.integration
def test_two_workers_on_loopback_train_in_lockstep(tmp_path):
    gen_dir = os.path.join(tmp_path, "run", "triplets", "gen-00000")
    _helpers.write_generation(gen_dir, _helpers.random_triplets(16))
    dataset = _helpers.tiny_dataset(str(tmp_path))
    config = dict(train_data=dataset, model_dir=str(tmp_path / "run"), steps=4,
                  remine_every_steps=100, checkpoint_every_steps=2, batch_size=4,
                  distribution="multi_worker", verbose=0, optimizer="sgd", momentum=0.0)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(_helpers.run_script(
            ["train", json.dumps(config)], env_extra={"TF_CONFIG": tf_config},
            stdout=open(tmp_path / f"w{i}.log", "w"), stderr=__import__("subprocess").STDOUT))
    try:
        for p in procs:
            p.wait(timeout=240)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    results = [json.loads(log.split("RESULT ")[-1].splitlines()[0]) for log in logs]
    # Both workers ran the same steps and saw the same (all-reduced) loss.
    assert results[0]["step"] == results[1]["step"] == 4
    np.testing.assert_allclose(results[0]["loss"], results[1]["loss"], rtol=1e-5)
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["step"] == 4 and os.path.exists(tmp_path / "run" / "export" / "saved_model.pb")
    assert not os.path.exists(tmp_path / "run" / "scratch" / "worker-worker-1")
