"""Trains a FaceNet embedding: offline Beam-mined triplet generations (or online mining),
Keras model.fit under tf.distribute, checkpoints with resume, evaluation, SavedModel export.

    python -m facenet_tf.train --flagfile=configs/orl_demo.flags \
        --train_data=DATASET_DIR --model_dir=runs/orl [--eval_pairs=P --eval_images=ROOT]

`--steps 0` just exports the initial model (a baseline to evaluate against). Re-running the same
command after an interruption resumes from the last checkpoint in --model_dir.
"""

import json

from absl import app, flags, logging

from facenet_tf import _cli
from facenet_tf.common import config_flags
from facenet_tf.training import loop
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.state import TrainingDiverged


def config_from_flags() -> TrainConfig:
    """The TrainConfig the parsed flags describe."""
    return TrainConfig(**config_flags.values_from_flags(TrainConfig))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = config_from_flags()
    except ValueError as e:
        raise app.UsageError(str(e))
    try:
        result = loop.train(config)
    except TrainingDiverged as e:
        logging.error("%s", e)
        raise SystemExit(2)
    summary = {k: result[k] for k in ("step", "generation", "export_dir", "loss", "eval")}
    print(json.dumps(summary, indent=2, default=str))


def run():
    """The `facenet-train` command."""
    flags.mark_flags_as_required(config_flags.define_flags(TrainConfig))
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
