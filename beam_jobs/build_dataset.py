"""Ingests an identity-per-folder image dataset into sharded TFRecords (a Beam job).

    python -m beam_jobs.build_dataset --input_dir DIR --output_dir OUT [--num_shards N] \
        [Beam pipeline options, e.g. --direct_num_workers=2 or --runner=DataflowRunner ...]

Bad files are skipped, counted and listed with their reason in the manifest; manifest.json is
written last (the pipeline: facenet_tf.pipelines.build_dataset).
"""

import logging
import os

from absl import flags
from apache_beam.options.pipeline_options import PipelineOptions

from facenet_tf import _cli
from facenet_tf.common import io_utils, runinfo
from facenet_tf.pipelines.build_dataset import (
    DEFAULT_NUM_SHARDS,
    build_dataset,
    format_summary,
)


def main(argv):
    FLAGS = flags.FLAGS
    logging.getLogger().setLevel(logging.INFO)
    options = PipelineOptions(argv[1:])
    manifest = build_dataset(FLAGS.input_dir, FLAGS.output_dir, FLAGS.num_shards, options,
                             flags=runinfo.absl_flag_values())
    print(format_summary(manifest))
    print(f"wrote {os.path.join(FLAGS.output_dir, io_utils.MANIFEST_NAME)}")


def _define_flags():
    flags.DEFINE_string("input_dir", None, "Dataset root: one sub-folder of images per identity.")
    flags.DEFINE_string("output_dir", None, "Where the shards and manifest.json are published.")
    flags.DEFINE_integer("num_shards", DEFAULT_NUM_SHARDS, "Number of TFRecord shards.",
                         lower_bound=1)
    flags.mark_flags_as_required(["input_dir", "output_dir"])


def run():
    """The `facenet-build-dataset` command."""
    _define_flags()
    _cli.run(main, __name__, flags_parser=_cli.beam_flags_parser)


if __name__ == "__main__":
    run()
