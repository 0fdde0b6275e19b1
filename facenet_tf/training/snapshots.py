"""SavedModels of the weights being trained: one per step for the miner and for validation, and
the run's final export (facenet_tf.serving.saved_model publishes each atomically)."""

import os

import keras
import tensorflow as tf

from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.detection.align import AlignConfig
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.serving.saved_model import PhotoSignature, export_saved_model
from facenet_tf.training.run_dir import RunDir


class RunSnapshots:
    """Exports copies of `network` (made outside any tf.distribute strategy) with the run's
    preprocessing and metadata."""

    def __init__(self, run_dir: RunDir, network: keras.Model, preprocess: PreprocessConfig,
                 metadata: dict):
        self.run_dir = run_dir
        self.network = network
        self.preprocess = preprocess
        self.metadata = dict(metadata)

    def write(self, export_dir: str, step: int, optimize: bool = True,
              threshold: float | None = None, photos: bool = True) -> str:
        """The current weights as a SavedModel at export_dir.

        optimize: serve the folded, frozen inference build; the step exports use False, so that
        triplets are mined with the training graph's own float rounding. threshold: the
        recommended verification threshold written into the export's metadata. photos: also
        serve detect_and_embed (MTCNN, margin-32 crops at the model's input size).
        """
        copy = keras.models.clone_model(self.network)
        copy.set_weights(self.network.get_weights())
        signature = None
        if photos:
            signature = PhotoSignature(FaceDetector(),
                                       AlignConfig(image_size=max(self.preprocess.image_size)))
        return export_saved_model(copy, export_dir, self.preprocess, step=step,
                                  threshold=threshold, extra_metadata=self.metadata,
                                  optimize=optimize, photos=signature)

    def at_step(self, step: int) -> str:
        """The export of the current weights (at `step`), made once."""
        path = self.run_dir.step_export(step)
        if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            self.write(path, step, optimize=False, photos=False)
        return path
