"""The trainer mines its generations on Dask: with --beam_pipeline_args naming the DaskRunner
and a 2-process dask.distributed cluster, each generation's mining runs on the cluster and
writes the same generations, byte for byte, as an in-process run of the same training."""

import json
import os
import time

import pytest

from facenet_tf.common import io_utils
from facenet_tf.training.run_dir import RunDir
from tests.conftest import dask_address
from tests.training import _helpers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GENERATIONS = (0, 1)  # 4 steps, re-mined after 2
# Manifest fields that differ between the two runs: the command line, wall time, the runner
# and its counters (the DaskRunner reports none), and the model's path (in each run's own
# directory; its fingerprint must be equal).
RUN_SPECIFIC_FIELDS = {"run_info", "elapsed_seconds", "counters", "beam_runner", "model"}


def train(dataset, model_dir, beam_pipeline_args) -> None:
    config = dict(train_data=dataset, model_dir=model_dir, steps=4, remine_every_steps=2,
                  checkpoint_every_steps=2, batch_size=4, identities_per_subset=4,
                  images_per_identity=4, verbose=0, beam_pipeline_args=beam_pipeline_args)
    proc = _helpers.run_script(["train", json.dumps(config)], timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert '"generation": 1' in proc.stdout


def test_generations_mined_on_dask_equal_in_process_ones(dask_cluster, tmp_path):
    dataset = _helpers.tiny_dataset(str(tmp_path / "data"))
    tasks = {}
    for name, beam_args in (("in_process", []),
                            ("dask", ["--runner=DaskRunner",
                                      f"--dask_client_address={dask_address(dask_cluster)}",
                                      "--dask_npartitions=2"])):
        started = time.time()
        train(dataset, str(tmp_path / name), beam_args)
        tasks[name] = dask_cluster.get_task_stream(start=started)
    assert not tasks["in_process"]
    assert tasks["dask"] and {task["worker"] for task in tasks["dask"]} <= set(
        dask_cluster.scheduler_info()["workers"])

    for generation in GENERATIONS:
        expected_dir = RunDir(str(tmp_path / "in_process")).generation(generation)
        actual_dir = RunDir(str(tmp_path / "dask")).generation(generation)
        expected, actual = io_utils.read_manifest(expected_dir), io_utils.read_manifest(actual_dir)
        assert actual["generation"] == generation and actual["num_triplets"] > 0
        assert actual["model_step"] == 2 * generation
        assert actual["beam_runner"] == "apache_beam.runners.dask.dask_runner.DaskRunner"
        assert expected["beam_runner"] == "FnApiRunner"
        for field in RUN_SPECIFIC_FIELDS:
            expected.pop(field)
            actual.pop(field)
        assert actual == expected
        for name in expected["shards"] + expected["image_shards"]:
            with open(os.path.join(expected_dir, name), "rb") as f:
                want = f.read()
            with open(os.path.join(actual_dir, name), "rb") as f:
                assert f.read() == want, f"generation {generation}: {name} differs"
