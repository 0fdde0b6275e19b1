"""Writes LFW-format verification pairs for any identity-per-folder image root, in seeded
identity-disjoint folds (facenet_tf.data.pairs.generate_pairs).

    python -m facenet_tf.make_pairs --images my_faces/ --output my_pairs.txt [--num_folds 10]
"""

from absl import flags, logging

from facenet_tf import _cli
from facenet_tf.data.pairs import generate_pairs, write_pairs


def main(argv):
    del argv
    f = flags.FLAGS
    pairs = generate_pairs(f.images, num_folds=f.num_folds, pairs_per_fold=f.pairs_per_fold,
                           seed=f.seed, identities=f.identities)
    write_pairs(f.output, pairs, num_folds=f.num_folds)
    logging.info("wrote %d pairs in %d folds to %s", len(pairs), f.num_folds, f.output)


def _define_flags():
    flags.DEFINE_string("images", None, "Identity-per-folder image root.", required=True)
    flags.DEFINE_string("output", None, "Pairs file to write.", required=True)
    flags.DEFINE_integer("num_folds", 10, "Identity-disjoint folds.")
    flags.DEFINE_integer("pairs_per_fold", None, "Pairs per fold (even); default: most allowed.")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_list("identities", None, "Only these identity folders (default: all).")


def run():
    """The `facenet-make-pairs` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
