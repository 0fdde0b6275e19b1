"""Beam pipeline options shared by the project's jobs."""

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

# Beam's DirectRunner first tries to download and start the Prism runner (a Go binary) and
# only then falls back to the in-process FnApiRunner. With no --runner the jobs use the
# FnApiRunner directly: the runner the tests cover, no download, on any machine.
DEFAULT_RUNNER = "FnApiRunner"
# Runners Beam knows only by their class path; the jobs also accept the short name.
RUNNER_PATHS = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


def pipeline_options(options=None) -> PipelineOptions:
    """PipelineOptions from None, a list of Beam command-line arguments or PipelineOptions
    (returned, with the runner set on it if it had none); the runner defaults to
    DEFAULT_RUNNER, with which --direct_num_workers and --direct_running_mode still apply.
    --runner=DaskRunner names Beam's DaskRunner (RUNNER_PATHS)."""
    if options is None:
        options = PipelineOptions([])
    elif not isinstance(options, PipelineOptions):
        options = PipelineOptions(list(options))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    standard.runner = RUNNER_PATHS.get(standard.runner, standard.runner)
    return options


def runner_of(options: PipelineOptions) -> str:
    """The runner a job ran on, for its manifest (Beam's name or class path)."""
    return options.view_as(StandardOptions).runner
