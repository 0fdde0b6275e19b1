"""The converted pretrained CASIA-WebFace model, served as exported, on LFW View 1 training
pairs (pairsDevTrain) over the raw lfw_dev images, center-cropped (the export's default)."""

import os

import pytest

from facenet_tf.data import pairs as pairs_lib

# Every 4th matched and every 4th mismatched pair: 550 of the 2,200, to keep the test short.
# The full file is measured by the README's command (97.0% center-cropped, 2026-12-01); the
# shared environment note measured 97.1% on held-out LFW pairs with the same preprocessing.
EVERY = 4


@pytest.mark.integration
@pytest.mark.slow
def test_pretrained_export_reaches_95_percent_on_pairs_dev_train(lfw_dir, tmp_path):
    from facenet_tf.evaluation import protocols
    from facenet_tf.inference.embedders import load_embedder
    from facenet_tf.models import frozen_graph
    from facenet_tf.serving import saved_model
    try:
        model = frozen_graph.build_pretrained_model()
    except frozen_graph.PretrainedNotFoundError as e:
        pytest.skip(f"pretrained weights not available: {e}")
    assert frozen_graph.PRETRAINED_PREPROCESS.standardization == "fixed"
    every = pairs_lib.read_pairs(os.path.join(lfw_dir, "pairsDevTrain.txt"))
    same = [p for p in every if p.issame][::EVERY]
    different = [p for p in every if not p.issame][::EVERY]
    pairs_path = str(tmp_path / "pairs.txt")
    pairs_lib.write_pairs(pairs_path, same + different)
    path = saved_model.export_saved_model(model, str(tmp_path / "pretrained"),
                                       frozen_graph.PRETRAINED_PREPROCESS)
    r = protocols.evaluate_pairs_file(load_embedder(path), pairs_path,
                                      os.path.join(lfw_dir, "images"), batch_size=32)
    assert r["num_pairs"] == len(same) + len(different) == 550
    assert r["accuracy_mean"] >= 0.95
    assert abs(r["int8_accuracy_mean"] - r["accuracy_mean"]) <= 0.005
