"""The main job, end to end on one machine: ingest, mine offline with Beam, train, export, evaluate.

    python -m facenet_tf.demo                      # bundled ORL faces, about 2 minutes on 2 cores
    python -m facenet_tf.demo --input_dir ../shared/data/lfw_dev/images --heldout_identities 100
    python -m facenet_tf.demo --architecture pretrained   # fine-tune the pretrained weights

Steps: for photos given with --input_dir, first detect and align each photo's face
(beam_jobs.align_faces; the bundled ORL faces are crops already); split the identities into
training and held-out sets (seeded); ingest the training identities with
beam_jobs.build_dataset; generate LFW-format verification pairs on the held-out
identities; export the untrained model (`--steps 0`) and evaluate it as the baseline; train with
offline Beam mining (semi-hard, re-mined every `--remine_every_steps`) under MirroredStrategy;
evaluate the exported SavedModel; print a report.
"""

import json
import logging as std_logging
import os
import shutil
import time

from absl import flags, logging

from facenet_tf import _cli, datasets
from facenet_tf.common import config_flags, io_utils, runinfo
from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data.splits import split_identities
from facenet_tf.evaluation.protocols import evaluate_pairs_file
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.pipelines.align_faces import AlignJobConfig, align_faces
from facenet_tf.pipelines.align_faces import format_summary as format_aligned
from facenet_tf.pipelines.build_dataset import build_dataset
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.loop import train

FLAGS = flags.FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


def stage(message: str) -> None:
    print(f"\n=== [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_trainer(config: TrainConfig, log_path: str) -> dict:
    """facenet_tf.train(config), in this process, with the trainer's log lines also in a file."""
    print(f"training {config.architecture} in {config.model_dir} ({config.steps} steps); "
          f"log: {log_path}", flush=True)
    handler = std_logging.FileHandler(log_path)
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = std_logging.getLogger()
    root.addHandler(handler)
    try:
        return train(config)
    finally:
        root.removeHandler(handler)
        handler.close()


def main(argv):
    del argv
    started = time.time()
    flagfile = io_utils.require_file(FLAGS.train_flagfile or os.path.join(
        CONFIG_DIR, "pretrained_finetune.flags" if FLAGS.architecture == "pretrained"
        else "orl_demo.flags"), "train_flagfile")
    input_dir = os.path.abspath(io_utils.require_dir(FLAGS.input_dir or datasets.ORL_FACES_DIR,
                                                     "input_dir"))
    work = os.path.abspath(FLAGS.work_dir)
    if FLAGS.fresh and os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work, exist_ok=True)
    runinfo.write(os.path.join(work, "demo_run_info.json"), runinfo.absl_flag_values())
    if FLAGS.input_dir is None:
        print(datasets.ORL_CREDIT)

    align = FLAGS.align if FLAGS.align is not None else FLAGS.input_dir is not None
    total = 7 if align else 6
    step = iter(range(1, total + 1))
    if align:
        stage(f"{next(step)}/{total} detect and align the faces of {input_dir} "
              "(beam_jobs.align_faces, in-process)")
        aligned = align_faces(AlignJobConfig(input_dir, os.path.join(work, "aligned")))
        print(format_aligned(aligned))
        input_dir = os.path.join(work, "aligned", aligned["images_dir"])

    stage(f"{next(step)}/{total} split identities of {input_dir}")
    split_dir = os.path.join(work, "split")
    train_ids, heldout_ids = split_identities(
        input_dir, os.path.join(split_dir, "train"), os.path.join(split_dir, "heldout"),
        FLAGS.heldout_identities, FLAGS.seed)
    print(f"{len(train_ids)} training identities, {len(heldout_ids)} held out: {heldout_ids}")

    stage(f"{next(step)}/{total} ingest the training identities (beam_jobs.build_dataset, "
          "in-process)")
    dataset_dir = os.path.join(work, "dataset")
    manifest = build_dataset(os.path.join(split_dir, "train"), dataset_dir, num_shards=4)
    print(f"{manifest['num_images']} images of {manifest['num_identities']} identities, "
          f"{manifest['num_skipped']} skipped -> {dataset_dir}")

    stage(f"{next(step)}/{total} verification pairs on the held-out identities")
    heldout_root = os.path.join(split_dir, "heldout")
    pairs_path = os.path.join(work, "heldout_pairs.txt")
    # Identity-disjoint folds need 2+ identities each: 10 folds when there are 20 or more.
    num_folds = min(10, len(heldout_ids) // 2)
    pairs = pairs_lib.generate_pairs(heldout_root, num_folds=num_folds, seed=FLAGS.seed)
    pairs_lib.write_pairs(pairs_path, pairs, num_folds=num_folds)
    print(f"{len(pairs)} pairs ({sum(p.issame for p in pairs)} matched) in {num_folds} "
          f"identity-disjoint folds -> {pairs_path}")

    model_dir = os.path.join(work, "model")
    recipe = config_flags.read_flags(TrainConfig, [f"--flagfile={flagfile}",
                                                   *FLAGS.train_flag], source=flagfile)
    recipe.update(train_data=dataset_dir, architecture=FLAGS.architecture, seed=FLAGS.seed)

    stage(f"{next(step)}/{total} baseline: the initial model (--steps 0), evaluated on the "
          "held-out pairs")
    baseline_export = os.path.join(work, "export_untrained")
    run_trainer(TrainConfig(**{**recipe, "model_dir": os.path.join(work, "model_untrained"),
                               "steps": 0, "export_dir": baseline_export}),
                os.path.join(work, "train_untrained.log"))
    before = evaluate_pairs_file(load_embedder(baseline_export), pairs_path, heldout_root,
                                 plots_dir=os.path.join(work, "plots_untrained"),
                                 output_json=os.path.join(work, "eval_untrained.json"))

    stage(f"{next(step)}/{total} train: offline semi-hard mining by Beam, MirroredStrategy, "
          "model.fit")
    export_dir = os.path.join(work, "export")
    run_trainer(TrainConfig(**{**recipe, "model_dir": model_dir, "export_dir": export_dir,
                               "eval_pairs": pairs_path, "eval_images": heldout_root}),
                os.path.join(work, "train.log"))

    stage(f"{next(step)}/{total} evaluate the exported SavedModel on the held-out pairs")
    plots_dir = os.path.join(work, "plots")
    after = evaluate_pairs_file(load_embedder(export_dir), pairs_path, heldout_root,
                                plots_dir=plots_dir, output_json=os.path.join(work, "eval.json"))

    report = {
        "held_out_identities": len(heldout_ids),
        "num_pairs": after.get("num_pairs"),
        "before": {k: before.get(k) for k in ("accuracy_mean", "val_at_far_1e-3",
                                              "val_at_far_1e-2", "roc_auc")},
        "after": {k: after.get(k) for k in ("accuracy_mean", "val_at_far_1e-3",
                                            "val_at_far_1e-2", "roc_auc")},
        "saved_model": export_dir,
        "tensorboard": os.path.join(model_dir, "tensorboard"),
        "plots": plots_dir,
        "minutes": round((time.time() - started) / 60, 1),
    }
    with open(os.path.join(work, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print_report(report)


def print_report(r: dict) -> None:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:5.1f}%"
    print("\n" + "=" * 72)
    print(f"facenet_tf demo report ({r['minutes']} min)")
    print(f"held-out verification: {r['num_pairs']} pairs among {r['held_out_identities']} "
          "identities never seen in training (LFW protocol, threshold chosen on the other folds)")
    print(f"{'':24s}{'before':>12s}{'after':>12s}   (training)")
    for key, label in (("accuracy_mean", "accuracy"), ("val_at_far_1e-3", "VAL @ FAR=1e-3"),
                       ("val_at_far_1e-2", "VAL @ FAR=1e-2"), ("roc_auc", "ROC AUC")):
        print(f"{label:24s}{pct(r['before'][key]):>12s}{pct(r['after'][key]):>12s}")
    print(f"SavedModel:  {r['saved_model']}")
    print(f"TensorBoard: tensorboard --logdir {r['tensorboard']}")
    print(f"ROC plot:    {os.path.join(r['plots'], 'roc.png')}")
    print("=" * 72)


def _define_flags():
    flags.DEFINE_string("input_dir", None,
                        "Identity-per-folder image dataset (default: the bundled ORL faces).")
    flags.DEFINE_string("work_dir", "runs/demo", "Where every output of the demo goes.")
    flags.DEFINE_integer("heldout_identities", 10,
                         "Identities kept out of training, used only for the verification pairs.")
    flags.DEFINE_string("architecture", TrainConfig.architecture,
                        "Network to train (facenet_tf.train's --architecture), or 'pretrained'.")
    flags.DEFINE_string("train_flagfile", None,
                        "Flag file of trainer settings (default: configs/orl_demo.flags, or "
                        "configs/pretrained_finetune.flags for --architecture pretrained).")
    flags.DEFINE_multi_string("train_flag", [],
                              "Extra trainer flag, repeatable, e.g. --train_flag=--steps=400.")
    flags.DEFINE_integer("seed", 0, "Seed of the identity split, the pairs and training.")
    flags.DEFINE_bool("align", None, "Detect and align the faces first (beam_jobs.align_faces): "
                      "default for --input_dir photos; the bundled ORL faces are crops already.")
    flags.DEFINE_boolean("fresh", False, "Delete work_dir first (otherwise training resumes).")


def run():
    """The `facenet-demo` command."""
    _define_flags()
    logging.set_verbosity(logging.WARNING)
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
