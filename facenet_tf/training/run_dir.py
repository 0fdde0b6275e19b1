"""The layout of a training run's directory: the one place its file and folder names are spelled.

    MODEL_DIR/
      run_info.json       git revision, flags, package versions (facenet_tf.common.runinfo)
      train_config.json   the run's TrainConfig, read back to rebuild its network
      train_state.json    where the run is (facenet_tf.training.state.TrainState)
      checkpoints/        weights + optimizer, latest few
      best/               the best checkpoint by verification accuracy
      scratch/worker-ID/  non-chief workers' throw-away checkpoint writes
      tensorboard/        training and verification scalars
      triplets/gen-NNNNN/ mined generations (manifest.json last)
      exports/step-NNNNNNNN/  the SavedModel of the weights at a step (mining, evaluation)
      export/             the final SavedModel (unless --export_dir says otherwise)
"""

import dataclasses
import os

import tensorflow as tf

from facenet_tf.common import io_utils

_GENERATIONS, _GENERATION_PREFIX = "triplets", "gen-"
_EXPORTS, _STEP_EXPORT_PREFIX = "exports", "step-"
_CHECKPOINTS, _BEST = "checkpoints", "best"


def _numbered_dirs(parent: str, prefix: str) -> dict:
    """{number: path} of the `prefix`NNN directories in `parent` (none if it does not exist)."""
    if not tf.io.gfile.isdir(parent):
        return {}
    out = {}
    for name in tf.io.gfile.listdir(parent):
        name = name.rstrip("/")
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            out[int(name[len(prefix):])] = os.path.join(parent, name)
    return out


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Paths inside one training run's directory (local or gs://)."""
    path: str

    @classmethod
    def of_checkpoint(cls, prefix: str) -> "RunDir":
        """The run a checkpoint prefix (MODEL_DIR/checkpoints/ckpt-N, MODEL_DIR/best/ckpt-N)
        belongs to."""
        return cls(os.path.dirname(os.path.dirname(prefix.rstrip("/"))))

    def _join(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    @property
    def run_info(self) -> str:
        return self._join("run_info.json")

    @property
    def train_config(self) -> str:
        return self._join("train_config.json")

    @property
    def train_state(self) -> str:
        return self._join("train_state.json")

    @property
    def checkpoints(self) -> str:
        return self._join(_CHECKPOINTS)

    @property
    def best(self) -> str:
        return self._join(_BEST)

    def scratch(self, worker_id: str) -> str:
        return self._join("scratch", f"worker-{worker_id}")

    @property
    def tensorboard(self) -> str:
        return self._join("tensorboard")

    @property
    def final_export(self) -> str:
        return self._join("export")

    def generation(self, generation: int) -> str:
        return self._join(_GENERATIONS, f"{_GENERATION_PREFIX}{generation:05d}")

    def step_export(self, step: int) -> str:
        """The SavedModel of the weights at `step` (read by the miner and by validation)."""
        return self._join(_EXPORTS, f"{_STEP_EXPORT_PREFIX}{step:08d}")

    def prune_generations(self, current_generation: int, keep: int) -> list:
        """Deletes the mined generations older than the newest `keep` (counting back from
        `current_generation`) and the step exports older than the model that mined the oldest
        kept one; keep=0 deletes nothing. Returns the deleted paths.

        A generation's manifest goes first, so a crash mid-way leaves a directory that reads
        as incomplete (never as a generation with shards missing), and the next call removes
        the rest.
        """
        if keep <= 0:
            return []
        generations = _numbered_dirs(self._join(_GENERATIONS), _GENERATION_PREFIX)
        oldest_kept = current_generation - keep + 1
        deleted = []
        for number, path in sorted(generations.items()):
            if number < oldest_kept:
                manifest = os.path.join(path, io_utils.MANIFEST_NAME)
                if tf.io.gfile.exists(manifest):
                    tf.io.gfile.remove(manifest)
                tf.io.gfile.rmtree(path)
                deleted.append(path)
        kept_steps = [io_utils.read_manifest(path).get("model_step")
                      for number, path in generations.items()
                      if number >= oldest_kept and io_utils.is_complete(path)]
        kept_steps = [step for step in kept_steps if step is not None]
        if kept_steps:
            exports = _numbered_dirs(self._join(_EXPORTS), _STEP_EXPORT_PREFIX)
            for step, path in sorted(exports.items()):
                if step < min(kept_steps):
                    tf.io.gfile.rmtree(path)
                    deleted.append(path)
        return deleted
