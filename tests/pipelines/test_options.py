"""facenet_tf.pipelines.options: the jobs' runner default and the runners they name."""

import importlib
import logging

import pytest
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
)

from facenet_tf.pipelines import options
from facenet_tf.pipelines.mine_triplets import MiningConfig, mine_triplets


def test_runner_defaults_to_the_in_process_fn_api_runner():
    for given in (None, [], PipelineOptions([]), ["--direct_num_workers=2"]):
        assert options.pipeline_options(given).view_as(StandardOptions).runner == "FnApiRunner"
    got = options.pipeline_options(["--direct_num_workers=2",
                                    "--direct_running_mode=multi_processing"])
    assert got.view_as(DirectOptions).direct_num_workers == 2
    assert got.view_as(DirectOptions).direct_running_mode == "multi_processing"


def test_an_explicit_runner_is_kept():
    for runner in ("DirectRunner", "DataflowRunner", "PortableRunner"):
        got = options.pipeline_options([f"--runner={runner}"])
        assert got.view_as(StandardOptions).runner == runner
    given = PipelineOptions(["--runner=FlinkRunner"])
    assert options.pipeline_options(given) is given


def test_a_default_run_never_tries_prism(tiny_dataset, tiny_model_path, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        manifest = mine_triplets(MiningConfig(
            dataset=tiny_dataset, model=tiny_model_path, output_dir=str(tmp_path / "gen"),
            strategy="hard", num_subsets=1, batch_size=8))
    assert manifest["num_triplets"] > 0
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()]


def test_dask_runner_by_its_short_name():
    for given in (["--runner=DaskRunner"], PipelineOptions(["--runner=DaskRunner"])):
        got = options.pipeline_options(given).view_as(StandardOptions).runner
        assert got == "apache_beam.runners.dask.dask_runner.DaskRunner"
    # The path names Beam's class (its module imports only with dask installed).
    pytest.importorskip("dask.distributed")
    module, _, name = options.RUNNER_PATHS["DaskRunner"].rpartition(".")
    assert getattr(importlib.import_module(module), name).__name__ == "DaskRunner"
