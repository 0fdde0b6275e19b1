"""Beam pipeline options shared by the project's jobs."""

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

# Beam's DirectRunner first tries to download and start the Prism runner (a Go binary) and
# only then falls back to the in-process FnApiRunner. With no --runner the jobs use the
# FnApiRunner directly: the runner the tests cover, no download, on any machine.
DEFAULT_RUNNER = "FnApiRunner"


def pipeline_options(options=None) -> PipelineOptions:
    """PipelineOptions from None, a list of Beam command-line arguments or PipelineOptions
    (returned, with the runner set on it if it had none); the runner defaults to
    DEFAULT_RUNNER, with which --direct_num_workers and --direct_running_mode still apply."""
    if options is None:
        options = PipelineOptions([])
    elif not isinstance(options, PipelineOptions):
        options = PipelineOptions(list(options))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    return options
