"""The converted pretrained CASIA-WebFace model on LFW View 1 training pairs (issue 8)."""

import os

import pytest


@pytest.mark.integration
@pytest.mark.slow
def test_pretrained_model_reaches_94_percent_on_pairs_dev_train(lfw_dir, tmp_path):
    from facenet_tf.evaluation import protocols
    from facenet_tf.models import pretrained
    from facenet_tf.serving import exporter
    try:
        model = pretrained.build_pretrained_model()
    except pretrained.PretrainedNotFoundError as e:
        pytest.skip(f"pretrained weights not available: {e}")
    path = exporter.export_saved_model(model, str(tmp_path / "pretrained"),
                                       pretrained.PRETRAINED_PREPROCESS)
    r = protocols.evaluate_model(path, os.path.join(lfw_dir, "pairsDevTrain.txt"),
                                  os.path.join(lfw_dir, "images"), batch_size=32)
    assert r["num_pairs"] == 2200
    assert r["accuracy_mean"] >= 0.94
    assert abs(r["int8_accuracy_mean"] - r["accuracy_mean"]) <= 0.005
