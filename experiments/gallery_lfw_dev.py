r"""Gallery decisions measured on lfw_dev (issue 26): which identity rule, which threshold,
and the confidence fit, for one model (default: the pretrained FaceNet).

    python -m experiments.gallery_lfw_dev                  # pretrained, runs/lfw_dev
    python -m experiments.gallery_lfw_dev --model runs/x/saved_model --nowrite_packaged

The held-out protocol of experiments/protocol.py (aligned crops, seed 0, 400 held-out
identities) splits the people in two:
- calibration people: the training side's identities with 2+ images. A seeded half of them is
  enrolled (the first k images each), the other half are strangers; every other image is a
  probe. Here the rules are compared, the threshold is set (FAR_TARGET of the strangers named)
  and the confidence is fitted (Platt, recognition.calibration.fit_platt, on trials pooled
  over k in GALLERY_SIZES, genuine probes and strangers weighted half and half).
- held-out people: the 400 held-out identities enrolled (first k), their other images as
  probes, and the training side's one-image identities (never used above) as strangers.
  Here everything is measured again: rank-1/5, DIR at FAR 1% and 0.1%, DIR and FAR at the
  fitted threshold, and the reliability of the confidence (table, Brier score, ECE).
Writes WORK_DIR/gallery_results.{md,json} (copied to experiments/results/) and, with
--write_packaged, the calibration to facenet_tf/recognition/calibrations/FINGERPRINT.json.
Also leaves WORK_DIR/strangers/ (the one-image identities' crops), the distractor folder of
`python -m facenet_tf.evaluate --identification`.
"""

import dataclasses
import os
import shutil
import time

import numpy as np
from absl import flags

from experiments.protocol import LFW_IMAGES, REPO_ROOT, default_params, prepare_data, stage
from facenet_tf import _cli
from facenet_tf.common import io_utils, runinfo
from facenet_tf.data.image_files import list_images
from facenet_tf.recognition import identification as ident
from facenet_tf.evaluation.protocols import identity_labels
from facenet_tf.inference.batch_embed import embed_files
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import calibration as calibration_lib
from facenet_tf.recognition import decision

GALLERY_SIZES = (1, 2, 3, 5)
FAR_TARGET = 0.01
# Images used per identity (the first ones): a few people have hundreds of photos in LFW
# (George W Bush 530, Colin Powell 236), who would otherwise be most of the probes.
MAX_IMAGES_PER_IDENTITY = 10
RESULTS_DIR = os.path.join(REPO_ROOT, "experiments", "results")


def embed_protocol(work: str, protocol: dict, model: str) -> dict:
    """Embeddings of every aligned crop, each taken whole as the photo commands embed faces
    (cached in WORK/embeddings-FINGERPRINT.npz): paths, identities, which side
    (train/heldout)."""
    embedder = load_embedder(model)
    # The crops are faces already (aligned as the photo commands align them): taken whole.
    embedder = embedder.with_preprocess(dataclasses.replace(embedder.preprocess,
                                                            crop_fraction=1.0))
    cache = os.path.join(work, f"embeddings-{embedder.fingerprint}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            return {k: z[k] for k in z.files} | {"embedder": embedder}
    arrays = {}
    for side, root in (("train", protocol["train_images_root"]),
                       ("heldout", protocol["heldout_images_root"])):
        paths = list_images(root)
        stage(f"embed {len(paths)} {side} crops with {model}")
        arrays[side] = (paths, identity_labels(paths, root), embed_files(embedder, paths))
    out = {"paths": np.array(arrays["train"][0] + arrays["heldout"][0]),
           "labels": np.array(arrays["train"][1] + arrays["heldout"][1]),
           "side": np.array(["train"] * len(arrays["train"][0])
                            + ["heldout"] * len(arrays["heldout"][0])),
           "embeddings": np.concatenate([arrays["train"][2], arrays["heldout"][2]])}
    np.savez(cache, **out)
    return out | {"embedder": embedder}


def calibration_trials(emb, labels, k: int, rule: str, seed: int) -> ident.Trials:
    """Trials on the calibration people: a seeded half enrolled (first k images), the other
    half strangers (all their images)."""
    names = np.unique(labels)
    strangers = set(names[np.random.RandomState(seed).permutation(len(names))[len(names) // 2:]])
    is_stranger = np.array([label in strangers for label in labels])
    gallery, probes, _ = ident.split_gallery_probes(labels[~is_stranger], k,
                                                    singletons_are_distractors=False)
    enrolled_emb, enrolled_lab = emb[~is_stranger], labels[~is_stranger]
    return ident.identification_trials(enrolled_emb[gallery], enrolled_lab[gallery],
                                       enrolled_emb[probes], enrolled_lab[probes],
                                       emb[is_stranger], rule)


def heldout_trials(emb, labels, stranger_emb, k: int, rule: str) -> ident.Trials:
    gallery, probes, _ = ident.split_gallery_probes(labels, k,
                                                    singletons_are_distractors=False)
    return ident.identification_trials(emb[gallery], labels[gallery], emb[probes],
                                       labels[probes], stranger_emb, rule)


def pooled(trials_list: list):
    """Trials of several galleries pooled, each gallery's balanced weights counting equally:
    (distances, correct, genuine, weights)."""
    d = np.concatenate([t.distance for t in trials_list])
    c = np.concatenate([t.correct for t in trials_list])
    g = np.concatenate([t.genuine for t in trials_list])
    w = np.concatenate([t.balanced_weights() / len(trials_list) for t in trials_list])
    return d, c, g, w


def run(model: str, work: str, images: str, seed: int) -> dict:
    started = time.time()
    protocol = prepare_data(work, default_params(images))
    data = embed_protocol(work, protocol, model)
    embedder = data["embedder"]
    capped = _first_per_identity(data["labels"], MAX_IMAGES_PER_IDENTITY)
    emb, labels, side = data["embeddings"][capped], data["labels"][capped], data["side"][capped]
    paths = data["paths"][capped]
    train = side == "train"
    counts = {n: c for n, c in zip(*np.unique(labels[train], return_counts=True))}
    multi = train & np.array([counts.get(label, 0) >= 2 for label in labels])
    single = train & ~multi
    held = side == "heldout"
    cal_emb, cal_lab = emb[multi], labels[multi]
    held_emb, held_lab, stranger_emb = emb[held], labels[held], emb[single]
    _strangers_folder(work, paths[single], labels[single])

    stage("compare the identity rules on the calibration people")
    rules = {}
    for rule in decision.RULES:
        rows = {}
        for k in GALLERY_SIZES:
            cal = ident.identification_metrics(calibration_trials(cal_emb, cal_lab, k, rule,
                                                                  seed))
            held_m = ident.identification_metrics(heldout_trials(held_emb, held_lab,
                                                                 stranger_emb, k, rule))
            rows[k] = {"calibration": _short(cal), "heldout": _short(held_m)}
        rules[rule] = rows
    # The rule with the best mean DIR at FAR 1% over k >= 2 on the calibration people
    # (k = 1 is the same for every rule); ties go to the earlier rule of decision.RULES.
    score = {r: np.mean([rules[r][k]["calibration"]["dir_at_far_0.01"]
                         for k in GALLERY_SIZES if k >= 2]) for r in decision.RULES}
    best_rule = max(decision.RULES, key=lambda r: (round(score[r], 4),
                                                   -decision.RULES.index(r)))

    stage(f"fit threshold (FAR {FAR_TARGET:g}) and confidence for rule {best_rule}")
    cal_trials = [calibration_trials(cal_emb, cal_lab, k, best_rule, seed)
                  for k in GALLERY_SIZES]
    d, c, g, w = pooled(cal_trials)
    intercept, slope = calibration_lib.fit_platt(d, c, w)
    threshold = round(calibration_lib.threshold_at_far(d[~g], FAR_TARGET), 3)
    calibration = calibration_lib.Calibration(
        fingerprint=embedder.fingerprint, rule=best_rule, threshold=threshold,
        intercept=round(intercept, 4), slope=round(slope, 4),
        note=(f"experiments/gallery_lfw_dev.py on lfw_dev aligned crops: rule with the best "
              f"DIR at FAR 1% on {len(np.unique(cal_lab))} calibration identities (half "
              f"enrolled, half strangers, k = {', '.join(map(str, GALLERY_SIZES))} images "
              f"each, at most {MAX_IMAGES_PER_IDENTITY} images a person); threshold naming "
              f"{FAR_TARGET:.0%} of their strangers; confidence: Platt fit on their trials, "
              "enrolled and stranger probes weighted equally; docs/recognition.md"))

    stage("measure on the held-out people")
    heldout = {}
    for k in GALLERY_SIZES:
        t = heldout_trials(held_emb, held_lab, stranger_emb, k, best_rule)
        m = ident.identification_metrics(t)
        m["at_threshold"] = ident.open_set_rates(t, threshold)
        m["reliability"] = ident.reliability(calibration.confidence(t.distance), t.correct,
                                             t.balanced_weights())
        heldout[k] = m
    held_pool = [heldout_trials(held_emb, held_lab, stranger_emb, k, best_rule)
                 for k in GALLERY_SIZES]
    hd, hc, _, hw = pooled(held_pool)
    pooled_reliability = ident.reliability(calibration.confidence(hd), hc, hw)
    measured = {"heldout_pooled": {"brier": round(pooled_reliability["brier"], 4),
                                   "ece": round(pooled_reliability["ece"], 4)},
                "heldout_at_threshold": {str(k): {key: round(v, 4) for key, v in
                                                  heldout[k]["at_threshold"].items()}
                                         for k in GALLERY_SIZES}}
    calibration = calibration_lib.Calibration(**{**calibration.to_dict(),
                                                 "measured": measured})
    report = {"model": model, "fingerprint": embedder.fingerprint, "seed": seed,
              "protocol": {k: protocol[k] for k in ("params", "num_train_identities",
                                                    "num_heldout_images")},
              "num_calibration_identities": len(np.unique(cal_lab)),
              "num_calibration_images": int(multi.sum()),
              "num_heldout_identities": len(np.unique(held_lab)),
              "num_heldout_images": int(held.sum()),
              "num_strangers": int(single.sum()), "gallery_sizes": list(GALLERY_SIZES),
              "rules": rules, "rule_scores": score, "best_rule": best_rule,
              "calibration": calibration.to_dict(), "heldout": heldout,
              "heldout_pooled_reliability": pooled_reliability,
              "seconds": round(time.time() - started, 1), "run": runinfo.collect()}
    return report


def _first_per_identity(labels, limit: int) -> np.ndarray:
    """Indices of the first `limit` images of each identity (in the given order)."""
    seen, keep = {}, []
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] <= limit:
            keep.append(i)
    return np.array(keep, np.int64)


def _strangers_folder(work: str, paths, labels) -> str:
    """WORK/strangers/<identity>/<crop>: the one-image identities, as a distractor folder."""
    root = os.path.join(work, "strangers")
    if os.path.isdir(root) and len(list_images(root)) == len(paths):
        return root
    shutil.rmtree(root, ignore_errors=True)
    for path, label in zip(paths, labels):
        os.makedirs(os.path.join(root, label), exist_ok=True)
        dst = os.path.join(root, label, os.path.basename(path))
        try:
            os.link(path, dst)
        except OSError:
            shutil.copy2(path, dst)
    return root


def _short(metrics: dict) -> dict:
    return {"rank_1": metrics["rank_1"], "rank_5": metrics["rank_5"],
            "dir_at_far_0.01": metrics["dir_at_far"]["0.01"]["dir"],
            "dir_at_far_0.001": metrics["dir_at_far"]["0.001"]["dir"],
            "genuine_probes": metrics["num_genuine_probes"],
            "strangers": metrics["num_distractor_probes"]}


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def markdown(report: dict) -> str:
    cal = report["calibration"]
    lines = [f"# Gallery decisions on lfw_dev ({report['model']}, model {report['fingerprint']})",
             "", f"`python -m experiments.gallery_lfw_dev`, seed {report['seed']}, "
             f"{report['run']['git_revision'][:10]}, {report['seconds'] / 60:.1f} min. "
             f"At most {MAX_IMAGES_PER_IDENTITY} images a person (the first). "
             f"Calibration people: {report['num_calibration_identities']} training-side "
             f"identities with 2+ images ({report['num_calibration_images']} crops), half "
             f"enrolled and half strangers. Held-out people: "
             f"{report['num_heldout_identities']} identities ({report['num_heldout_images']} "
             f"crops) enrolled, strangers: {report['num_strangers']} one-image identities.",
             "", "## Identity rule (k = images enrolled per person)", "",
             "| rule | k | calibration rank-1 | calibration DIR@FAR1% | held-out rank-1 | "
             "held-out DIR@FAR1% | held-out DIR@FAR0.1% |", "|---|---|---|---|---|---|---|"]
    for rule, rows in report["rules"].items():
        for k, row in rows.items():
            c, h = row["calibration"], row["heldout"]
            lines.append(f"| {rule} | {k} | {pct(c['rank_1'])} | {pct(c['dir_at_far_0.01'])} "
                         f"| {pct(h['rank_1'])} | {pct(h['dir_at_far_0.01'])} | "
                         f"{pct(h['dir_at_far_0.001'])} |")
    lines += ["", f"Chosen: **{report['best_rule']}** (best mean calibration DIR@FAR1% over "
              f"k >= 2: " + ", ".join(f"{r} {100 * s:.2f}%" for r, s in
                                      report["rule_scores"].items()) + ").", "",
              "## Threshold and confidence", "",
              f"Threshold {cal['threshold']} (squared L2, rule {cal['rule']}); confidence = "
              f"1 / (1 + exp(-({cal['intercept']} + {cal['slope']} x distance))).", "",
              "| k | held-out rank-1 | rank-5 | DIR@FAR1% | DIR@FAR0.1% | DIR at threshold | "
              "FAR at threshold | Brier | ECE |", "|---|---|---|---|---|---|---|---|---|"]
    for k, m in report["heldout"].items():
        lines.append(f"| {k} | {pct(m['rank_1'])} | {pct(m['rank_5'])} | "
                     f"{pct(m['dir_at_far']['0.01']['dir'])} | "
                     f"{pct(m['dir_at_far']['0.001']['dir'])} | "
                     f"{pct(m['at_threshold']['dir'])} | {pct(m['at_threshold']['far'])} | "
                     f"{m['reliability']['brier']:.4f} | {m['reliability']['ece']:.4f} |")
    rel = report["heldout_pooled_reliability"]
    lines += ["", "Reliability on the held-out people (k pooled, enrolled and stranger probes "
              f"weighted equally): Brier {rel['brier']:.4f}, ECE {rel['ece']:.4f}.", "",
              "| confidence | trials | mean confidence | names right |", "|---|---|---|---|"]
    for b in rel["bins"]:
        lines.append(f"| {b['bin']} | {b['trials']} | {b['confidence']:.3f} | "
                     f"{b['right']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    f = flags.FLAGS
    report = run(f.model, f.work_dir, f.images, f.seed)
    text = markdown(report)
    bases = [os.path.join(f.work_dir, "gallery_results")]
    if f.write_results:
        bases.append(os.path.join(RESULTS_DIR, "gallery_lfw_dev"))
    for base in bases:  # BASE.json and BASE.md, each written atomically
        io_utils.write_json_atomic(base + ".json", report)
        io_utils.write_bytes_atomic(base + ".md", text.encode())
    if f.write_packaged:
        path = os.path.join(calibration_lib.CALIBRATIONS_DIR, f"{report['fingerprint']}.json")
        os.makedirs(calibration_lib.CALIBRATIONS_DIR, exist_ok=True)
        calibration_lib.write_calibration(
            path, calibration_lib.Calibration.from_dict(report["calibration"]))
        print(f"wrote {path}")
    print(text)


def _define_flags():
    flags.DEFINE_string("model", "pretrained", "The model: SavedModel dir, .keras, .tflite or "
                        "'pretrained'.")
    flags.DEFINE_string("images", LFW_IMAGES, "Identity-per-folder photos (default: lfw_dev).")
    flags.DEFINE_string("work_dir", "runs/lfw_dev", "The prepared protocol (experiments."
                        "protocol; shared with experiments.lfw_dev) and the results.")
    flags.DEFINE_integer("seed", 0, "Seed of the enrolled/stranger halves of the "
                         "calibration people.")
    flags.DEFINE_bool("write_packaged", True, "Write the calibration beside the library "
                      "(facenet_tf/recognition/calibrations/FINGERPRINT.json).")
    flags.DEFINE_bool("write_results", True, "Copy the results to experiments/results/.")


if __name__ == "__main__":
    _define_flags()
    _cli.run(main, __name__)
