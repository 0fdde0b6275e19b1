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
from facenet_tf.common import runinfo
from facenet_tf.pipelines.mine_triplets import STRATEGIES, MiningConfig, mine_triplets


def _define_flags():
    flags.DEFINE_string("dataset", None, "Dataset directory written by beam_jobs.build_dataset "
                        "(manifest.json + images-*.tfrecord shards); local or gs://.")
    flags.DEFINE_string("model", None, "Embedding model: a SavedModel written by "
                        "facenet_tf.export (including the converted pretrained model), a "
                        ".keras checkpoint or a .tflite file.")
    flags.DEFINE_string("output_dir", None, "Generation directory to write (triplets-*.tfrecord, "
                        "images-*.tfrecord + manifest.json, written last); must not hold a "
                        "complete generation.")
    flags.DEFINE_enum("strategy", "semi_hard", list(STRATEGIES), "Triplet selection rule "
                      "(facenet_tf.triplets.mining.select_triplets, the same code as online mining).")
    flags.DEFINE_float("alpha", 0.2, "Triplet margin on squared L2 distances.")
    flags.DEFINE_integer("identities_per_subset", 45, "Identities per mined subset.")
    flags.DEFINE_integer("images_per_identity", 40, "At most this many images per identity "
                         "in a subset (a seeded sample).")
    flags.DEFINE_integer("num_subsets", None, "Number of subsets to mine (default: enough to "
                         "cover --subset_fraction of the identities).")
    flags.DEFINE_float("subset_fraction", None, "Instead of --num_subsets: fraction of the "
                       "identities with >= 2 images to cover (1.0 if neither is given).")
    flags.DEFINE_integer("negatives_per_subset", 0, "Extra random images of other identities "
                         "per subset, used only as negatives.")
    flags.DEFINE_integer("seed", 0, "Seed of subset sampling and of random selection.")
    flags.DEFINE_integer("generation", 0, "Generation number recorded in every triplet.")
    flags.DEFINE_integer("num_shards", 4, "Number of triplet TFRecord shards.")
    flags.DEFINE_integer("batch_size", 64, "Images per embedding batch.")
    flags.DEFINE_string("strategy_options", "{}", "JSON object of extra select_triplets "
                        "options, e.g. '{\"choose\": \"hardest\"}'.")
    for name in ("dataset", "model", "output_dir"):
        flags.mark_flag_as_required(name)


def main(argv):
    FLAGS = flags.FLAGS
    logging.getLogger().setLevel(logging.INFO)
    try:
        options = json.loads(FLAGS.strategy_options)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--strategy_options: not JSON ({e})")
    config = MiningConfig(
        dataset=FLAGS.dataset, model=FLAGS.model, output_dir=FLAGS.output_dir,
        strategy=FLAGS.strategy, alpha=FLAGS.alpha,
        identities_per_subset=FLAGS.identities_per_subset,
        images_per_identity=FLAGS.images_per_identity, num_subsets=FLAGS.num_subsets,
        subset_fraction=FLAGS.subset_fraction, negatives_per_subset=FLAGS.negatives_per_subset,
        seed=FLAGS.seed, generation=FLAGS.generation, num_shards=FLAGS.num_shards,
        batch_size=FLAGS.batch_size, strategy_options=options)
    manifest = mine_triplets(config, pipeline_options=argv[1:],
                             run_info=runinfo.collect(runinfo.absl_flag_values()))
    print(json.dumps({k: manifest[k] for k in (
        "num_subsets_mined", "num_images", "num_anchor_positive_pairs", "num_triplets",
        "semi_hard_pair_fraction", "mean_d_ap", "mean_d_an", "num_bad_records")}, indent=2))


def run():
    """The `facenet-mine` command."""
    _define_flags()
    _cli.run(main, __name__, flags_parser=_cli.beam_flags_parser)


if __name__ == "__main__":
    run()
