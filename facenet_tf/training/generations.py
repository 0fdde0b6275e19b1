"""The offline trainer's triplet generations: mined by the Beam pipeline with the current
weights, in-process or in a background thread (double buffering); other workers wait for them."""

import logging
import threading
import time

import tensorflow as tf

from facenet_tf.common import io_utils
from facenet_tf.pipelines.mine_triplets import mine_triplets
from facenet_tf.training.config import TrainConfig


def mining_seed(config: TrainConfig, generation: int) -> int:
    """The seed generation `generation` is mined and shuffled with."""
    return config.seed * 1000 + generation


def wait_for_generation(directory: str, timeout_s: float = 24 * 3600) -> None:
    """Non-chief workers wait for the chief to publish a generation."""
    deadline = time.time() + timeout_s
    while not io_utils.is_complete(directory):
        if time.time() > deadline:
            raise TimeoutError(f"{directory}: generation not published within {timeout_s} s")
        time.sleep(1.0)


class GenerationMiner:
    """Runs facenet_tf.pipelines.mine_triplets for the run's generations."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self._threads = {}
        self._errors = {}

    def mine(self, generation: int, model_path: str, output_dir: str) -> dict:
        """Mines synchronously; an incomplete earlier attempt in `output_dir` is discarded."""
        if io_utils.is_complete(output_dir):
            return io_utils.read_manifest(output_dir)
        if tf.io.gfile.exists(output_dir):
            tf.io.gfile.rmtree(output_dir)
        mining_config = self.config.mining_config(model_path, output_dir,
                                                  mining_seed(self.config, generation),
                                                  generation)
        logging.info("mining generation %d with %s into %s", generation, model_path, output_dir)
        return mine_triplets(mining_config,
                             pipeline_options=list(self.config.beam_pipeline_args) or None)

    def start(self, generation: int, model_path: str, output_dir: str) -> None:
        """Mines in a background thread (double buffering); `wait` collects it."""
        if generation in self._threads or io_utils.is_complete(output_dir):
            return

        def run():
            try:
                self.mine(generation, model_path, output_dir)
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
