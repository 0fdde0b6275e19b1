"""The issue-28 studies' recipes, tables, answer and plots (experiments.lfw_dev, .studies),
without training: rows made from hand-written runs, numbers worked out by hand."""

import numpy as np
import pytest
from PIL import Image

from experiments import lfw_dev, studies
from experiments.runs import Setting, recipe_settings, summarise_row

PROTOCOL = {"num_pairs": 3000, "num_matched_pairs": 1500, "heldout_identities": ["a"] * 400,
            "num_heldout_images": 2535, "num_train_images": 7957, "num_train_identities": 4386,
            "num_train_identities_2plus": 862, "num_no_face": 0, "num_unreadable": 0,
            "params": {"num_folds": 10, "seed": 0, "images": "lfw", "align": True}}


def _run(seed, accuracy, curve=(), dim=128, steps=3000, train_rate=300.0):
    metrics = {"accuracy_mean": accuracy, "accuracy_std": 0.01, "val_at_far_1e-3": accuracy / 10,
               "roc_auc": accuracy + 0.1}
    return {"seed": seed, "step": steps, "generations": 6, "wall_seconds": 600.0,
            "cpu_seconds": 1000.0, "trainer_flags": ["--x=1"], "setting": "s",
            "before": dict(metrics), "after": {**metrics, **{f"int8_{k}": v - 0.001
                                                             for k, v in metrics.items()}},
            "evals": [{"step": s, "accuracy_mean": a, "roc_auc": a + 0.1,
                       "val_at_far_1e-3": a / 10} for s, a in curve],
            "network": {"architecture": "nns2", "input_shape": [96, 96, 3],
                        "embedding_dim": dim, "params": 4_300_000, "flops": 20_000_000},
            "train_images_per_second": train_rate, "inference_images_per_second": 900.0,
            "fraction_active_mean": 0.5, "fraction_active_last": 0.4,
            "heldout_d_same": 0.3, "heldout_d_diff": 0.9, "collapsed": False}


def _report(recipe, rows, runs, **extra):
    return {"recipe": recipe, "protocol": PROTOCOL, "rows": rows, "runs": runs,
            "command": "python -m experiments.lfw_dev", "wall_minutes": 1.0,
            "run_info": {"git_revision": "abc"}, "budget_minutes": None,
            "trainer_settings": {"remine_every_steps": 500}, **extra}


def _row(name, runs, **extra):
    return {**summarise_row(Setting(name), runs, 90), "probe": False, **extra}


def test_the_answer_compares_the_curves_step_by_step():
    semi = [_run(s, a[-1][1], a) for s, a in enumerate([
        [(0, 0.5), (250, 0.70), (500, 0.80)], [(0, 0.5), (250, 0.72), (500, 0.81)],
        [(0, 0.5), (250, 0.74), (500, 0.82)]])]
    rand = [_run(s, a[-1][1], a) for s, a in enumerate([
        [(0, 0.5), (250, 0.60), (500, 0.80)], [(0, 0.5), (250, 0.61), (500, 0.81)],
        [(0, 0.5), (250, 0.62), (500, 0.82)]])]
    answer = studies.selection_answer([_row("offline_semi_hard", semi),
                                       _row("offline_random", rand)])
    at250, at500 = answer["per_step"]
    assert at250["step"] == 250 and at250["difference"] == pytest.approx(0.72 - 0.61)
    assert at250["welch_p"] < 0.01       # 0.72 ± 0.02 against 0.61 ± 0.01
    assert at500["difference"] == pytest.approx(0.0) and at500["welch_p"] == pytest.approx(1.0)
    # 95% of the lower final mean (0.81) is 0.7695: semi-hard's mean passes it at step 500
    # only (0.72 at 250), random's too.
    assert answer["level"] == pytest.approx(0.95 * 0.81)
    assert answer["steps_to_level"] == {"offline_semi_hard": 500, "offline_random": 500}
    assert studies.welch_p([0.5], [0.6, 0.7]) is None


def test_embedding_size_table_and_plot(tmp_path):
    rows = [_row(f"dim{d}", [_run(s, a, dim=d) for s, a in enumerate(accs)])
            for d, accs in ((64, [0.70]), (128, [0.70, 0.71, 0.72]), (256, [0.74]))]
    report = _report("embedding_size", rows, [])
    text = studies.markdown("embedding_size", report)
    # 128-D: mean 71.0%, sample std 1.0 point; int8 codes 0.1 point lower; 4 bytes a float.
    assert ("| 128-D | 3 | 3000 | 71.0% ± 1.0 | 7.1% ± 0.1 | 0.810 ± 0.010 | 70.9% ± 1.0 |"
            in text)
    assert "| 512 / 128 | 87.9% |" in text and "| 64-D | 1 |" in text
    path = studies.plot_embedding_size(report, str(tmp_path / "e.png"))
    assert Image.open(path).size[0] > 500


def test_architecture_table_gives_a_probe_its_steps_in_the_budget(tmp_path):
    trained = _row("nns2_140x116", [_run(0, 0.75, [(0, 0.5), (500, 0.75)], steps=2000)])
    probe_run = {**_run(0, 0.5, steps=20, train_rate=30.0), "before": None, "after": None}
    probe = _row("nn2_224x224", [probe_run], probe=True)  # no held-out pairs
    probe["network"] = {**probe["network"], "architecture": "nn2",
                        "input_shape": [224, 224, 3], "flops": 1_600_000_000}
    report = _report("architecture", [trained, probe], [], budget_minutes=12.0)
    text = studies.markdown("architecture", report)
    # 12 min x 60 s x 30 images/s / 90 images a step = 240 steps; 2,000 x 90 images trained.
    assert "| NN2 224x224 | 4.3M | 1,600M | ~240 (probe) | - |" in text
    assert "| NNS2 96x96 | 4.3M | 20M | 2,000 | 180,000 | 300 | 900 | 75.0% |" in text
    assert "re-mined every 500 steps" in text
    path = studies.plot_architecture(report, str(tmp_path / "a.png"))
    assert Image.open(path).size[0] > 500


def test_selection_and_training_data_plots(tmp_path):
    curve = [(0, 0.5), (250, 0.7), (500, 0.8)]
    rows = [_row(n, [_run(s, 0.8, curve) for s in range(2)]) for n in
            ("offline_semi_hard", "offline_random")]
    report = _report("selection_full", rows, [])
    report.update(studies.analysis("selection_full", report))
    text = studies.markdown("selection_full", report)
    assert "| 250 | 70.0% | 70.0% | +0.0 points |" in text
    assert Image.open(studies.plot_selection_full(report, str(tmp_path / "s.png"))).size[0] > 500
    data = [{"fraction": f, "num_identities": n, "num_identities_2plus": m,
             "num_images": i, "num_images_of_2plus": j}
            for f, n, m, i, j in ((0.25, 1096, 216, 2000, 1000), (1.0, 4386, 862, 7957, 4400))]
    rows = [_row(f"identities_{d['fraction']}", [_run(0, 0.7)], data=d) for d in data]
    report = _report("training_data", rows, [])
    text = studies.markdown("training_data", report)
    assert "| 25% | 1,096 (216) | 2,000 (1,000) | 4.6 |" in text   # 1,000 / 216
    assert Image.open(studies.plot_training_data(report, str(tmp_path / "t.png"))).size[0] > 500


def _settings(recipe_name, setting, extra=()):
    recipe = lfw_dev.RECIPES[recipe_name]
    return recipe_settings(lfw_dev.setting_args(recipe, setting, extra, budget_minutes=12.0))


def _baseline(recipe_name):
    (setting,) = [s for s in lfw_dev.RECIPES[recipe_name].settings
                  if s.run_name == lfw_dev.BASELINE]
    return setting


def test_the_studies_share_their_baseline_run():
    # Same trainer settings, else run_setting would refuse to reuse the run.
    embedding = _settings("embedding_size", _baseline("embedding_size"))
    assert embedding == _settings("training_data", _baseline("training_data"))
    assert (embedding["steps"], embedding["remine_every_steps"]) == (1000, 250)
    assert embedding["eval_every_steps"] == 250 and embedding["embedding_dim"] == 128
    # At selection_full's budget (the flag file's), the semi-hard seed-0 run is shared too.
    full = ["--steps=3000", "--remine_every_steps=500"]
    assert _settings("embedding_size", _baseline("embedding_size"), full) == _settings(
        "selection_full", _baseline("selection_full"))
    others = [s for s in lfw_dev.RECIPES["embedding_size"].settings
              if s.run_name != lfw_dev.BASELINE]
    assert sorted(_settings("embedding_size", s)["embedding_dim"] for s in others) == [
        64, 256, 512]


def test_the_architecture_recipe_trains_each_network_for_the_budget_at_its_own_input():
    for setting in lfw_dev.RECIPES["architecture"].settings:
        values = _settings("architecture", setting)
        height, width = setting.name.rsplit("_", 1)[1].split("x")
        assert values["input_shape"] == (int(height), int(width), 3)
        assert values["max_train_seconds"] == 720.0 and values["lr_schedule"] == "constant"
        assert values["steps"] == (10 if setting.probe else lfw_dev.UNBOUNDED_STEPS)
    assert np.mean([s.probe for s in lfw_dev.RECIPES["architecture"].settings]) == 0.4
