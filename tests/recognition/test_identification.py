"""Identification metrics on cases computed by hand: the gallery/probe split, rank-k and CMC,
DIR at FAR, reliability, the Platt fit and the threshold at a false-alarm rate."""

import os

import numpy as np
import pytest

from facenet_tf.recognition import identification as ident
from facenet_tf.inference.embedders import network_embedder
from facenet_tf.recognition import calibration as calibration_lib
from tests.conftest import make_image_folder, make_tiny_embedding_model


def _points(xs):
    return np.array([[x, 0.0] for x in xs], np.float32)


def test_split_gallery_probes_by_hand():
    labels = ["a", "a", "a", "b", "c", "c"]
    gallery, probes, distractors = ident.split_gallery_probes(labels, 2)
    assert (list(gallery), list(probes), list(distractors)) == ([0, 1, 4, 5], [2], [3])
    gallery, probes, distractors = ident.split_gallery_probes(labels, 1, False)
    assert (list(gallery), list(probes), list(distractors)) == ([0, 3, 4], [1, 2, 5], [])


def test_rank_dir_and_far_by_hand():
    # On a line, squared distances: A at 0, B at 10 enrolled.
    # Genuine: A@1 -> A 1 (right); B@4 -> A 16 < B 36 (wrong, B is rank 2); A@-3 -> A 9.
    # Strangers: @5 -> A 25 = B 25 (tie: A, the first); @12 -> B 4; @30 -> B 400.
    trials = ident.identification_trials(_points([0, 10]), ["A", "B"], _points([1, 4, -3]),
                                         ["A", "B", "A"], _points([5, 12, 30]), "nearest")
    assert list(trials.rank) == [1, 2, 1]
    assert list(trials.correct) == [True, False, True, False, False, False]
    assert list(trials.named) == ["A", "A", "A", "A", "B", "B"]
    np.testing.assert_allclose(trials.distance, [1, 16, 9, 25, 4, 400])
    m = ident.identification_metrics(trials, ranks=(1, 5), fars=(0.01, 0.34), max_rank=3)
    assert m["rank_1"] == pytest.approx(2 / 3) and m["rank_5"] == 1.0
    assert m["cmc"] == pytest.approx([2 / 3, 1.0, 1.0])
    # FAR 1% of 3 strangers: none may be named, so the threshold is just under 4.
    assert m["dir_at_far"]["0.01"]["dir"] == pytest.approx(1 / 3)
    assert m["dir_at_far"]["0.01"]["far"] == 0.0
    assert 3.99 < m["dir_at_far"]["0.01"]["threshold"] < 4.0
    # FAR 34%: one stranger (at 4) may be named: threshold just under 25.
    assert m["dir_at_far"]["0.34"]["dir"] == pytest.approx(2 / 3)
    assert m["dir_at_far"]["0.34"]["far"] == pytest.approx(1 / 3)
    at_10 = ident.open_set_rates(trials, 10.0)
    assert (at_10["dir"], at_10["far"]) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    w = trials.balanced_weights()
    np.testing.assert_allclose(w, [1 / 6] * 3 + [1 / 6] * 3)


def test_reliability_by_hand():
    r = ident.reliability([0.05, 0.15, 0.95, 0.9], [0, 1, 1, 1], bins=10)
    assert [(b["bin"], b["trials"]) for b in r["bins"]] == [("0.0-0.1", 1), ("0.1-0.2", 1),
                                                            ("0.9-1.0", 2)]
    assert r["bins"][2]["confidence"] == pytest.approx(0.925) and r["bins"][2]["right"] == 1
    assert r["brier"] == pytest.approx((0.05 ** 2 + 0.85 ** 2 + 0.05 ** 2 + 0.1 ** 2) / 4)
    assert r["ece"] == pytest.approx(0.25 * 0.05 + 0.25 * 0.85 + 0.5 * 0.075)


def test_platt_fit_recovers_the_logistic_that_made_the_data():
    rng = np.random.RandomState(0)
    d = rng.uniform(0, 2, 20000)
    right = rng.uniform(size=d.size) < 1 / (1 + np.exp(-(6.0 - 5.0 * d)))
    intercept, slope = calibration_lib.fit_platt(d, right)
    assert intercept == pytest.approx(6.0, abs=0.3) and slope == pytest.approx(-5.0, abs=0.3)
    with pytest.raises(ValueError, match="both right and wrong"):
        calibration_lib.fit_platt(d[:5], np.ones(5, bool))


def test_threshold_at_far_by_hand():
    strangers = [0.9, 0.5, 1.4, 0.7]
    assert calibration_lib.threshold_at_far(strangers, 0.0) == np.nextafter(0.5, 0)
    assert calibration_lib.threshold_at_far(strangers, 0.25) == np.nextafter(0.7, 0)
    assert calibration_lib.threshold_at_far(strangers, 1.0) == float("inf")


def test_the_folder_protocol_splits_embeds_and_plots(tmp_path):
    root = make_image_folder(tmp_path / "faces", num_identities=4, images_per_identity=3,
                             size=(32, 32))
    loners = make_image_folder(tmp_path / "loners", num_identities=2, images_per_identity=1,
                               size=(32, 32), seed=7)
    for name in os.listdir(loners):  # two one-image identities: the distractors
        os.rename(os.path.join(loners, name), os.path.join(root, f"z{name}"))
    embedder = network_embedder(make_tiny_embedding_model((32, 32, 3)), threshold=0.5)
    result = ident.evaluate_identification_folder(embedder, root, gallery_size=2,
                                                  plots_dir=str(tmp_path / "plots"))
    assert (result["num_enrolled_identities"], result["num_gallery_faces"],
            result["num_genuine_probes"], result["num_distractor_probes"]) == (4, 8, 4, 2)
    assert os.path.getsize(tmp_path / "plots" / "cmc.png") > 0
    assert result["at_threshold"]["threshold"] == 0.5 and "reliability" not in result
    # The same numbers from the embeddings directly.
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    emb = embedder.embed_encoded([open(p, "rb").read() for p in paths])
    labels = np.array([os.path.basename(os.path.dirname(p)) for p in paths])
    g, p, d = ident.split_gallery_probes(labels, 2)
    direct = ident.identification_trials(emb[g], labels[g], emb[p], labels[p], emb[d],
                                         result["rule"])
    assert result["rank_1"] == pytest.approx(np.mean(direct.rank == 1))
