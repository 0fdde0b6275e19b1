r"""LFW dev experiments (issue 17): fine-tuning the pretrained FaceNet, and triplet selection
from scratch at equal budget, on a seeded identity-disjoint split of the lfw_dev photos.

    python -m experiments.lfw_dev --recipe finetune     # pretrained, before vs after
    python -m experiments.lfw_dev --recipe selection    # NNS2 at 96x96, one row per rule
    python -m experiments.lfw_dev --recipe selection --settings offline_semi_hard \
        --steps 200 --remine_every_steps 50             # a tiny budget

Steps: align the photos (the align_faces Beam job; --noalign for crops such as ORL); split
the identities (held-out ones among those with 2+ images); LFW-format pairs with
identity-disjoint folds on the held-out identities; ingest the training identities (the
build_dataset Beam job); per setting and seed, `python -m facenet_tf.train` with the recipe's
flag file (configs/lfw_finetune.flags or configs/lfw_selection.flags), evaluating on the
held-out pairs at step 0, after every generation and at the end (evaluate_pairs_file); then the
table in WORK_DIR/results_RECIPE.md and .json. Re-running continues: prepared data and
finished settings are reused, an interrupted run resumes from its checkpoint.
"""

import dataclasses
import logging as std_logging
import os
import shlex
import shutil
import sys
import time

import numpy as np
from absl import flags, logging

from experiments.protocol import (
    LFW_IMAGES,
    REPO_ROOT,
    default_params,
    existing_dir,
    prepare_data,
    publish_results,
    stage,
)
from facenet_tf import _cli
from facenet_tf.common import config_flags, io_utils, runinfo
from facenet_tf.data.image_files import list_images
from facenet_tf.inference.batch_embed import embed_files
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.loop import train
from facenet_tf.training.run_dir import RunDir
from facenet_tf.training.state import read_state

FLAGS = flags.FLAGS
METRICS = ("accuracy_mean", "accuracy_std", "val_at_far_1e-3", "roc_auc")
# K of the online P x K batches: 3 divides every batch of 3 x B images.
ONLINE_IMAGES_PER_IDENTITY = 3
# A run collapsed (every face mapped to about one point, the paper's warning about hard
# negatives early on) when its final held-out embeddings of different identities are on
# average closer than this fraction of alpha. Spread-out unit vectors are ~2 apart; an
# untrained NNS2 (inference-mode batch norm) is ~0.06 apart, above 0.02 at alpha 0.2.
COLLAPSE_FRACTION = 0.1
COLLAPSE_RULE = (f"collapsed: the mean squared L2 distance between final embeddings of "
                 f"different held-out identities is below {COLLAPSE_FRACTION} x alpha")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row: trainer flags on top of the recipe's flag file, and whether it takes
    --num_seeds seeds (else seed 0 only)."""
    name: str
    args: tuple
    multi_seed: bool = False
    online: bool = False


def _offline(strategy, multi_seed):
    return Setting(f"offline_{strategy}", ("--mining=offline", f"--strategy={strategy}"),
                   multi_seed)


RECIPES = {
    "finetune": ("lfw_finetune.flags", (Setting("pretrained_semi_hard", ()),)),
    "selection": ("lfw_selection.flags", (
        _offline("semi_hard", True), _offline("hard", False), _offline("random", True),
        _offline("all", False),
        Setting("online_semi_hard", ("--mining=online", "--strategy=semi_hard"), online=True))),
}


def recipe_settings(args: list) -> dict:
    """The TrainConfig settings that trainer flags give (flag files read, last one wins),
    parsed exactly as `python -m facenet_tf.train` parses them."""
    return config_flags.read_flags(TrainConfig, args, source=" ".join(args))


def run_trainer(config: TrainConfig, log_path: str) -> None:
    """facenet_tf.train(config) in this process, its log lines appended to log_path."""
    handler = std_logging.FileHandler(log_path)
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = std_logging.getLogger()
    root.addHandler(handler)
    try:
        train(config)
    finally:
        root.removeHandler(handler)
        handler.close()


def heldout_spread(export_dir: str, heldout_root: str) -> dict:
    """Mean squared L2 distances between held-out embeddings of the same and of different
    identities (exact, over all pairs of images), from one embedding pass."""
    paths = list_images(heldout_root)
    emb = embed_files(load_embedder(export_dir), paths).astype(np.float64)
    labels = np.array([os.path.relpath(p, heldout_root).split(os.sep)[0] for p in paths])

    def pair_sum(e):  # sum over ordered pairs (i, j) of |e_i - e_j|^2
        return 2 * len(e) * np.sum(e * e) - 2 * np.sum(e.sum(axis=0) ** 2)

    names, counts = np.unique(labels, return_counts=True)
    same = sum(pair_sum(emb[labels == name]) for name in names)
    same_count = int(np.sum(counts * (counts - 1)))
    diff_count = len(emb) ** 2 - len(emb) - same_count
    return {"heldout_d_same": float(same / same_count) if same_count else None,
            "heldout_d_diff": float((pair_sum(emb) - same) / diff_count),
            "heldout_images": len(paths)}


def summarise_run(model_dir: str, with_spread: bool, heldout_root: str) -> dict:
    """The run's evaluations (step 0 and final), training statistics and generations."""
    run_dir = RunDir(model_dir)
    state = read_state(run_dir)
    config = TrainConfig.load(run_dir.train_config)
    evals = state.evals
    out = {"step": state.step, "generations": state.generation + 1,
           "before": {k: evals[0].get(k) for k in METRICS} if evals[0]["step"] == 0 else None,
           "after": {k: evals[-1].get(k) for k in METRICS},
           "evals": [{k: e.get(k) for k in ("step", "generation") + METRICS} for e in evals],
           "history": {k: [h.get(k) for h in state.history] for k in
                       ("step", "loss", "fraction_active", "mean_d_ap", "mean_d_an")},
           "alpha": config.alpha, "export_dir": config.resolved_export_dir}
    active = [a for a in out["history"]["fraction_active"] if a is not None]
    out["fraction_active_mean"] = float(np.mean(active)) if active else None
    out["fraction_active_last"] = active[-1] if active else None
    if with_spread:
        out.update(heldout_spread(config.resolved_export_dir, heldout_root))
        out["collapsed"] = out["heldout_d_diff"] < COLLAPSE_FRACTION * config.alpha
    return out


def run_setting(work: str, recipe: str, setting: Setting, seed: int, trainer_args: list,
                protocol: dict, fresh: bool) -> dict:
    """Trains one setting with one seed (or resumes it) and evaluates it; a finished run's
    result.json is reused if it was made by the same command."""
    run_path = os.path.join(work, recipe, f"{setting.name}-seed{seed}")
    if fresh:
        shutil.rmtree(run_path, ignore_errors=True)
    os.makedirs(run_path, exist_ok=True)
    model_dir = os.path.join(run_path, "model")
    config = TrainConfig(**{**recipe_settings(trainer_args),
                            "train_data": protocol["dataset"], "model_dir": model_dir,
                            "eval_pairs": protocol["pairs_path"],
                            "eval_images": protocol["heldout_images_root"], "seed": seed})
    result_path, command_path = (os.path.join(run_path, n) for n in ("result.json",
                                                                       "command.json"))
    if os.path.exists(command_path):
        before = io_utils.read_json(command_path).get("config", {})
        now = config.to_dict()
        changed = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
                            for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k))
        if changed:
            raise ValueError(f"{command_path}: {setting.name} seed {seed} was started with "
                             f"other trainer settings ({changed}); pass --fresh to retrain it")
    if os.path.exists(result_path):
        print(f"{setting.name} seed {seed}: done before ({result_path})", flush=True)
        return io_utils.read_json(result_path)
    io_utils.write_json_atomic(command_path, {"trainer_flags": trainer_args,
                                              "config": config.to_dict()})
    state = read_state(RunDir(model_dir))
    log_path = os.path.join(run_path, "train.log")
    stage(f"{setting.name} seed {seed}: training (log: {log_path})")
    started = time.time()
    run_trainer(config, log_path)
    result = {"setting": setting.name, "seed": seed, "trainer_flags": trainer_args,
              "resumed_from_step": state.step if state else 0,
              **summarise_run(model_dir, recipe == "selection",
                              protocol["heldout_images_root"])}
    result["wall_seconds"] = round(time.time() - started, 1)
    io_utils.write_json_atomic(result_path, result)
    return result


def mean_std(values: list) -> dict:
    """Mean and sample standard deviation (None for one value)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "n": len(values),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def summarise_row(setting: Setting, runs: list, images_per_step: int) -> dict:
    """One table row from a setting's runs (one per seed)."""
    row = {"setting": setting.name, "seeds": [r["seed"] for r in runs],
           "images_per_step": images_per_step, "steps": runs[0]["step"],
           "generations": runs[0]["generations"] if not setting.online else None,
           "wall_seconds": [r["wall_seconds"] for r in runs]}
    for side in ("before", "after"):
        row[side] = {k: mean_std([(r[side] or {}).get(k) for r in runs]) for k in METRICS}
    for key in ("fraction_active_mean", "fraction_active_last", "heldout_d_same",
                "heldout_d_diff"):
        row[key] = mean_std([r.get(key) for r in runs])
    row["collapsed"] = sum(bool(r.get("collapsed")) for r in runs)
    return row


def fmt(stat: dict, percent: bool = True) -> str:
    """A mean_std dict as "mean ± std", in percent or to 3 decimals ("n/a" without values)."""
    if stat["mean"] is None:
        return "n/a"
    scale, form = (100, "{:.1f}") if percent else (1, "{:.3f}")
    text = form.format(scale * stat["mean"]) + ("%" if percent else "")
    if stat["std"] is not None:
        text += " ± " + form.format(scale * stat["std"])
    return text


def markdown_table(recipe: str, report: dict) -> str:
    """The results as markdown: protocol, table, notes, commands."""
    p = report["protocol"]
    lines = [f"# LFW dev: {recipe}", "",
             f"Held-out verification: {p['num_pairs']} pairs ({p['num_matched_pairs']} "
             f"matched) in {p['params']['num_folds']} identity-disjoint folds over "
             f"{len(p['heldout_identities'])} held-out identities ({p['num_heldout_images']} "
             f"images); training: {p['num_train_images']} images of "
             f"{p['num_train_identities']} identities ({p['num_train_identities_2plus']} with "
             f"2+ images). Split and pairs seed {p['params']['seed']}; images "
             f"{p['params']['images']}" + (f", aligned (no face found in {p['num_no_face']} "
                                           f"photos, unreadable {p['num_unreadable']})"
                                           if p["params"]["align"] else ", not aligned") + ".",
             ""]
    if recipe == "finetune":
        head = ["setting", "steps", "generations", "accuracy before", "accuracy after",
                "VAL@1e-3 before", "VAL@1e-3 after", "AUC before", "AUC after",
                "active (mean / last)", "wall min"]
        body = [[r["setting"], r["steps"], r["generations"],
                 fmt(r["before"]["accuracy_mean"]), fmt(r["after"]["accuracy_mean"]),
                 fmt(r["before"]["val_at_far_1e-3"]), fmt(r["after"]["val_at_far_1e-3"]),
                 fmt(r["before"]["roc_auc"], False), fmt(r["after"]["roc_auc"], False),
                 f"{fmt(r['fraction_active_mean'])} / {fmt(r['fraction_active_last'])}",
                 f"{sum(r['wall_seconds']) / 60:.1f}"] for r in report["rows"]]
    else:
        head = ["setting", "seeds", "steps", "images/step", "accuracy", "VAL@1e-3", "AUC",
                "active (mean / last)", "held-out d same / diff", "collapsed",
                "wall min per run"]
        body = [[r["setting"], len(r["seeds"]), r["steps"], r["images_per_step"],
                 fmt(r["after"]["accuracy_mean"]), fmt(r["after"]["val_at_far_1e-3"]),
                 fmt(r["after"]["roc_auc"], False),
                 f"{fmt(r['fraction_active_mean'])} / {fmt(r['fraction_active_last'])}",
                 f"{fmt(r['heldout_d_same'], False)} / {fmt(r['heldout_d_diff'], False)}",
                 f"{r['collapsed']}/{len(r['seeds'])}",
                 f"{np.mean(r['wall_seconds']) / 60:.1f}"] for r in report["rows"]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    lines += ["", "Notes:",
              f"- accuracy: LFW protocol on the pairs' {p['params']['num_folds']} folds "
              "(threshold chosen on the other folds); VAL@1e-3: validation rate at "
              "false-accept rate 1e-3; x ± s: mean ± sample standard deviation over seeds"
              + ("; before: the pretrained model (step 0)." if recipe == "finetune" else "."),
              "- active: fraction of training triplets with positive loss, per checkpoint "
              "interval: the mean over training / the last interval."]
    if recipe == "selection":
        lines += [f"- {COLLAPSE_RULE}; d same / diff: those mean squared distances for the "
                  "same / different held-out identities.",
                  f"- online rows: P x K batches (K = {ONLINE_IMAGES_PER_IDENTITY}) of 3 x the "
                  "offline triplet batch, so every row sees the same images per step."]
    lines += ["- wall: training, evaluations and the held-out spread of this command's "
              "runs (a resumed run counts from where it resumed); total "
              f"{report['wall_minutes']} min; git {report['run_info']['git_revision']}.",
              "", "The command, then each run's trainer flags (facenet_tf.train(config), in "
              "its process, on top of the recipe; the run's data, pairs and seed are added):",
              "", f"    {report['command']}"]
    lines += [f"    {r['setting']} seed {r['seed']}: {shlex.join(r['trainer_flags'])}"
              for r in report["runs"]]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    started = time.time()
    images = existing_dir(FLAGS.images, "images")
    for name in ("num_seeds", "steps", "remine_every_steps"):
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    flagfile, settings = RECIPES[FLAGS.recipe]
    names = [s.name for s in settings]
    unknown = sorted(set(FLAGS.settings or []) - set(names))
    if unknown:
        raise ValueError(f"--settings: unknown {unknown} for --recipe={FLAGS.recipe}; "
                         f"choose among {names}")
    selected = [s for s in settings if not FLAGS.settings or s.name in FLAGS.settings]
    base = [f"--flagfile={os.path.join(REPO_ROOT, 'configs', flagfile)}"]
    budget = [f"--{name}={getattr(FLAGS, name)}" for name in ("steps", "remine_every_steps")
              if getattr(FLAGS, name) is not None]
    extra = budget + list(FLAGS.train_flag)
    given = recipe_settings(base + extra)
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
    rows, runs = [], []
    for setting in selected:
        # Online rows last: K = 3 and 3 x the triplet batch, the same images per step.
        args = base + list(setting.args) + extra + (
            [f"--images_per_identity={ONLINE_IMAGES_PER_IDENTITY}",
             f"--batch_size={3 * batch}"] if setting.online else [])
        seeds = range(FLAGS.num_seeds if setting.multi_seed else 1)
        setting_runs = [run_setting(work, FLAGS.recipe, setting, seed, args, protocol,
                                    FLAGS.fresh) for seed in seeds]
        runs += setting_runs
        rows.append(summarise_row(setting, setting_runs, 3 * batch))
    report = {"recipe": FLAGS.recipe, "protocol": protocol, "rows": rows, "runs": runs,
              "command": shlex.join([sys.executable, "-m", "experiments.lfw_dev"]
                                    + sys.argv[1:]),
              "collapse_rule": COLLAPSE_RULE,
              "wall_minutes": round((time.time() - started) / 60, 1),
              "run_info": runinfo.collect({f.name: f.value for f in
                                           FLAGS.get_key_flags_for_module(sys.argv[0])})}
    markdown = markdown_table(FLAGS.recipe, report)
    base_path = os.path.join(work, f"results_{FLAGS.recipe}")
    publish_results(base_path, report, markdown)


def _define_flags():
    # The protocol's defaults come from experiments.protocol, which the TFLite benchmark also
    # prepares: with the same values both reuse one prepared directory.
    default = default_params()
    flags.DEFINE_enum("recipe", None, list(RECIPES), "finetune: the pretrained model before "
                      "and after fine-tuning; selection: triplet selection rules from scratch.")
    flags.DEFINE_string("images", LFW_IMAGES, "Identity-per-folder photos (default: lfw_dev).")
    flags.DEFINE_bool("align", default["align"], "Detect and align the faces first "
                      "(align_faces Beam job); --noalign for face crops already (e.g. ORL).")
    flags.DEFINE_string("work_dir", "runs/lfw_dev", "Where the data, runs and tables go.")
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
                         "(selection: offline_semi_hard and offline_random); others seed 0.")
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
