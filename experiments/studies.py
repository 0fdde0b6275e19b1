"""The results of experiments.lfw_dev as markdown and plots, one of each per recipe, with the
paper's own figures beside ours where the paper has them (taken from the project's notes on
the paper, shared/notes/facenet-paper.md; none is made up here). No flags: the command is
experiments.lfw_dev.
"""

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from experiments.runs import (
    COLLAPSE_RULE,
    command_lines,
    fmt,
    protocol_lines,
    table,
)
from facenet_tf.evaluation.plots import save_png

# Table 5 of the paper: NN1, VAL at FAR 1e-3 on its hold-out set, by embedding size.
PAPER_EMBEDDING_VAL = {64: 0.868, 128: 0.879, 256: 0.877, 512: 0.856}
# Table 3 / Figure 4: (name, parameters, FLOPS per image, VAL at FAR 1e-3); None: not given
# in our notes (NN3: "about NN2's" parameters, "less" FLOPS; NN4: NN2's parameters).
PAPER_ARCHITECTURES = (("NN1", 140e6, 1.6e9, 0.879), ("NN2", 7.5e6, 1.6e9, 0.894),
                       ("NN3", None, None, 0.883), ("NN4", 7.5e6, 285e6, 0.820),
                       ("NNS1", 26e6, 220e6, 0.824), ("NNS2", 4.3e6, 20e6, 0.519))
# Table 6 (a smaller model), as approximate in our notes: VAL at FAR 1e-3 by training images.
PAPER_TRAINING_DATA = ((2.6e6, 0.76), (26e6, 0.85))
COLORS = {"offline_semi_hard": "tab:blue", "offline_random": "tab:orange"}


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _minutes(seconds) -> str:
    seconds = [s for s in seconds if s is not None]
    return f"{np.mean(seconds) / 60:.1f}" if seconds else "n/a"


def _common_notes(recipe: str) -> list:
    return ["", "Notes:",
            "- accuracy: LFW protocol on the pairs' folds (threshold chosen on the other "
            "folds); VAL@1e-3: validation rate at false-accept rate 1e-3; AUC: area under the "
            "ROC; x ± s: mean ± sample standard deviation over seeds"
            + ("; before: the pretrained model (step 0)." if recipe == "finetune" else ".")]


def _active(row) -> str:
    return f"{fmt(row['fraction_active_mean'])} / {fmt(row['fraction_active_last'])}"


# ---------------------------------------------------------------- finetune and selection


def _finetune(report: dict) -> list:
    head = ["setting", "steps", "generations", "accuracy before", "accuracy after",
            "VAL@1e-3 before", "VAL@1e-3 after", "AUC before", "AUC after",
            "active (mean / last)", "wall min"]
    body = [[r["setting"], r["steps"], r["generations"],
             fmt(r["before"]["accuracy_mean"]), fmt(r["after"]["accuracy_mean"]),
             fmt(r["before"]["val_at_far_1e-3"]), fmt(r["after"]["val_at_far_1e-3"]),
             fmt(r["before"]["roc_auc"], False), fmt(r["after"]["roc_auc"], False),
             _active(r), f"{sum(r['wall_seconds']) / 60:.1f}"] for r in report["rows"]]
    return table(head, body) + _common_notes("finetune") + [
        "- active: fraction of training triplets with positive loss, per checkpoint "
        "interval: the mean over training / the last interval."]


def _selection_table(rows: list) -> list:
    head = ["setting", "seeds", "steps", "images/step", "accuracy", "VAL@1e-3", "AUC",
            "active (mean / last)", "held-out d same / diff", "collapsed", "wall min per run"]
    body = [[r["setting"], len(r["seeds"]), r["steps"], r["images_per_step"],
             fmt(r["after"]["accuracy_mean"]), fmt(r["after"]["val_at_far_1e-3"]),
             fmt(r["after"]["roc_auc"], False), _active(r),
             f"{fmt(r['heldout_d_same'], False)} / {fmt(r['heldout_d_diff'], False)}",
             f"{r['collapsed']}/{len(r['seeds'])}", _minutes(r["wall_seconds"])]
            for r in rows]
    return table(head, body)


def _selection_notes(recipe: str) -> list:
    return _common_notes(recipe) + [
        "- active: fraction of training triplets with positive loss, per checkpoint "
        "interval: the mean over training / the last interval.",
        f"- {COLLAPSE_RULE}; d same / diff: those mean squared distances for the same / "
        "different held-out identities."]


def _selection(report: dict) -> list:
    return _selection_table(report["rows"]) + _selection_notes("selection") + [
        "- online rows: P x K batches (K = 3) of 3 x the offline triplet batch, so every row "
        "sees the same images per step."]


# ---------------------------------------------------------------- held-out curves


def curve_stats(row: dict, metric: str = "accuracy_mean") -> dict:
    """{step: [value of each seed]} over the evaluations every seed has."""
    by_step = {}
    for curve in row["curves"]:
        for point in curve:
            by_step.setdefault(point["step"], []).append(point[metric])
    return {step: values for step, values in sorted(by_step.items())
            if len(values) == len(row["curves"])}


def welch_p(a: list, b: list) -> float | None:
    """Two-sided Welch t-test p-value of mean(a) = mean(b) (None below 2 values a side)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread: the test is undefined
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def first_step_reaching(curve: dict, level: float) -> int | None:
    """The first step whose mean over seeds is at or above `level`."""
    return next((step for step, values in curve.items() if np.mean(values) >= level), None)


def selection_answer(rows: list) -> dict:
    """Does semi-hard learn faster, end higher, or neither? The per-step comparison of the
    two rows' held-out accuracy (means over seeds, Welch p-values) and the steps each needs
    to reach 95% of the lower final mean."""
    a, b = rows
    ca, cb = curve_stats(a), curve_stats(b)
    steps = [s for s in ca if s in cb and s > 0]
    per_step = [{"step": s, a["setting"]: float(np.mean(ca[s])),
                 b["setting"]: float(np.mean(cb[s])),
                 "difference": float(np.mean(ca[s]) - np.mean(cb[s])),
                 "welch_p": welch_p(ca[s], cb[s])} for s in steps]
    final = min(np.mean(ca[steps[-1]]), np.mean(cb[steps[-1]])) if steps else None
    level = 0.95 * final if final is not None else None
    return {"per_step": per_step, "level": level,
            "steps_to_level": {r["setting"]: first_step_reaching(c, level) if level else None
                               for r, c in ((a, ca), (b, cb))}}


def _selection_full(report: dict) -> list:
    rows, answer = report["rows"], report.get("answer")
    lines = _selection_table(rows)
    if answer:
        a, b = (r["setting"] for r in rows)
        lines += ["", f"Held-out accuracy every {_curve_every(rows)} steps (mean over seeds; "
                  f"p: Welch's t-test of {a} = {b}, two-sided):", ""]
        lines += table(["step", a, b, "difference", "p"],
                       [[p["step"], _pct(p[a]), _pct(p[b]),
                         f"{100 * p['difference']:+.1f} points",
                         "n/a" if p["welch_p"] is None else f"{p['welch_p']:.2f}"]
                        for p in answer["per_step"]])
        if answer["level"] is not None:
            lines += ["", f"First step at which the mean reaches {_pct(answer['level'])} (95% "
                      "of the lower final mean): " + ", ".join(
                          f"{k} {v if v is not None else 'never'}"
                          for k, v in answer["steps_to_level"].items()) + "."]
    return lines + _selection_notes("selection_full")


def _curve_every(rows: list) -> int | str:
    steps = sorted(curve_stats(rows[0]))
    return steps[1] - steps[0] if len(steps) > 1 else "?"


def plot_selection_full(report: dict, path: str) -> str:
    """Held-out accuracy and ROC AUC against the step, mean over seeds with their range."""
    fig = Figure(figsize=(10, 4))
    for i, (metric, label, scale) in enumerate((("accuracy_mean", "held-out accuracy (%)", 100),
                                                ("roc_auc", "held-out ROC AUC", 1))):
        ax = fig.add_subplot(1, 2, i + 1)
        for row in report["rows"]:
            curve = curve_stats(row, metric)
            steps = np.array(list(curve))
            values = scale * np.array(list(curve.values()))
            color = COLORS.get(row["setting"])
            seeds = (f"mean of {values.shape[1]} seeds" if values.shape[1] > 1
                     else "one seed")
            ax.plot(steps, values.mean(axis=1), color=color, marker="o", markersize=3,
                    label=f"{row['setting']} ({seeds})")
            if values.shape[1] > 1:
                ax.fill_between(steps, values.min(axis=1), values.max(axis=1), color=color,
                                alpha=0.2, linewidth=0)
        ax.set_xlabel("training step (90 images a step)")
        ax.set_ylabel(label)
        ax.set_ylim(50 if scale == 100 else 0.5, None)  # chance level
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("NNS2 from scratch on lfw_dev, offline triplets: semi-hard vs random "
                 "(band: range over seeds)", fontsize=10)
    return save_png(fig, path)


# ---------------------------------------------------------------- embedding size


def _dim(row) -> int:
    return row["network"]["embedding_dim"]


def _embedding_size(report: dict) -> list:
    head = ["embedding", "seeds", "steps", "accuracy", "VAL@1e-3", "AUC",
            "int8 codes: accuracy", "int8 codes: VAL@1e-3", "bytes per face (float32 / int8)",
            "paper VAL@1e-3 (NN1)", "wall min per run"]
    body = [[f"{_dim(r)}-D", len(r["seeds"]), r["steps"], fmt(r["after"]["accuracy_mean"]),
             fmt(r["after"]["val_at_far_1e-3"]), fmt(r["after"]["roc_auc"], False),
             fmt(r["after"]["int8_accuracy_mean"]), fmt(r["after"]["int8_val_at_far_1e-3"]),
             f"{4 * _dim(r)} / {_dim(r)}", _pct(PAPER_EMBEDDING_VAL.get(_dim(r))),
             _minutes(r["wall_seconds"])] for r in report["rows"]]
    return table(head, body) + _common_notes("embedding_size") + [
        "- int8 codes: the same embeddings stored as one signed byte per dimension "
        "(facenet_tf.models.quantize: 128 bytes for 128-D, the paper's compact form), "
        "distances between the decoded codes, thresholds chosen on them.",
        "- paper: Table 5, NN1 trained on its own data, VAL at FAR 1e-3 on its hold-out set."]


def _spread(row: dict, metric: str) -> float:
    """A row's error bar: the std over its seeds, or with one seed the std of accuracy over
    the protocol's folds (VAL and AUC have none: 0)."""
    stat = row["after"][metric]
    if stat.get("n", 1) > 1 and stat["std"] is not None:
        return stat["std"]
    folds = row["after"].get(metric.replace("_mean", "_std")) if metric.endswith(
        "accuracy_mean") else None
    return folds["mean"] if folds else 0.0


def _min_span(ax, span: float) -> None:
    """Widens a y axis to at least `span`, so that noise-sized differences do not fill it."""
    lo, hi = ax.get_ylim()
    if hi - lo < span:
        mid = (lo + hi) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def _spread_note(rows: list) -> str:
    seeds = max(len(r["seeds"]) for r in rows)
    if seeds > 1:
        return f"error bars: std over {seeds} seeds"
    return "one seed; error bars: accuracy's std over the 10 folds"


def plot_embedding_size(report: dict, path: str) -> str:
    """Held-out accuracy and VAL@1e-3 against the embedding size (float32 and int8 codes)."""
    rows = sorted(report["rows"], key=_dim)
    dims = [_dim(r) for r in rows]
    fig = Figure(figsize=(10, 4))
    for i, (metric, label) in enumerate((("accuracy_mean", "held-out accuracy"),
                                         ("val_at_far_1e-3", "held-out VAL at FAR 1e-3"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for prefix, name, style in (("", "float32", "-o"), ("int8_", "int8 codes", "--s")):
            stat = [r["after"][prefix + metric] for r in rows]
            ax.errorbar(dims, [100 * s["mean"] for s in stat],
                        yerr=[100 * _spread(r, prefix + metric) for r in rows], fmt=style,
                        capsize=4, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("embedding dimensions")
        ax.set_ylabel(label + " (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        _min_span(ax, 10)
    fig.suptitle("NNS2 from scratch on lfw_dev, equal budget "
                 f"({rows[0]['steps']} steps); {_spread_note(rows)}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_png(fig, path)


# ---------------------------------------------------------------- training data


def _training_data(report: dict) -> list:
    head = ["training identities", "identities (with 2+ images)", "images (of those)",
            "images per identity with 2+", "seeds", "steps", "accuracy", "VAL@1e-3", "AUC",
            "wall min per run"]
    body = []
    for r in sorted(report["rows"], key=lambda r: r["data"]["num_images"]):
        d = r["data"]
        body.append([f"{d.get('fraction', 1.0):.0%}",
                     f"{d['num_identities']:,} ({d['num_identities_2plus']:,})",
                     f"{d['num_images']:,} ({d['num_images_of_2plus']:,})",
                     f"{d['num_images_of_2plus'] / d['num_identities_2plus']:.1f}",
                     len(r["seeds"]), r["steps"], fmt(r["after"]["accuracy_mean"]),
                     fmt(r["after"]["val_at_far_1e-3"]), fmt(r["after"]["roc_auc"], False),
                     _minutes(r["wall_seconds"])])
    return table(head, body) + _common_notes("training_data") + [
        "- training identities: a seeded subset (data.splits.subset_identities, seed "
        f"{report['protocol']['params']['seed']}) taking that share of the identities with 2+ "
        "images and of the others; the subsets are nested. Only identities with 2+ images "
        "give anchor-positive pairs; the others serve as negatives.",
        "- paper (Table 6, a smaller model; approximate figures from our notes): about "
        + ", ".join(f"{_pct(v)} VAL at {n / 1e6:g}M images" for n, v in PAPER_TRAINING_DATA)
        + "; the final models used 100-200M images of about 8M identities."]


def plot_training_data(report: dict, path: str) -> str:
    """Held-out accuracy and ROC AUC against the number of training images."""
    rows = sorted(report["rows"], key=lambda r: r["data"]["num_images"])
    images = [r["data"]["num_images"] for r in rows]
    fig = Figure(figsize=(10, 4))
    for i, (metric, label, scale) in enumerate((("accuracy_mean", "held-out accuracy (%)", 100),
                                                ("roc_auc", "held-out ROC AUC", 1))):
        ax = fig.add_subplot(1, 2, i + 1)
        stat = [r["after"][metric] for r in rows]
        ax.errorbar(images, [scale * s["mean"] for s in stat],
                    yerr=[scale * _spread(r, metric) for r in rows], fmt="-o", capsize=4)
        for x, s, r in zip(images, stat, rows):
            ax.annotate(f"{r['data'].get('fraction', 1.0):.0%} of identities",
                        (x, scale * s["mean"]), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xticks(images, [f"{n:,}" for n in images])
        ax.minorticks_off()
        ax.set_xlabel("training images")
        ax.set_ylabel(label)
        ax.margins(x=0.15, y=0.2)
        ax.grid(True, alpha=0.3)
        _min_span(ax, 10 if scale == 100 else 0.1)
    fig.suptitle(f"NNS2 from scratch on lfw_dev, {rows[0]['steps']} steps each; "
                 f"{_spread_note(rows)}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_png(fig, path)


# ---------------------------------------------------------------- architecture


def _arch_label(row) -> str:
    n = row["network"]
    return f"{n['architecture'].upper()} {n['input_shape'][0]}x{n['input_shape'][1]}"


def _architecture(report: dict) -> list:
    budget = report["budget_minutes"]
    head = ["network (input)", "parameters", "multiply-adds per image", "steps in budget",
            "images trained on", "train images/s", "inference images/s", "accuracy",
            "VAL@1e-3", "AUC", "CPU s / wall s"]
    body = []
    for r in report["rows"]:
        n, per_step = r["network"], r["images_per_step"]
        train_rate = r["train_images_per_second"]["mean"]
        if r["probe"]:
            would = (f"~{60 * budget * train_rate / per_step:,.0f} (probe)" if train_rate
                     else "n/a")
            seen, scores = "-", ["-", "-", "-"]
        else:
            would, seen = f"{r['steps']:,}", f"{r['steps'] * per_step:,}"
            scores = [fmt(r["after"]["accuracy_mean"]), fmt(r["after"]["val_at_far_1e-3"]),
                      fmt(r["after"]["roc_auc"], False)]
        cpu = [c for c in r["cpu_seconds"] if c is not None]
        body.append([_arch_label(r), f"{n['params'] / 1e6:.1f}M",
                     f"{n['flops'] / 1e6:,.0f}M", would, seen,
                     f"{train_rate:.0f}" if train_rate else "n/a",
                     f"{r['inference_images_per_second']['mean']:.0f}", *scores,
                     f"{sum(cpu):,.0f} / {sum(r['wall_seconds']):,.0f}" if cpu else "n/a"])
    paper = table(["paper network", "parameters", "FLOPS per image", "VAL@1e-3"],
                  [[name, f"{p / 1e6:g}M" if p else "n/a", f"{f / 1e6:,.0f}M" if f else "n/a",
                    _pct(v)] for name, p, f, v in PAPER_ARCHITECTURES])
    return table(head, body) + ["", "The paper's (Table 3 / Figure 4, its own hold-out set):",
                                ""] + paper + _common_notes("architecture") + [
        f"- budget: {budget:g} minutes of wall clock per network for training and mining "
        "(TrainConfig.max_train_seconds; the held-out evaluations are not counted), Adam at a "
        "constant learning rate, offline semi-hard triplets re-mined every "
        f"{report['trainer_settings']['remine_every_steps']} steps, "
        f"{report['rows'][0]['images_per_step']} images a step.",
        "- multiply-adds: facenet_tf.models.model_card (convolutions and dense layers; the "
        "paper's FLOPS column counts the same way; TF's profiler counts 2 FLOPs per "
        "multiply-add).",
        "- train images/s: model.fit with its input pipeline (mining not included), over the "
        "checkpoint intervals after the first; inference images/s: the exported SavedModel "
        "embedding 512 held-out images in batches of 64, decoding included. Measured on a "
        "2-core machine other work shared: CPU s / wall s below 2 means the run got less than "
        "both cores.",
        "- probe rows: 10 steps on one mined subset, for the speeds only; 'steps in budget' is "
        "what that training speed would give in the budget, mining not counted."]


# Label offsets (points) that keep the paper's close points apart: NN1 and NN2 share 1.6B
# FLOPS, NN4 and NNS1 are at 285M and 220M.
PAPER_LABEL_OFFSETS = {"NN1": (10, -22), "NN2": (-62, 6), "NN4": (10, -4), "NNS1": (-78, 0),
                       "NNS2": (10, -4)}


def plot_architecture(report: dict, path: str) -> str:
    """The paper's Figure 4 for our runs: held-out accuracy against multiply-adds per image
    (log x, marker area by parameters), beside the paper's VAL against FLOPS."""
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot(1, 2, 1)
    trained = sorted((r for r in report["rows"] if not r["probe"]),
                     key=lambda r: r["network"]["flops"])
    for i, r in enumerate(trained):
        x, y = r["network"]["flops"], 100 * r["after"]["accuracy_mean"]["mean"]
        ax.scatter([x], [y], s=30 + 20 * r["network"]["params"] / 1e6, alpha=0.6)
        ax.annotate(f"{_arch_label(r)}\n{r['network']['params'] / 1e6:.1f}M params, "
                    f"{r['steps']:,} steps", (x, y), textcoords="offset points",
                    xytext=(10, 10 if i % 2 else -22), fontsize=8)
    ax.set_xlabel("multiply-adds per image (log)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"ours: {report['budget_minutes']:g} min of training each on 2 CPU cores",
                 fontsize=10)
    ax.margins(y=0.3)
    ax2 = fig.add_subplot(1, 2, 2)
    for name, params, flops, val in PAPER_ARCHITECTURES:
        if flops is None:
            continue
        ax2.scatter([flops], [100 * val], s=30 + 20 * min(params, 30e6) / 1e6, alpha=0.6)
        ax2.annotate(f"{name}\n{params / 1e6:g}M params", (flops, 100 * val),
                     textcoords="offset points", xytext=PAPER_LABEL_OFFSETS[name], fontsize=8)
    ax2.set_xlabel("FLOPS per image (log)")
    ax2.set_ylabel("VAL at FAR 1e-3 (%)")
    ax2.set_title("the paper's Figure 4 (its hold-out set, 1,000-2,000 CPU-hours)",
                  fontsize=10)
    ax2.margins(y=0.2)
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlim(5e6, 1e10)
        a.grid(True, alpha=0.3, which="both")
    fig.suptitle("Accuracy against compute per image (marker area grows with parameters)",
                 fontsize=10)
    return save_png(fig, path)


BODIES = {"finetune": _finetune, "selection": _selection, "selection_full": _selection_full,
          "embedding_size": _embedding_size, "training_data": _training_data,
          "architecture": _architecture}
TITLES = {"finetune": "finetune", "selection": "selection",
          "selection_full": "semi-hard against random at the full budget",
          "embedding_size": "embedding size", "training_data": "amount of training data",
          "architecture": "architecture at an equal wall-clock budget"}
PLOTS = {"selection_full": plot_selection_full, "embedding_size": plot_embedding_size,
         "training_data": plot_training_data, "architecture": plot_architecture}


def analysis(recipe: str, report: dict) -> dict:
    """What the report adds beyond its rows: selection_full's answer (semi-hard against
    random, step by step)."""
    if recipe == "selection_full" and len(report["rows"]) == 2:
        return {"answer": selection_answer(report["rows"])}
    return {}


def markdown(recipe: str, report: dict) -> str:
    """The results file of `recipe`: protocol, table(s), notes, commands."""
    lines = protocol_lines(TITLES[recipe], report["protocol"]) + BODIES[recipe](report)
    return "\n".join(lines + command_lines(report)) + "\n"

