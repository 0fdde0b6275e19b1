"""TrainConfig validation and the absl entry point's flag mapping."""

import pytest

from facenet_tf.training.config import TrainConfig


def test_defaults_are_the_papers():
    c = TrainConfig(train_data="d", model_dir="m")
    assert (c.optimizer, c.learning_rate, c.alpha, c.embedding_dim) == ("adagrad", 0.05, 0.2, 128)
    assert c.resolved_export_dir == "m/export"


@pytest.mark.parametrize("field,value", [
    ("mining", "sideways"), ("strategy", "hardest"), ("optimizer", "rmsprop"),
    ("batch_size", 0), ("steps", -1), ("learning_rate", 0.0), ("distribution", "tpu")])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(train_data="d", model_dir="m", **{field: value})


def test_eval_pairs_needs_images():
    with pytest.raises(ValueError, match="eval_images"):
        TrainConfig(train_data="d", model_dir="m", eval_pairs="p.txt")


def test_online_batch_must_hold_two_identities():
    with pytest.raises(ValueError, match="images_per_identity"):
        TrainConfig(train_data="d", model_dir="m", mining="online", batch_size=10,
                    images_per_identity=8)
