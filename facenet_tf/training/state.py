"""Where a training run is: its TrainState, saved with the weights and optimizer by the
Checkpointer, so that a killed run resumes exactly."""

import contextlib
import dataclasses
import shutil
import time

import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.training.run_dir import RunDir


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainState:
    """What a resumed run needs besides the weights: where it was in the generation loop.

    step: optimizer steps done; generation: the triplet generation being trained on;
    generation_start: the step at which it started (data position = step - generation_start);
    checkpoint: the checkpoint holding weights and optimizer state for `step`;
    history: one entry per checkpoint interval (step, generation, its seconds of model.fit,
    loss, statistics);
    evals: verification results per generation; best: the best of them;
    train_seconds: wall-clock seconds of training and mining so far (TrainClock).
    """
    step: int = 0
    generation: int = 0
    generation_start: int = 0
    checkpoint: str | None = None
    history: list = dataclasses.field(default_factory=list)
    evals: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    train_seconds: float = 0.0

    @property
    def data_position(self) -> int:
        return self.step - self.generation_start


class TrainClock:
    """The wall-clock budget of a run (TrainConfig.max_train_seconds): accumulates the seconds
    since it was made into state.train_seconds, except while paused (validation), so that a
    resumed run goes on from the seconds its checkpoint recorded."""

    def __init__(self, state: TrainState, limit: float | None):
        self.state = state
        self.limit = limit
        self._since = time.monotonic()

    def _update(self) -> None:
        now = time.monotonic()
        self.state.train_seconds += now - self._since
        self._since = now

    def spent(self) -> bool:
        """True once the budget is used up (never without a limit)."""
        self._update()
        return self.limit is not None and self.state.train_seconds >= self.limit

    @contextlib.contextmanager
    def paused(self):
        """Seconds spent inside this block do not count."""
        self._update()
        try:
            yield
        finally:
            self._since = time.monotonic()


def read_state(run_dir: RunDir) -> TrainState | None:
    """The run's saved TrainState, or None before its first checkpoint."""
    if not tf.io.gfile.exists(run_dir.train_state):
        return None
    return TrainState(**io_utils.read_json(run_dir.train_state))


class Checkpointer:
    """Weights + optimizer through tf.train.CheckpointManager, then the TrainState JSON.

    The JSON (written atomically, after the checkpoint) names the checkpoint it belongs to,
    so a kill between the two writes resumes from the previous consistent pair.
    """

    def __init__(self, run_dir: RunDir, network, optimizer, is_chief: bool = True,
                 worker_id: str = "0", max_to_keep: int = 3):
        self.run_dir = run_dir
        self.is_chief = is_chief
        # Non-chief workers must take part in saving but write to a scratch directory.
        directory = run_dir.checkpoints if is_chief else run_dir.scratch(worker_id)
        self.checkpoint = tf.train.Checkpoint(model=network, optimizer=optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                  max_to_keep=max_to_keep)

    def load(self) -> TrainState:
        """The saved state with its weights restored, or a fresh state."""
        state = read_state(self.run_dir)
        if state is None:
            return TrainState()
        if state.checkpoint:
            if not tf.io.gfile.exists(state.checkpoint + ".index"):
                raise FileNotFoundError(f"{self.run_dir.train_state}: names checkpoint "
                                        f"{state.checkpoint}, which does not exist")
            self.checkpoint.restore(state.checkpoint).assert_existing_objects_matched()
        return state

    def save(self, state: TrainState) -> None:
        path = self.manager.save(checkpoint_number=state.step)
        if self.is_chief:
            state.checkpoint = path
            io_utils.write_json_atomic(self.run_dir.train_state, dataclasses.asdict(state))
        else:
            shutil.rmtree(self.manager.directory, ignore_errors=True)
