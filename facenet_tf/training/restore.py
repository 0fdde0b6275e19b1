"""Rebuilds a training run's embedding network from one of its checkpoints, for export."""

import dataclasses
import os

import tensorflow as tf

from facenet_tf import io_utils
from facenet_tf.training.config import TrainConfig


@dataclasses.dataclass
class RestoredEmbedder:
    model: object            # keras.Model, the embedding network with the checkpoint's weights
    preprocess: object       # PreprocessConfig the run trained with
    step: int
    threshold: float | None  # the run's best verification threshold, if it evaluated
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


def restore_embedder(path: str) -> RestoredEmbedder:
    """Loads the weights of a trainer checkpoint (checkpoints/ckpt-N, or best/) into a fresh
    copy of the run's network, built from the run's recorded flags (run_info.json)."""
    from facenet_tf.training import loop
    prefix = checkpoint_prefix(path)
    model_dir = os.path.dirname(os.path.dirname(prefix))
    info_path = os.path.join(model_dir, "run_info.json")
    if not tf.io.gfile.exists(info_path):
        raise FileNotFoundError(f"{prefix}: not inside a facenet_tf training run "
                                f"(no {info_path} to rebuild the network from)")
    recorded = io_utils.read_json(info_path).get("flags", {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in recorded.items() if k in fields})
    embedder = loop.build_embedder(config)
    tf.train.Checkpoint(model=embedder).restore(prefix).expect_partial() \
        .assert_existing_objects_matched()
    threshold = None
    state_path = os.path.join(model_dir, "train_state.json")
    if tf.io.gfile.exists(state_path):
        best = io_utils.read_json(state_path).get("best") or {}
        threshold = best.get("threshold_mean")
    step = int(prefix.rsplit("-", 1)[-1]) if prefix.rsplit("-", 1)[-1].isdigit() else None
    return RestoredEmbedder(model=embedder,
                            preprocess=loop.preprocess_config(config, embedder.input_shape[1:]),
                            step=step, threshold=threshold, checkpoint=prefix)
