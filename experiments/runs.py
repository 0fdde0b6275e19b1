"""The training runs of the research recipes (experiments.lfw_dev), whatever the study: one
trainer run per setting and seed, in this process, on a prepared protocol (experiments.protocol);
what is measured on it afterwards; rows of mean ± std over seeds; the markdown pieces every
results table shares. No flags here: the command is experiments.lfw_dev.
"""

import dataclasses
import logging as std_logging
import os
import resource
import shlex
import shutil
import time

import numpy as np

from experiments.protocol import stage
from facenet_tf.common import config_flags, io_utils
from facenet_tf.data.image_files import list_images
from facenet_tf.inference.batch_embed import embed_files
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.models import build_model, model_card
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.loop import train
from facenet_tf.training.run_dir import RunDir
from facenet_tf.training.state import read_state

METRICS = ("accuracy_mean", "accuracy_std", "val_at_far_1e-3", "roc_auc")
# The same metrics on the paper's 128-byte codes (evaluate_pairs_file's int8_*).
INT8_METRICS = tuple(f"int8_{k}" for k in METRICS)
# A run collapsed (every face mapped to about one point, the paper's warning about hard
# negatives early on) when its final held-out embeddings of different identities are on
# average closer than this fraction of alpha. Spread-out unit vectors are ~2 apart; an
# untrained NNS2 (inference-mode batch norm) is ~0.06 apart, above 0.02 at alpha 0.2.
COLLAPSE_FRACTION = 0.1
COLLAPSE_RULE = (f"collapsed: the mean squared L2 distance between final embeddings of "
                 f"different held-out identities is below {COLLAPSE_FRACTION} x alpha")
# Inference speed of a trained or probed network: this many held-out images (sorted paths).
SPEED_IMAGES = 512


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row: trainer flags on top of the recipe's, and how it runs.

    multi_seed: takes --num_seeds seeds (else seed 0 only); online: P x K batches (K = 3,
    3 x the triplet batch); run: its run directory in the recipe's group (default: name), so
    that two recipes can share a run; identity_fraction: trains on that seeded fraction of the
    training identities; probe: a few steps for speed only (no held-out pairs).
    """
    name: str
    args: tuple = ()
    multi_seed: bool = False
    online: bool = False
    run: str | None = None
    identity_fraction: float = 1.0
    probe: bool = False

    @property
    def run_name(self) -> str:
        return self.run or self.name


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


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


def inference_speed(export_dir: str, heldout_root: str) -> dict:
    """Images per second of the exported model (the SavedModel, batches of 64) embedding the
    first SPEED_IMAGES held-out images, decoding included; a first pass warms it up."""
    embedder = load_embedder(export_dir)
    paths = list_images(heldout_root)[:SPEED_IMAGES]
    embed_files(embedder, paths[:64])
    started = time.perf_counter()
    embed_files(embedder, paths)
    return {"inference_images_per_second": len(paths) / (time.perf_counter() - started)}


def training_speed(history: list, images_per_step: int) -> dict:
    """Images per second of model.fit (input pipeline included, mining not), over the
    checkpoint intervals after the first (which traces the graph)."""
    steps, seconds, previous = 0, 0.0, None
    for entry in history:
        if previous is not None and entry.get("seconds"):
            steps += entry["step"] - previous
            seconds += entry["seconds"]
        previous = entry["step"]
    return {"train_images_per_second": images_per_step * steps / seconds if seconds else None}


def summarise_run(model_dir: str, heldout_root: str, with_spread: bool,
                  images_per_step: int) -> dict:
    """The run's evaluations (step 0, every curve point, final), training statistics, speeds
    and network size."""
    run_dir = RunDir(model_dir)
    state = read_state(run_dir)
    config = TrainConfig.load(run_dir.train_config)
    evals = state.evals
    keys = METRICS + INT8_METRICS
    out = {"step": state.step, "generations": state.generation + 1,
           "before": ({k: evals[0].get(k) for k in METRICS}
                      if evals and evals[0]["step"] == 0 else None),
           "after": {k: evals[-1].get(k) for k in keys} if evals else None,
           "evals": [{k: e.get(k) for k in ("step", "generation") + METRICS} for e in evals],
           "history": {k: [h.get(k) for h in state.history] for k in
                       ("step", "loss", "fraction_active", "mean_d_ap", "mean_d_an",
                        "seconds")},
           "alpha": config.alpha, "export_dir": config.resolved_export_dir,
           "train_seconds": state.train_seconds,
           "fit_seconds": sum(h.get("seconds") or 0.0 for h in state.history)}
    active = [a for a in out["history"]["fraction_active"] if a is not None]
    out["fraction_active_mean"] = float(np.mean(active)) if active else None
    out["fraction_active_last"] = active[-1] if active else None
    network = build_model(config.architecture, embedding_dim=config.embedding_dim,
                          input_shape=config.input_shape)
    out["network"] = {"architecture": config.architecture,
                      "input_shape": list(network.input_shape[1:]),
                      "embedding_dim": config.embedding_dim, **model_card(network)}
    out.update(training_speed(state.history, images_per_step))
    out.update(inference_speed(config.resolved_export_dir, heldout_root))
    if with_spread:
        out.update(heldout_spread(config.resolved_export_dir, heldout_root))
        out["collapsed"] = out["heldout_d_diff"] < COLLAPSE_FRACTION * config.alpha
    return out


def run_setting(run_path: str, setting: Setting, seed: int, trainer_args: list,
                train_data: str, protocol: dict, fresh: bool, with_spread: bool) -> dict:
    """Trains one setting with one seed in `run_path` (or resumes it) and evaluates it; a
    finished run's result.json is reused if it was made with the same trainer settings."""
    if fresh:
        shutil.rmtree(run_path, ignore_errors=True)
    os.makedirs(run_path, exist_ok=True)
    model_dir = os.path.join(run_path, "model")
    heldout = {} if setting.probe else {"eval_pairs": protocol["pairs_path"],
                                        "eval_images": protocol["heldout_images_root"]}
    config = TrainConfig(**{**recipe_settings(trainer_args), "train_data": train_data,
                            "model_dir": model_dir, **heldout, "seed": seed})
    result_path, command_path = (os.path.join(run_path, n) for n in ("result.json",
                                                                       "command.json"))
    name = f"{setting.name} seed {seed}"
    if os.path.exists(command_path):
        before = io_utils.read_json(command_path).get("config", {})
        now = config.to_dict()
        changed = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
                            for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k))
        if changed:
            raise ValueError(f"{command_path}: {name} was started with other trainer settings "
                             f"({changed}); pass --fresh to retrain it")
    if os.path.exists(result_path):
        print(f"{name}: done before ({result_path})", flush=True)
        return io_utils.read_json(result_path)
    io_utils.write_json_atomic(command_path, {"trainer_flags": trainer_args,
                                              "config": config.to_dict()})
    state = read_state(RunDir(model_dir))
    log_path = os.path.join(run_path, "train.log")
    stage(f"{name}: training (log: {log_path})")
    started, cpu = time.time(), _cpu_seconds()
    run_trainer(config, log_path)
    images_per_step = config.batch_size * (1 if config.mining == "online" else 3)
    result = {"setting": setting.name, "seed": seed, "trainer_flags": trainer_args,
              "resumed_from_step": state.step if state else 0,
              **summarise_run(model_dir, protocol["heldout_images_root"], with_spread,
                              images_per_step)}
    result["wall_seconds"] = round(time.time() - started, 1)
    # Below 2 x wall on this 2-core machine when other work shared it.
    result["cpu_seconds"] = round(_cpu_seconds() - cpu, 1)
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
    for side, keys in (("before", METRICS), ("after", METRICS + INT8_METRICS)):
        row[side] = {k: mean_std([(r[side] or {}).get(k) for r in runs]) for k in keys}
    for key in ("fraction_active_mean", "fraction_active_last", "heldout_d_same",
                "heldout_d_diff", "train_images_per_second", "inference_images_per_second",
                "train_seconds"):
        row[key] = mean_std([r.get(key) for r in runs])
    row["collapsed"] = sum(bool(r.get("collapsed")) for r in runs)
    row["network"] = runs[0].get("network")
    row["curves"] = [[{k: e.get(k) for k in ("step", "accuracy_mean", "roc_auc",
                                              "val_at_far_1e-3")} for e in r["evals"]]
                     for r in runs]
    row["cpu_seconds"] = [r.get("cpu_seconds") for r in runs]
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


def table(head: list, body: list) -> list:
    """Markdown table lines."""
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in body])


def protocol_lines(title: str, protocol: dict) -> list:
    """A results file's title and the protocol it was measured on."""
    p = protocol
    return [f"# LFW dev: {title}", "",
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


def command_lines(report: dict) -> list:
    """The wall-time note, the command and each run's trainer flags."""
    lines = ["- wall: training, evaluations and the measurements after training of this "
             "command's runs (a resumed run counts from where it resumed; a run reused from "
             f"another recipe counts its own); total {report['wall_minutes']} min; git "
             f"{report['run_info']['git_revision']}.",
             "", "The command, then each run's trainer flags (facenet_tf.train(config), in "
             "its process, on top of the recipe; the run's data, pairs and seed are added):",
             "", f"    {report['command']}"]
    return lines + [f"    {r.get('row', r['setting'])} seed {r['seed']}: "
                    f"{shlex.join(r['trainer_flags'])}" for r in report["runs"]]
