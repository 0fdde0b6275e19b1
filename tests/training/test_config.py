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


# --- one definition of every setting: the train command's flags and configs/*.flags --------

import dataclasses  # noqa: E402
import glob  # noqa: E402
import os  # noqa: E402

from absl import flags  # noqa: E402

from facenet_tf.common import config_flags  # noqa: E402
from facenet_tf.pipelines.mine_triplets import MiningConfig, SubsetMining  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402

RECIPES = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.flags")))


def _command_line_config(args):
    """What `python -m facenet_tf.train ARGS` builds: every flag defined from the dataclass
    (defaults included), parsed from the command line."""
    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values, module_name="test")
    flag_values(["train", *args])
    return TrainConfig(**config_flags.values_from_flags(TrainConfig, flag_values))


def test_flag_defaults_are_the_dataclass_defaults():
    from_flags = _command_line_config(["--train_data=d", "--model_dir=m"])
    assert from_flags == TrainConfig(train_data="d", model_dir="m")


def test_every_setting_is_a_flag_with_help():
    names = {f.name for f in config_flags.flag_fields(TrainConfig)}
    assert names == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(f.metadata["help"] for f in config_flags.flag_fields(TrainConfig))


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_a_recipe_is_the_same_config_from_python_and_from_the_command_line(recipe):
    from_python = TrainConfig.from_flagfile(recipe, train_data="d", model_dir="m")
    from_cli = _command_line_config([f"--flagfile={recipe}", "--train_data=d", "--model_dir=m"])
    assert from_python == from_cli
    with open(recipe) as f:
        given = dict(line.strip()[2:].split("=", 1) for line in f if line.startswith("--"))
    # Every line of the file is applied (the file is the oracle, read by hand here).
    assert str(from_python.architecture) == given["architecture"]
    assert from_python.steps == int(given["steps"])
    assert from_python.learning_rate == float(given["learning_rate"])


def test_flag_values_convert_to_the_field_types():
    c = _command_line_config(["--train_data=d", "--model_dir=m", "--input_shape=96,80",
                              "--beam_pipeline_args=--runner=DirectRunner,--x=1",
                              "--noaugment", "--num_subsets=3"])
    assert c.input_shape == (96, 80, 3)
    assert c.beam_pipeline_args == ("--runner=DirectRunner", "--x=1")
    assert c.augment is False and c.num_subsets == 3


def test_a_bad_recipe_names_the_file_and_the_flag(tmp_path):
    bad = tmp_path / "bad.flags"
    bad.write_text("--steps=10\n--colour=blue\n")
    with pytest.raises(ValueError, match=r"bad\.flags.*colour"):
        TrainConfig.from_flagfile(str(bad), train_data="d", model_dir="m")
    with pytest.raises(ValueError, match="missing.flags"):
        TrainConfig.from_flagfile(str(tmp_path / "missing.flags"), train_data="d",
                                  model_dir="m")


def test_the_miner_takes_the_trainers_mining_settings_once():
    shared = {f.name for f in dataclasses.fields(SubsetMining)}
    assert shared == {"strategy", "alpha", "identities_per_subset", "images_per_identity",
                      "num_subsets", "subset_fraction"}
    c = TrainConfig(train_data="d", model_dir="m", strategy="hard", alpha=0.3,
                    identities_per_subset=7, images_per_identity=5, num_subsets=2)
    expected = MiningConfig(dataset="d", model="snap", output_dir="out", seed=4, generation=1,
                            strategy="hard", alpha=0.3, identities_per_subset=7,
                            images_per_identity=5, num_subsets=2, subset_fraction=None)
    assert c.mining_config("snap", "out", seed=4, generation=1) == expected


def test_a_run_recorded_with_the_old_model_key_still_loads():
    old = TrainConfig(train_data="d", model_dir="m", architecture="nn4").to_dict()
    old["model"] = old.pop("architecture")
    assert TrainConfig.from_dict(old).architecture == "nn4"
