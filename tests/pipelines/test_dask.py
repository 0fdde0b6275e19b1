"""The Beam jobs on Beam's DaskRunner (a 2-process dask.distributed cluster on this machine)
give the same shards, byte for byte, and the same manifest as in-process (FnApiRunner).

Each job runs through its command line, as a user would, once in-process and once on Dask.
Today neither job completes on the DaskRunner of apache-beam 2.77; where a job dies with the
known DaskRunner limitation the test xfails with the reason (see KNOWN_DASK_FAILURES), any
other failure fails it, and once the job completes the outputs must match.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, make_image_folder, make_tiny_embedding_model

distributed = pytest.importorskip("dask.distributed")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # no short name in Beam 2.77
IMAGE_SIZE = 32  # the tiny model's input, so mining neither crops nor resizes
JOB_TIMEOUT_S = 900
# Manifest fields that legitimately differ between two runs or runners: the command line,
# wall time, and Beam's counters (DaskRunnerResult.metrics() raises NotImplementedError).
RUN_SPECIFIC_FIELDS = {"run_info", "elapsed_seconds", "counters", "beam_counters"}

# What kills each job on the DaskRunner today (the last line of its traceback, any of them),
# and why. DaskRunner translates the pipeline into dask bags keyed by the PRODUCING transform,
# so every output of a multi-output ParDo (.with_outputs) reaches every consumer, main and
# tagged outputs mixed; it computes only the bag of the LAST transform applied (other leaf
# branches never run), drops what a DoFn emits in finish_bundle (BatchElements' last partial
# batch), and recomputes a side input's whole upstream inside every task that reads it.
KNOWN_DASK_FAILURES = {
    "build_dataset": (
        # a skipped-file dict reaching r[0] / r[2] of the image tuples' consumers; the image
        # tuples reaching the summary's sort of the skipped list by s["path"]
        ("KeyError: 0", "KeyError: 2",
         "TypeError: tuple indices must be integers or slices, not str"),
        "DaskRunner mixes Normalize's main output (image tuples) and its 'skipped' tagged "
        "output (dicts) into both consumers"),
    "mine_triplets": (
        # write_json sorting the 'bad' list by d.items(): an ImageRecord (Parse's main
        # output) or a tuple (Selected's or Embed's) sorts first, by chance
        ("AttributeError: 'tuple' object has no attribute 'items'",
         "AttributeError: 'ImageRecord' object has no attribute 'items'"),
        "DaskRunner feeds the main outputs of Parse/Selected/Embed into the 'bad' tagged "
        "outputs too; once that is fixed, only Save_bad (the last transform applied) would "
        "run and BatchElements would lose each bundle's last partial batch"),
}
DASK_TRACEBACK_MARK = "apache_beam/runners/dask/"


def run_job(module: str, args: list, runner_args=()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-m", module, *args, *runner_args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)


def require_success(result: subprocess.CompletedProcess, job: str, on_dask: bool) -> None:
    """Fails on any job error, except that the known DaskRunner failure xfails."""
    if result.returncode == 0:
        return
    signatures, reason = KNOWN_DASK_FAILURES[job]
    lines = result.stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    if on_dask and DASK_TRACEBACK_MARK in result.stderr and last in signatures:
        pytest.xfail(f"{job} on DaskRunner: {last} ({reason})")
    pytest.fail(f"{job} ({'Dask' if on_dask else 'in-process'}) exited {result.returncode}:\n"
                f"{result.stderr[-4000:]}")


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


@pytest.fixture(scope="module")
def dask_runner_args():
    """Runner options for a LocalCluster of 2 worker processes (1 thread each) that import
    this checkout (workers unpickle the jobs' DoFns by module name)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", REPO_ROOT)
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=":0") as cluster:
            address = cluster.scheduler_address.removeprefix("tcp://")
            yield [f"--runner={DASK_RUNNER}", f"--dask_client_address={address}"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """5 identities x 6 images (32x32 PNG) plus one file that is not an image."""
    root = make_image_folder(tmp_path_factory.mktemp("faces") / "images", num_identities=5,
                             images_per_identity=6, size=(IMAGE_SIZE, IMAGE_SIZE))
    with open(os.path.join(root, "person_00", "notes.txt"), "w") as f:
        f.write("not an image\n")
    return root


@pytest.fixture(scope="module")
def in_process_dataset(image_folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ds") / "in_process")
    result = run_job("beam_jobs.build_dataset",
                     ["--input_dir", image_folder, "--output_dir", out, "--num_shards", "3"])
    require_success(result, "build_dataset", on_dask=False)
    return out


def test_build_dataset_on_dask_matches_in_process(image_folder, in_process_dataset,
                                                  dask_runner_args, tmp_path):
    out = str(tmp_path / "dask")
    result = run_job("beam_jobs.build_dataset",
                     ["--input_dir", image_folder, "--output_dir", out, "--num_shards", "3"],
                     dask_runner_args)
    require_success(result, "build_dataset", on_dask=True)
    manifest = read_manifest(in_process_dataset)
    assert manifest["num_images"] == 30 and manifest["num_skipped"] == 1
    assert_same_outputs(in_process_dataset, out, ["shards"])


def test_mine_triplets_on_dask_matches_in_process(in_process_dataset, dask_runner_args,
                                                  tmp_path):
    model = str(tmp_path / "tiny.keras")
    make_tiny_embedding_model(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)).save(model)
    # batch_size 4 does not divide a subset's 15 images: partial batches occur.
    args = ["--dataset", in_process_dataset, "--model", model, "--identities_per_subset", "3",
            "--images_per_identity", "5", "--num_subsets", "2", "--num_shards", "2",
            "--batch_size", "4", "--alpha", "0.5"]
    in_process, on_dask = str(tmp_path / "in_process"), str(tmp_path / "dask")
    require_success(run_job("beam_jobs.mine_triplets", args + ["--output_dir", in_process]),
                    "mine_triplets", on_dask=False)
    assert read_manifest(in_process)["num_triplets"] > 0
    require_success(run_job("beam_jobs.mine_triplets", args + ["--output_dir", on_dask],
                            dask_runner_args), "mine_triplets", on_dask=True)
    assert_same_outputs(in_process, on_dask, ["shards", "image_shards"])
