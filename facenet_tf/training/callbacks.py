"""Training state, checkpoints, NaN stop, TensorBoard scalars, evaluation and re-mining."""

import dataclasses
import logging
import math
import os
import shutil
import threading

import keras
import tensorflow as tf

from facenet_tf import io_utils

STATE_NAME = "train_state.json"

class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainState:
    """What a resumed run needs besides the weights: where it was in the generation loop.

    step: optimizer steps done; generation: the triplet generation being trained on;
    generation_start: the step at which it started (data position = step - generation_start);
    checkpoint: the checkpoint holding weights and optimizer state for `step`;
    history: one entry per checkpoint interval (step, generation, loss, statistics);
    evals: verification results per generation; best: the best of them.
    """
    step: int = 0
    generation: int = 0
    generation_start: int = 0
    checkpoint: str | None = None
    history: list = dataclasses.field(default_factory=list)
    evals: list = dataclasses.field(default_factory=list)
    best: dict | None = None

    @property
    def data_position(self) -> int:
        return self.step - self.generation_start


class Checkpointer:
    """Weights + optimizer through tf.train.CheckpointManager, then the TrainState JSON.

    The JSON (written atomically, after the checkpoint) names the checkpoint it belongs to,
    so a kill between the two writes resumes from the previous consistent pair.
    """

    def __init__(self, model_dir: str, embedder, optimizer, is_chief: bool = True,
                 worker_id: str = "0", max_to_keep: int = 3):
        self.model_dir = model_dir
        self.is_chief = is_chief
        directory = os.path.join(model_dir, "checkpoints")
        if not is_chief:
            # Non-chief workers must take part in saving but write to a scratch directory.
            directory = os.path.join(model_dir, "scratch", f"worker-{worker_id}")
        self.checkpoint = tf.train.Checkpoint(model=embedder, optimizer=optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                  max_to_keep=max_to_keep)
        self.state_path = os.path.join(model_dir, STATE_NAME)

    def load(self) -> TrainState:
        """The saved state with its weights restored, or a fresh state."""
        if not tf.io.gfile.exists(self.state_path):
            return TrainState()
        state = TrainState(**io_utils.read_json(self.state_path))
        if state.checkpoint:
            if not tf.io.gfile.exists(state.checkpoint + ".index"):
                raise FileNotFoundError(f"{self.state_path}: names checkpoint "
                                        f"{state.checkpoint}, which does not exist")
            self.checkpoint.restore(state.checkpoint).assert_existing_objects_matched()
        return state

    def save(self, state: TrainState) -> None:
        path = self.manager.save(checkpoint_number=state.step)
        if self.is_chief:
            state.checkpoint = path
            io_utils.write_json_atomic(self.state_path, dataclasses.asdict(state))
        else:
            shutil.rmtree(self.manager.directory, ignore_errors=True)


def _finite(value) -> bool:
    return value is None or math.isfinite(float(value))


class TrainingCallback(keras.callbacks.Callback):
    """Counts global steps during one model.fit; stops on NaN/Inf; checkpoints every epoch.

    An "epoch" is one checkpoint interval. After a NaN/Inf loss nothing more is saved, so the
    last checkpoint is the last good one.
    """

    def __init__(self, state: TrainState, checkpointer: Checkpointer, summary_writer=None,
                 log_every_steps: int = 10):
        super().__init__()
        self.state = state
        self.checkpointer = checkpointer
        self.writer = summary_writer
        self.log_every_steps = log_every_steps
        self.diverged_at = None
        self._epoch_start = state.step

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.state.step

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        step = self._epoch_start + batch + 1
        if not _finite(logs.get("loss")):
            self.diverged_at = step
            self.model.stop_training = True
            return
        if self.writer is not None and step % self.log_every_steps == 0:
            self._write_scalars(step, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged_at is not None:
            return
        logs = dict(logs or {})
        steps_done = self.params.get("steps") or 0
        self.state.step = self._epoch_start + steps_done
        entry = {"step": self.state.step, "generation": self.state.generation}
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


def learning_rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class Evaluator:
    """Verification accuracy of an exported model on a pairs file; keeps the best checkpoint."""

    def __init__(self, model_dir: str, pairs: str | None, images: str | None, checkpoint,
                 summary_writer=None, metric: str = "accuracy_mean"):
        self.pairs = pairs
        self.images = images
        self.metric = metric
        self.writer = summary_writer
        self.best_manager = tf.train.CheckpointManager(
            checkpoint, os.path.join(model_dir, "best"), max_to_keep=1)

    @property
    def enabled(self) -> bool:
        return bool(self.pairs)

    def evaluate(self, export_path: str, state: TrainState) -> dict | None:
        """Evaluates, logs, records in `state.evals`; saves a best checkpoint on improvement."""
        if not self.enabled:
            return None
        from facenet_tf.evaluate import evaluate_model
        metrics = evaluate_model(export_path, self.pairs, self.images)
        record = {"step": state.step, "generation": state.generation, "export": export_path}
        record.update({k: float(v) for k, v in metrics.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
        state.evals.append(record)
        logging.info("eval at step %d: %s=%.4f", state.step, self.metric,
                     record.get(self.metric, float("nan")))
        if self.writer is not None:
            with self.writer.as_default():
                for key in (self.metric, "val_at_far_1e-3", "roc_auc"):
                    if key in record:
                        tf.summary.scalar(f"verification/{key}", record[key], step=state.step)
            self.writer.flush()
        if state.best is None or record.get(self.metric, -1) > state.best.get(self.metric, -1):
            record["checkpoint"] = self.best_manager.save(checkpoint_number=state.step)
            state.best = record
        return record


class GenerationMiner:
    """Runs beam_jobs.mine_triplets for a generation, in-process or in a background thread."""

    def __init__(self, mining_kwargs: dict, pipeline_args=()):
        self.mining_kwargs = dict(mining_kwargs)
        self.pipeline_args = list(pipeline_args)
        self._threads = {}
        self._errors = {}

    def mine(self, generation: int, model_path: str, output_dir: str, seed: int) -> dict:
        """Mines synchronously; an incomplete earlier attempt in `output_dir` is discarded."""
        from beam_jobs.mine_triplets import MiningConfig, mine_triplets
        if io_utils.is_complete(output_dir):
            return io_utils.read_manifest(output_dir)
        if tf.io.gfile.exists(output_dir):
            tf.io.gfile.rmtree(output_dir)
        fields = {f.name for f in dataclasses.fields(MiningConfig)}
        kwargs = dict(self.mining_kwargs, model=model_path, output_dir=output_dir, seed=seed,
                      generation=generation)
        config = MiningConfig(**{k: v for k, v in kwargs.items() if k in fields})
        options = list(self.pipeline_args) or None
        logging.info("mining generation %d with %s into %s", generation, model_path, output_dir)
        return mine_triplets(config, pipeline_options=options)

    def start(self, generation, model_path, output_dir, seed) -> None:
        """Mines in a background thread (double buffering); `wait` collects it."""
        if generation in self._threads or io_utils.is_complete(output_dir):
            return

        def run():
            try:
                self.mine(generation, model_path, output_dir, seed)
            except BaseException as e:  # re-raised in wait()
                self._errors[generation] = e

        thread = threading.Thread(target=run, name=f"mine-gen-{generation}", daemon=True)
        self._threads[generation] = thread
        thread.start()

    def wait(self, generation: int) -> None:
        thread = self._threads.pop(generation, None)
        if thread is not None:
            thread.join()
        if generation in self._errors:
            raise RuntimeError(f"mining generation {generation} failed") \
                from self._errors.pop(generation)
