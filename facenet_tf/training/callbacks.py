"""The Keras callback of the trainer: counts global steps, stops on NaN/Inf, writes TensorBoard
scalars and checkpoints once per checkpoint interval."""

import math
import time

import keras
import tensorflow as tf

from facenet_tf.training.state import Checkpointer, TrainState


def _finite(value) -> bool:
    return value is None or math.isfinite(float(value))


def learning_rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class TrainingCallback(keras.callbacks.Callback):
    """Counts global steps during one model.fit; stops on NaN/Inf; checkpoints every epoch.

    An "epoch" is one checkpoint interval. After a NaN/Inf loss nothing more is saved, so the
    last checkpoint is the last good one. `stop_when()` (optional), asked after every step,
    ends training early when it returns True (a spent time budget); the interval so far is
    checkpointed as usual.
    """

    def __init__(self, state: TrainState, checkpointer: Checkpointer, summary_writer=None,
                 log_every_steps: int = 10, stop_when=None):
        super().__init__()
        self.state = state
        self.checkpointer = checkpointer
        self.writer = summary_writer
        self.log_every_steps = log_every_steps
        self.stop_when = stop_when
        self.diverged_at = None
        self.stopped_at = None
        self._epoch_start = self._last_step = state.step

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._last_step = self.state.step
        self._epoch_began = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        step = self._epoch_start + batch + 1
        if not _finite(logs.get("loss")):
            self.diverged_at = step
            self.model.stop_training = True
            return
        self._last_step = step
        if self.writer is not None and step % self.log_every_steps == 0:
            self._write_scalars(step, logs)
        if self.stop_when is not None and self.stop_when():
            self.stopped_at = step
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged_at is not None or self._last_step == self._epoch_start:
            return
        logs = dict(logs or {})
        self.state.step = self._last_step  # fewer than the epoch's steps if stopped early
        entry = {"step": self.state.step, "generation": self.state.generation,
                 "seconds": time.monotonic() - self._epoch_began}
        entry.update({k: float(v) for k, v in logs.items()})
        entry["learning_rate"] = learning_rate(self.model.optimizer)
        self.state.history.append(entry)
        if self.writer is not None:
            self._write_scalars(self.state.step, logs)
        self.checkpointer.save(self.state)

    def _write_scalars(self, step, logs):
        with self.writer.as_default():
            for key, value in logs.items():
                tf.summary.scalar(f"train/{key}", float(value), step=step)
            tf.summary.scalar("train/learning_rate", learning_rate(self.model.optimizer),
                              step=step)
        self.writer.flush()
