"""The Beam jobs on Beam's DaskRunner (a 2-process dask.distributed cluster on this machine)
write the same shards, byte for byte, and the same manifest as in-process (FnApiRunner).

The in-process run (a library call in this process) is the oracle; the Dask run goes through
the job's command line with --runner=DaskRunner, as a user would run it, and the cluster's
scheduler must have run the work.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from facenet_tf.pipelines.build_dataset import build_dataset
from facenet_tf.pipelines.index_faces import IndexJobConfig, index_faces
from facenet_tf.pipelines.mine_triplets import MiningConfig, mine_triplets
from tests.conftest import REPO_ROOT, dask_address, make_tiny_embedding_model
from tests.pipelines._collection import assert_same_shards, write_collection
from tests.pipelines.conftest import save_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORL = os.path.join(REPO_ROOT, "facenet_tf", "datasets", "orl_faces", "images")
IDENTITIES = [f"s{i}" for i in range(1, 13)]  # 12 of ORL's 40 identities, 10 faces each
IMAGE_SIZE = 32  # the tiny model's input (ORL's 92x112 faces are resized to it)
JOB_TIMEOUT_S = 900
# Manifest fields that legitimately differ between two runs or runners: the command line,
# wall time, the runner and its counters (DaskRunnerResult.metrics() raises
# NotImplementedError).
RUN_SPECIFIC_FIELDS = {"run_info", "elapsed_seconds", "beam_runner", "counters", "beam_counters"}


def run_job_on_dask(module: str, args: list, client) -> list:
    """Runs `python -m module args` on the cluster; returns the tasks its scheduler ran."""
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-m", module, *args, "--runner=DaskRunner",
         f"--dask_client_address={dask_address(client)}", "--dask_npartitions=2"],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True,
        text=True, timeout=JOB_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-4000:]
    return client.get_task_stream(start=started)


def read_manifest(directory) -> dict:
    with open(os.path.join(directory, "manifest.json")) as f:
        return json.load(f)


def assert_same_outputs(in_process_dir, dask_dir, shard_lists):
    """Every shard named in the manifests is byte-identical; the manifests agree."""
    expected, actual = read_manifest(in_process_dir), read_manifest(dask_dir)
    for field in RUN_SPECIFIC_FIELDS:
        expected.pop(field, None)
        actual.pop(field, None)
    assert actual == expected
    for shard_list in shard_lists:
        assert expected[shard_list], shard_list
        for name in expected[shard_list]:
            with open(os.path.join(in_process_dir, name), "rb") as f:
                want = f.read()
            with open(os.path.join(dask_dir, name), "rb") as f:
                assert f.read() == want, f"{name} differs between in-process and Dask"


def assert_ran_on(tasks, client):
    workers = set(client.scheduler_info()["workers"])
    assert tasks, "the Dask scheduler ran no task"
    assert {task["worker"] for task in tasks} <= workers


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """12 identities of the bundled ORL faces plus a file that is not an image and one outside
    any identity folder: both skipped."""
    root = str(tmp_path_factory.mktemp("faces") / "images")
    for name in IDENTITIES:
        shutil.copytree(os.path.join(ORL, name), os.path.join(root, name))
    with open(os.path.join(root, "s1", "notes.txt"), "w") as f:
        f.write("not an image\n")
    with open(os.path.join(root, "README"), "w") as f:
        f.write("not in an identity folder\n")
    return root


@pytest.fixture(scope="module")
def in_process_dataset(faces, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ds") / "in_process")
    build_dataset(faces, out, num_shards=3)
    return out


def test_build_dataset_on_dask_matches_in_process(faces, in_process_dataset, dask_cluster,
                                                  tmp_path):
    out = str(tmp_path / "dask")
    tasks = run_job_on_dask("beam_jobs.build_dataset",
                            ["--input_dir", faces, "--output_dir", out, "--num_shards", "3"],
                            dask_cluster)
    assert_ran_on(tasks, dask_cluster)
    manifest = read_manifest(in_process_dataset)
    assert (manifest["num_images"], manifest["num_identities"]) == (120, 12)
    assert sorted(os.path.basename(s["path"]) for s in manifest["skipped"]) == [
        "README", "notes.txt"]
    assert_same_outputs(in_process_dataset, out, ["shards"])


def test_mine_triplets_on_dask_matches_in_process(in_process_dataset, dask_cluster, tmp_path):
    model = str(tmp_path / "tiny.keras")
    make_tiny_embedding_model(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)).save(model)
    settings = dict(identities_per_subset=4, images_per_identity=5, num_subsets=4,
                    negatives_per_subset=3, num_shards=3, batch_size=12, alpha=0.5, seed=5)
    in_process = str(tmp_path / "in_process")
    manifest = mine_triplets(MiningConfig(dataset=in_process_dataset, model=model,
                                          output_dir=in_process, **settings))
    assert manifest["num_triplets"] > 0 and manifest["num_subsets_mined"] == 4
    on_dask = str(tmp_path / "dask")
    args = ["--dataset", in_process_dataset, "--model", model, "--output_dir", on_dask]
    for name, value in settings.items():
        args += [f"--{name}", str(value)]
    tasks = run_job_on_dask("beam_jobs.mine_triplets", args, dask_cluster)
    assert_ran_on(tasks, dask_cluster)
    assert_same_outputs(in_process, on_dask, ["shards", "image_shards"])


def test_align_faces_on_dask_matches_in_process(faces, dask_cluster, tmp_path):
    from facenet_tf.detection import AlignConfig
    from facenet_tf.pipelines.align_faces import AlignJobConfig, align_faces
    photos = str(tmp_path / "photos")
    for name in IDENTITIES[:3]:
        shutil.copytree(os.path.join(faces, name), os.path.join(photos, name))
    in_process = str(tmp_path / "in_process")
    manifest = align_faces(AlignJobConfig(photos, in_process, AlignConfig(image_size=64),
                                          batch_size=8))
    assert manifest["num_photos"] == 31 and manifest["unreadable"][0]["image"] == "s1/notes.txt"
    on_dask = str(tmp_path / "dask")
    tasks = run_job_on_dask("beam_jobs.align_faces",
                            ["--input_dir", photos, "--output_dir", on_dask, "--image_size",
                             "64", "--batch_size", "8"], dask_cluster)
    assert_ran_on(tasks, dask_cluster)
    expected, actual = read_manifest(in_process), read_manifest(on_dask)
    for field in RUN_SPECIFIC_FIELDS:
        expected.pop(field, None)
        actual.pop(field, None)
    assert actual == expected and expected["num_aligned"] > 0
    for entry in expected["aligned"].values():
        with open(os.path.join(in_process, "images", entry["output"]), "rb") as f:
            want = f.read()
        with open(os.path.join(on_dask, "images", entry["output"]), "rb") as f:
            assert f.read() == want, entry["output"]


def test_index_faces_on_dask_matches_in_process(dask_cluster, tmp_path):
    """The photo index: both tables' shards, the search index and the manifest (its run
    fields aside) are the same bytes on Dask as in-process."""
    photos = write_collection(tmp_path / "photos")
    model = save_tiny_model(tmp_path / "tiny.keras")
    in_process = str(tmp_path / "in_process")
    manifest = index_faces(IndexJobConfig(photos, model, in_process, batch_size=4,
                                          num_shards=3))
    assert manifest["num_faces"] > 0 and manifest["num_unreadable"] == 2
    on_dask = str(tmp_path / "dask")
    tasks = run_job_on_dask("beam_jobs.index_faces",
                            ["--input_dir", photos, "--model", model, "--output_dir", on_dask,
                             "--batch_size", "4", "--num_shards", "3"], dask_cluster)
    assert_ran_on(tasks, dask_cluster)
    assert_same_shards(in_process, on_dask)
