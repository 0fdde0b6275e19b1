"""Trains a FaceNet embedding: offline Beam-mined triplet generations (or online mining),
Keras model.fit under tf.distribute, checkpoints with resume, evaluation, SavedModel export.

    python -m facenet_tf.train --flagfile=configs/orl_demo.flags \
        --train_data=DATASET_DIR --model_dir=runs/orl [--eval_pairs=P --eval_images=ROOT]

`--steps 0` just exports the initial model (a baseline to evaluate against). Re-running the same
command after an interruption resumes from the last checkpoint in --model_dir.
"""

import dataclasses
import json

from absl import app, flags, logging

from facenet_tf import _cli
from facenet_tf.training import config as cfg
from facenet_tf.training import distribution, loop
from facenet_tf.training.state import TrainingDiverged

FLAGS = flags.FLAGS


def _define_flags():
    f = flags
    f.DEFINE_string("train_data", None, "Training dataset: a beam_jobs.build_dataset output dir "
                    "(images-*.tfrecord + manifest.json).")
    f.DEFINE_string("model", "nns2", "Architecture (nn1, nn2, nn3, nn4, nns1, nns2, "
                    "inception_resnet_v1) or 'pretrained' (fine-tune the converted FaceNet "
                    "weights, 512-D).")
    f.DEFINE_integer("embedding_dim", 128, "Embedding size d (the paper's default 128).")
    f.DEFINE_list("input_shape", None, "Model input HEIGHT,WIDTH (default: the architecture's).")
    f.DEFINE_float("crop_fraction", 1.0, "Center-crop fraction of the image before resizing.")
    f.DEFINE_boolean("augment", False, "Seeded random crop, flip, brightness and contrast.")
    f.DEFINE_float("decoded_cache_mb", cfg.TrainConfig.decoded_cache_mb, "Offline mining: a "
                   "generation's images are decoded once and kept in memory when they fit in "
                   "this many MB (each is used by many triplets); else decoded on every use.")
    f.DEFINE_float("alpha", 0.2, "Triplet margin alpha on squared L2 distances.")
    f.DEFINE_enum("mining", "offline", list(cfg.MINING_MODES),
                  "offline: Beam-mined triplet generations (the paper's); online: in-batch "
                  "mining over P x K batches gathered across replicas.")
    f.DEFINE_enum("strategy", "semi_hard", list(cfg.MINING_STRATEGIES),
                  "Triplet selection rule (facenet_tf.triplets.mining.select_triplets).")
    f.DEFINE_integer("remine_every_steps", 1000, "Offline: steps per triplet generation; then "
                     "checkpoint, export and mine the next generation with the current model.")
    f.DEFINE_boolean("async_mining", False, "Offline: mine generation k+1 in the background "
                     "while training on k (double buffering; triplets one generation older).")
    f.DEFINE_integer("identities_per_subset", 45, "Offline: identities per mining subset; "
                     "online: unused (P = batch_size / images_per_identity).")
    f.DEFINE_integer("images_per_identity", 40, "Images per identity in a mining subset "
                     "(offline) or K of the P x K batches (online).")
    f.DEFINE_integer("num_subsets", None, "Offline: subsets mined per generation (default: "
                     "cover the data once, see --subset_fraction).")
    f.DEFINE_float("subset_fraction", None, "Offline: fraction of identities covered by the "
                   "subsets of one generation (when --num_subsets is not given).")
    f.DEFINE_integer("batch_size", 30, "Global batch: triplets per step (offline) or images "
                     "per step (online, P x K).")
    f.DEFINE_enum("optimizer", "adagrad", list(cfg.OPTIMIZERS),
                  "adagrad (the paper's, lr 0.05), adam, or sgd with --momentum.")
    f.DEFINE_float("learning_rate", 0.05, "Initial learning rate.")
    f.DEFINE_float("momentum", 0.9, "Momentum for --optimizer=sgd.")
    f.DEFINE_enum("lr_schedule", "constant", list(cfg.SCHEDULES),
                  "constant; exponential (x lr_decay_rate every lr_decay_steps, staircase); "
                  "piecewise (the same as explicit boundaries); cosine (to 0 at --steps).")
    f.DEFINE_integer("lr_decay_steps", 1000, "Steps between learning-rate decays.")
    f.DEFINE_float("lr_decay_rate", 0.5, "Learning-rate factor per decay.")
    f.DEFINE_integer("steps", 1000, "Total training steps; 0 exports the initial model only.")
    f.DEFINE_integer("keep_generations", cfg.TrainConfig.keep_generations, "Offline: keep the "
                     "newest this many mined generations (and the step exports from their "
                     "mining on); older ones are deleted as training moves on. 0 keeps all.")
    f.DEFINE_integer("checkpoint_every_steps", 100, "Steps between checkpoints (one Keras "
                     "epoch each); a kill loses at most this many.")
    f.DEFINE_string("model_dir", None, "Run directory: checkpoints, train_state.json, mined "
                    "generations, exports, TensorBoard logs, run_info.json.")
    f.DEFINE_string("export_dir", None, "Final SavedModel (default: MODEL_DIR/export).")
    f.DEFINE_string("eval_pairs", None, "LFW-format pairs file evaluated after each generation "
                    "and at the end; the best checkpoint is kept in MODEL_DIR/best.")
    f.DEFINE_string("eval_images", None, "Image root the --eval_pairs names refer to.")
    f.DEFINE_enum("distribution", "mirrored", list(cfg.DISTRIBUTIONS),
                  "mirrored: MirroredStrategy over all local GPUs (or CPU replicas); "
                  "multi_worker: MultiWorkerMirroredStrategy configured by TF_CONFIG.")
    f.DEFINE_integer("num_cpu_replicas", 0, "Split the CPU into this many logical devices and "
                     "mirror over them (multi-replica runs without GPUs).")
    f.DEFINE_integer("seed", 0, "Seed of initialisation, mining subsets, shuffling, "
                     "augmentation.")
    f.DEFINE_list("beam_pipeline_args", [], "Beam pipeline options for the miner, comma-"
                  "separated, e.g. --runner=DataflowRunner,--project=P,--region=R,"
                  "--temp_location=gs://B/tmp (default: in-process FnApiRunner).")
    f.DEFINE_integer("verbose", None, "Keras progress: 1 bar, 2 one line per epoch (default: 1 "
                     "on a terminal, 2 in logs).")


def config_from_flags() -> cfg.TrainConfig:
    names = [f.name for f in dataclasses.fields(cfg.TrainConfig)]
    values = {name: getattr(FLAGS, name) for name in names if name in FLAGS}
    if values.get("input_shape"):
        h, w = (int(v) for v in values["input_shape"])
        values["input_shape"] = (h, w, 3)
    return cfg.TrainConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = config_from_flags()
    except ValueError as e:
        raise app.UsageError(str(e))
    # Logical CPU devices must exist before the first TF op runs.
    distribution.configure_cpu_replicas(config.num_cpu_replicas)
    try:
        result = loop.train(config)
    except TrainingDiverged as e:
        logging.error("%s", e)
        raise SystemExit(2)
    summary = {k: result[k] for k in ("step", "generation", "export_dir", "loss", "eval")}
    print(json.dumps(summary, indent=2, default=str))


def run():
    """The `facenet-train` command."""
    _define_flags()
    flags.mark_flags_as_required(["train_data", "model_dir"])
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
