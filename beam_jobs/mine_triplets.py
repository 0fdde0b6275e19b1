"""Offline triplet mining (FaceNet section 3.2), one generation, as an Apache Beam job.

  python -m beam_jobs.mine_triplets --dataset DATA --model MODEL --output_dir OUT \
      [--strategy semi_hard] [--num_subsets 10] [--runner DataflowRunner ...]

Samples subsets of identities of a beam_jobs.build_dataset output, embeds every chosen image
once with the model and writes the subsets' triplets as TFRecords, manifest.json last (the
pipeline: facenet_tf.pipelines.mine_triplets). Runs in-process by default; any standard Beam
pipeline option (--runner, --direct_num_workers, --direct_running_mode, --project, --region,
--temp_location, ...) may follow the job's own flags. See docs/scaling.md.
"""

import json
import logging

from absl import flags

from facenet_tf import _cli
from facenet_tf.common import config_flags, runinfo
from facenet_tf.pipelines.mine_triplets import MiningConfig, mine_triplets


def main(argv):
    logging.getLogger().setLevel(logging.INFO)
    config = MiningConfig(**config_flags.values_from_flags(MiningConfig))
    manifest = mine_triplets(config, pipeline_options=argv[1:],
                             run_info=runinfo.collect(runinfo.absl_flag_values()))
    print(json.dumps({k: manifest[k] for k in (
        "num_subsets_mined", "num_images", "num_anchor_positive_pairs", "num_triplets",
        "semi_hard_pair_fraction", "mean_d_ap", "mean_d_an", "num_bad_records")}, indent=2))


def run():
    """The `facenet-mine` command."""
    flags.mark_flags_as_required(config_flags.define_flags(MiningConfig))
    _cli.run(main, __name__, flags_parser=_cli.beam_flags_parser)


if __name__ == "__main__":
    run()
