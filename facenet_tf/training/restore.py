"""Rebuilds a training run's embedding network from one of its checkpoints, for export."""

import dataclasses

import keras
import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.training import builders
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.run_dir import RunDir
from facenet_tf.training.state import read_state


@dataclasses.dataclass
class RestoredNetwork:
    network: keras.Model             # the embedding network with the checkpoint's weights
    preprocess: PreprocessConfig     # the preprocessing the run trained with
    step: int | None
    threshold: float | None          # the run's best verification threshold, if it evaluated
    checkpoint: str


def checkpoint_prefix(path: str) -> str:
    """A checkpoint prefix from a prefix (…/ckpt-600) or a directory of checkpoints."""
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"{path}: no TensorFlow checkpoint in this directory")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"{path}: not a .keras file, a checkpoint prefix or a "
                                "directory of checkpoints")
    return path


def run_config(run_dir: RunDir) -> TrainConfig:
    """The TrainConfig a run recorded (train_config.json; runs older than that file recorded
    it as the flags of run_info.json)."""
    if tf.io.gfile.exists(run_dir.train_config):
        return TrainConfig.load(run_dir.train_config)
    if tf.io.gfile.exists(run_dir.run_info):
        return TrainConfig.from_dict(io_utils.read_json(run_dir.run_info).get("flags", {}),
                                     source=run_dir.run_info)
    raise FileNotFoundError(f"{run_dir.path}: not a facenet_tf training run (no "
                            f"{run_dir.train_config} to rebuild the network from)")


def restore_network(path: str) -> RestoredNetwork:
    """Loads the weights of a trainer checkpoint (checkpoints/ckpt-N, or best/) into a fresh
    copy of the run's network, built from the run's recorded config."""
    prefix = checkpoint_prefix(path)
    run_dir = RunDir.of_checkpoint(prefix)
    try:
        config = run_config(run_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{prefix}: {e}") from None
    network = builders.build_network(config)
    tf.train.Checkpoint(model=network).restore(prefix).expect_partial() \
        .assert_existing_objects_matched()
    state = read_state(run_dir)
    threshold = (state.best or {}).get("threshold_mean") if state else None
    number = prefix.rsplit("-", 1)[-1]
    return RestoredNetwork(network=network,
                            preprocess=builders.preprocess_config(config,
                                                                  network.input_shape[1:]),
                            step=int(number) if number.isdigit() else None,
                            threshold=threshold, checkpoint=prefix)
