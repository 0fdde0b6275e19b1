"""Validation during training: scores the run's step snapshots on held-out pairs and keeps the best
checkpoint (MODEL_DIR/best) and the scalars in TensorBoard."""

import logging
import math

import tensorflow as tf

from facenet_tf.evaluation.protocols import evaluate_pairs_file
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.training.run_dir import RunDir
from facenet_tf.training.state import TrainState


class Validator:
    """Verification accuracy of an exported model on a pairs file; keeps the best checkpoint."""

    def __init__(self, run_dir: RunDir, pairs: str | None, images: str | None, checkpoint,
                 summary_writer=None, metric: str = "accuracy_mean"):
        self.pairs = pairs
        self.images = images
        self.metric = metric
        self.writer = summary_writer
        self.best_manager = tf.train.CheckpointManager(checkpoint, run_dir.best, max_to_keep=1)

    @property
    def enabled(self) -> bool:
        return bool(self.pairs)

    def evaluate(self, export_path: str, state: TrainState) -> dict | None:
        """Evaluates, logs, records in `state.evals`; saves a best checkpoint on improvement."""
        if not self.enabled:
            return None
        metrics = evaluate_pairs_file(load_embedder(export_path), self.pairs, self.images)
        record = {"step": state.step, "generation": state.generation, "export": export_path}
        record.update({k: float(v) for k, v in metrics.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
        state.evals.append(record)
        logging.info("eval at step %d: %s=%.4f", state.step, self.metric,
                     record.get(self.metric, math.nan))
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
