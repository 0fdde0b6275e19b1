r"""LFW dev experiments on a seeded identity-disjoint split of the lfw_dev photos: fine-tuning
the pretrained FaceNet (issue 17), triplet selection from scratch (issue 17, and at the flag
file's full budget with a held-out curve), and the paper's studies of embedding size, amount
of training data and architecture (issue 28).

    python -m experiments.lfw_dev --recipe finetune        # pretrained, before vs after
    python -m experiments.lfw_dev --recipe selection       # NNS2 at 96x96, one row per rule
    python -m experiments.lfw_dev --recipe selection_full  # semi-hard vs random, 3 seeds
    python -m experiments.lfw_dev --recipe embedding_size  # 64, 128, 256, 512-D
    python -m experiments.lfw_dev --recipe training_data   # 25, 50, 100% of the identities
    python -m experiments.lfw_dev --recipe architecture --budget_minutes 20
    python -m experiments.lfw_dev --recipe selection --settings offline_semi_hard \
        --steps 200 --remine_every_steps 50                # a tiny budget

Steps: align the photos (the align_faces Beam job; --noalign for crops such as ORL); split
the identities (held-out ones among those with 2+ images); LFW-format pairs with
identity-disjoint folds on the held-out identities; ingest the training identities (the
build_dataset Beam job); per setting and seed, facenet_tf.train(config) in this process with
the recipe's flag file (configs/lfw_finetune.flags or configs/lfw_selection.flags), evaluating
on the held-out pairs at step 0, after every generation (and every 250 steps in the
full-budget recipes) and at the end (evaluate_pairs_file); then the table in
RESULTS_DIR/lfw_dev_RECIPE.md and .json, and for the issue-28 studies a plot
PLOTS_DIR/lfw_dev_RECIPE.png (experiments.studies). Re-running continues: prepared data and
finished runs are reused (also across the full-budget recipes, which share their baseline
run), an interrupted run resumes from its checkpoint.
"""

import dataclasses
import os
import shlex
import sys
import time

from absl import flags, logging

from experiments import studies
from experiments.protocol import (
    LFW_IMAGES,
    REPO_ROOT,
    dataset_counts,
    default_params,
    existing_dir,
    identity_subset,
    prepare_data,
    publish_results,
)
from experiments.runs import COLLAPSE_RULE, Setting, recipe_settings, run_setting, summarise_row
from facenet_tf import _cli
from facenet_tf.common import runinfo
from facenet_tf.training.config import TrainConfig

FLAGS = flags.FLAGS
# K of the online P x K batches: 3 divides every batch of 3 x B images.
ONLINE_IMAGES_PER_IDENTITY = 3
# The architecture study trains until its time budget is spent; this only bounds it.
UNBOUNDED_STEPS = 1_000_000


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A study: the flag file every row starts from, trainer flags every row adds, and its
    rows. group: the run directories go to WORK/GROUP-<steps>steps, shared by the recipes of
    that group (a row of one whose `run` names a row of another reuses that run); else
    WORK/RECIPE. timed: every row gets --max_train_seconds from --budget_minutes. spread: the
    held-out distance spread is measured after training."""
    flagfile: str
    settings: tuple
    args: tuple = ()
    group: str | None = None
    timed: bool = False
    spread: bool = True


def _offline(strategy, multi_seed):
    return Setting(f"offline_{strategy}", ("--mining=offline", f"--strategy={strategy}"),
                   multi_seed)


def _architecture(name, height, width, probe=False):
    args = (f"--architecture={name}", f"--input_shape={height},{width}")
    if probe:  # a few steps on one mined subset: the training and inference speeds only
        args += ("--steps=10", "--checkpoint_every_steps=5", "--remine_every_steps=10",
                 "--num_subsets=1")
    return Setting(f"{name}_{height}x{width}", args, probe=probe)


# The baseline of the issue-28 studies: offline semi-hard on NNS2 at 96x96, 128-D, all
# training identities (configs/lfw_selection.flags); embedding_size and training_data vary one
# thing of it and share its run as their baseline row, and with selection_full's semi-hard
# seed-0 run too when they run at its budget (--steps 3000 --remine_every_steps 500).
BASELINE = "offline_semi_hard"
CURVE = ("--eval_every_steps=250",)
# embedding_size and training_data by default: a third of the flag file's budget, the
# selection table's (about 13 minutes a run on 2 shared cores instead of 40).
STUDY_BUDGET = ("--steps=1000", "--remine_every_steps=250")
RECIPES = {
    "finetune": Recipe("lfw_finetune.flags", (Setting("pretrained_semi_hard"),), spread=False),
    "selection": Recipe("lfw_selection.flags", (
        _offline("semi_hard", True), _offline("hard", False), _offline("random", True),
        _offline("all", False),
        Setting("online_semi_hard", ("--mining=online", "--strategy=semi_hard"), online=True))),
    "selection_full": Recipe("lfw_selection.flags", (
        _offline("semi_hard", True), _offline("random", True)), CURVE, "lfw_selection"),
    "embedding_size": Recipe("lfw_selection.flags", tuple(
        Setting(f"dim{d}", (f"--embedding_dim={d}",), multi_seed=d == 128,
                run=BASELINE if d == 128 else f"dim{d}") for d in (64, 128, 256, 512)),
        STUDY_BUDGET + CURVE, "lfw_selection"),
    "training_data": Recipe("lfw_selection.flags", tuple(
        Setting(f"identities_{f:.0%}".replace("%", "pct"), multi_seed=f == 1.0, identity_fraction=f,
                run=BASELINE if f == 1.0 else f"identities{f:g}") for f in (0.25, 0.5, 1.0)),
        STUDY_BUDGET + CURVE, "lfw_selection"),
    # At each network's own input size (the paper's); a constant learning rate, since the
    # number of steps a network gets in the budget is not known in advance.
    "architecture": Recipe("lfw_selection.flags", (
        _architecture("nns2", 140, 116), _architecture("nns1", 165, 165),
        _architecture("nn4", 96, 96),
        _architecture("nn2", 224, 224, probe=True),
        _architecture("inception_resnet_v1", 160, 160, probe=True)),
        ("--lr_schedule=constant", f"--steps={UNBOUNDED_STEPS}"), timed=True),
}


def recipe_args(recipe: Recipe, budget_minutes: float) -> list:
    """The trainer flags every row of `recipe` starts from."""
    args = [f"--flagfile={os.path.join(REPO_ROOT, 'configs', recipe.flagfile)}", *recipe.args]
    if recipe.timed:
        args.append(f"--max_train_seconds={60 * budget_minutes:g}")
    return args


def setting_args(recipe: Recipe, setting: Setting, extra: list, budget_minutes: float) -> list:
    """A row's trainer flags: the recipe's, the row's, then `extra` (the command's budget and
    --train_flag), last one wins. Online rows: K = 3 and 3 x the triplet batch, so that every
    row trains on the same images per step."""
    args = recipe_args(recipe, budget_minutes) + list(setting.args) + list(extra)
    if setting.online:
        batch = recipe_settings(args).get("batch_size", TrainConfig.batch_size)
        args += [f"--images_per_identity={ONLINE_IMAGES_PER_IDENTITY}",
                 f"--batch_size={3 * batch}"]
    return args


def main(argv):
    del argv
    started = time.time()
    images = existing_dir(FLAGS.images, "images")
    for name in ("num_seeds", "steps", "remine_every_steps"):
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    if FLAGS.budget_minutes <= 0:
        raise ValueError(f"--budget_minutes must be > 0, got {FLAGS.budget_minutes}")
    recipe = RECIPES[FLAGS.recipe]
    names = [s.name for s in recipe.settings]
    unknown = sorted(set(FLAGS.settings or []) - set(names))
    if unknown:
        raise ValueError(f"--settings: unknown {unknown} for --recipe={FLAGS.recipe}; "
                         f"choose among {names}")
    selected = [s for s in recipe.settings if not FLAGS.settings or s.name in FLAGS.settings]
    budget = [f"--{name}={getattr(FLAGS, name)}" for name in ("steps", "remine_every_steps")
              if getattr(FLAGS, name) is not None]
    extra = budget + list(FLAGS.train_flag)
    given = recipe_settings(recipe_args(recipe, FLAGS.budget_minutes) + extra)
    batch = given.get("batch_size", TrainConfig.batch_size)
    steps = given.get("steps", TrainConfig.steps)
    remine = given.get("remine_every_steps", TrainConfig.remine_every_steps)
    if FLAGS.recipe == "finetune" and -(-steps // remine) < 4:
        logging.warning("steps=%d, remine_every_steps=%d: fewer than 4 generations", steps,
                        remine)
    work = os.path.abspath(FLAGS.work_dir)
    os.makedirs(work, exist_ok=True)
    protocol = prepare_data(work, {
        "images": images, "align": FLAGS.align, "seed": FLAGS.seed,
        "heldout_identities": FLAGS.heldout_identities, "num_folds": FLAGS.num_folds,
        "pairs_per_fold": FLAGS.pairs_per_fold})
    group = os.path.join(work, f"{recipe.group}-{steps}steps" if recipe.group
                         else FLAGS.recipe)
    rows, runs = [], []
    for setting in selected:
        args = setting_args(recipe, setting, extra, FLAGS.budget_minutes)
        data = (dataset_counts(protocol["dataset"]) if setting.identity_fraction == 1.0 else
                identity_subset(work, protocol, setting.identity_fraction, FLAGS.seed))
        seeds = range(FLAGS.num_seeds if setting.multi_seed else 1)
        setting_runs = [
            {**run_setting(os.path.join(group, f"{setting.run_name}-seed{seed}"), setting,
                           seed, args, data["dataset"], protocol, FLAGS.fresh, recipe.spread),
             "row": setting.name}  # a shared run names the row that first made it
            for seed in seeds]
        runs += setting_runs
        rows.append({**summarise_row(setting, setting_runs, 3 * batch), "data": data,
                     "probe": setting.probe})
    report = {"recipe": FLAGS.recipe, "protocol": protocol, "rows": rows, "runs": runs,
              "command": shlex.join([sys.executable, "-m", "experiments.lfw_dev"]
                                    + sys.argv[1:]),
              "collapse_rule": COLLAPSE_RULE,
              "budget_minutes": FLAGS.budget_minutes if recipe.timed else None,
              "trainer_settings": {**given, "steps": steps, "remine_every_steps": remine,
                                   "batch_size": batch},  # every row's, before its own
              "wall_minutes": round((time.time() - started) / 60, 1),
              "run_info": runinfo.collect({f.name: f.value for f in
                                           FLAGS.get_key_flags_for_module(sys.argv[0])})}
    report.update(studies.analysis(FLAGS.recipe, report))
    markdown = studies.markdown(FLAGS.recipe, report)
    results_dir = os.path.abspath(FLAGS.results_dir or work)
    plots_dir = os.path.abspath(FLAGS.plots_dir or work)
    for directory in (results_dir, plots_dir):
        os.makedirs(directory, exist_ok=True)
    plot = ([studies.PLOTS[FLAGS.recipe](report, os.path.join(plots_dir,
                                                               f"lfw_dev_{FLAGS.recipe}.png"))]
            if FLAGS.recipe in studies.PLOTS else [])
    publish_results(os.path.join(results_dir, f"lfw_dev_{FLAGS.recipe}"), report, markdown,
                    also_written=plot)


def _define_flags():
    # The protocol's defaults come from experiments.protocol, which the TFLite benchmark also
    # prepares: with the same values both reuse one prepared directory.
    default = default_params()
    flags.DEFINE_enum("recipe", None, list(RECIPES), "finetune: the pretrained model before "
                      "and after fine-tuning; selection: triplet selection rules from scratch; "
                      "selection_full: semi-hard against random with a held-out curve; "
                      "embedding_size, training_data: NNS2 at 64..512-D, on 25..100% of the "
                      "training identities; architecture: networks at an equal wall-clock "
                      "budget (--budget_minutes).")
    flags.DEFINE_string("images", LFW_IMAGES, "Identity-per-folder photos (default: lfw_dev).")
    flags.DEFINE_bool("align", default["align"], "Detect and align the faces first "
                      "(align_faces Beam job); --noalign for face crops already (e.g. ORL).")
    flags.DEFINE_string("work_dir", "runs/lfw_dev", "Where the data and runs go.")
    flags.DEFINE_string("results_dir", None, "Where lfw_dev_RECIPE.md and .json go (default: "
                        "--work_dir; the committed ones are in experiments/results).")
    flags.DEFINE_string("plots_dir", None, "Where lfw_dev_RECIPE.png goes, for the recipes "
                        "with a plot (default: --work_dir; the committed ones are in "
                        "docs/images).")
    flags.DEFINE_float("budget_minutes", 20.0, "architecture: wall-clock minutes of training "
                       "and mining per network (validation not counted).")
    flags.DEFINE_integer("heldout_identities", default["heldout_identities"], "Identities "
                         "kept out of training (among those with 2+ images) for the "
                         "verification pairs.")
    flags.DEFINE_integer("seed", default["seed"], "Seed of the identity split and of the "
                         "pairs.")
    flags.DEFINE_integer("num_folds", default["num_folds"], "Identity-disjoint folds of the "
                         "held-out pairs.")
    flags.DEFINE_integer("pairs_per_fold", default["pairs_per_fold"], "Pairs per fold (half "
                         "matched).")
    flags.DEFINE_list("settings", None, "Run only these rows (default: all of the recipe's).")
    flags.DEFINE_integer("num_seeds", 3, "Training seeds 0..N-1 of the multi-seed rows "
                         "(selection, selection_full: offline_semi_hard and offline_random; "
                         "embedding_size, training_data: the baseline row); others seed 0.")
    flags.DEFINE_integer("steps", None, "Budget: override the recipe's --steps.")
    flags.DEFINE_integer("remine_every_steps", None, "Budget: override the recipe's re-mining "
                         "cadence.")
    flags.DEFINE_multi_string("train_flag", [], "Extra trainer flag, repeatable, e.g. "
                              "--train_flag=--batch_size=12 (online rows get 3x the batch).")
    flags.DEFINE_bool("fresh", False, "Retrain the selected settings from scratch (the "
                      "prepared data is kept).")
    flags.mark_flag_as_required("recipe")


if __name__ == "__main__":
    _define_flags()
    logging.set_verbosity(logging.WARNING)
    _cli.run(main, __name__)
