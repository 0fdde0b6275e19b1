"""The training loop: mine a generation with the current model, model.fit on its triplets,
re-mine, and so on (offline, the paper's), or in-batch mining on P x K batches (online); then
the final evaluation and export."""

import logging
import sys

import keras
import tensorflow as tf

from facenet_tf.common import io_utils, runinfo
from facenet_tf.data.augment import AugmentConfig
from facenet_tf.data.readers import load_manifest, pk_batches
from facenet_tf.training import builders, distribution, triplet_data
from facenet_tf.training.callbacks import TrainingCallback
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.generations import (
    GenerationMiner,
    mining_seed,
    wait_for_generation,
)
from facenet_tf.training.run_dir import RunDir
from facenet_tf.training.snapshots import RunSnapshots
from facenet_tf.training.state import Checkpointer, TrainClock, TrainingDiverged
from facenet_tf.training.validation import Validator

logger = logging.getLogger("facenet_tf.train")
logger.setLevel(logging.INFO)


def train(config: TrainConfig, network_fn=None, distribute_strategy=None) -> dict:
    """Trains per `config` (resuming from model_dir if a run is there); returns final metrics.

    Returns step, generation, export_dir, final loss, the loss history, every evaluation, the
    final and the best one. `network_fn` (optional) builds a custom embedding network instead
    of config.architecture; `distribute_strategy` overrides the tf.distribute strategy that
    config.distribution selects.
    """
    load_manifest(config.train_data)  # a bad --train_data fails before anything is built
    if distribute_strategy is None:
        distribute_strategy = distribution.make_distribute_strategy(config.distribution,
                                                                    config.num_cpu_replicas)
    run = _Training(config, distribute_strategy, network_fn)
    try:
        return run.run()
    finally:
        if run.writer is not None:
            run.writer.close()


class _Training:
    """One training run: what it builds at the start, and its loops."""

    def __init__(self, config: TrainConfig, distribute_strategy, network_fn):
        self.config = config
        self.chief = distribution.is_chief(distribute_strategy)
        self.run_dir = RunDir(config.model_dir)
        tf.io.gfile.makedirs(config.model_dir)
        if self.chief:
            runinfo.write(self.run_dir.run_info, flags=config.to_dict())
            config.save(self.run_dir.train_config)
        self.model, self.network, optimizer = builders.compile_model(
            config, distribute_strategy, network_fn)
        self.preprocess = builders.preprocess_config(config, self.network.input_shape[1:])
        self.checkpointer = Checkpointer(self.run_dir, self.network, optimizer, self.chief,
                                         "%s-%d" % distribution.task_info())
        self.state = self.checkpointer.load()
        if self.state.step:
            logger.info("resuming from step %d, generation %d (checkpoint %s)",
                        self.state.step, self.state.generation, self.state.checkpoint)
        self.writer = (tf.summary.create_file_writer(self.run_dir.tensorboard)
                       if self.chief else None)
        self.validator = Validator(self.run_dir, config.eval_pairs, config.eval_images,
                                   self.checkpointer.checkpoint, self.writer)
        self.snapshots = RunSnapshots(self.run_dir, self.network, self.preprocess,
                                  {"architecture": config.architecture, "mining": config.mining,
                                   "alpha": config.alpha})

    def run(self) -> dict:
        config, state = self.config, self.state
        self.clock = TrainClock(state, config.max_train_seconds)
        if state.step == 0 and self.validator.enabled and self.chief and not state.evals:
            self.evaluate_now()  # the untrained baseline
            self.checkpointer.save(state)
        if config.steps > state.step and not self.clock.spent():
            if config.mining == "offline":
                self.offline_loop()
            else:
                self.online_loop()
        final_dir = config.export_dir or self.run_dir.final_export
        final_eval = None
        if self.chief:
            # Evaluated (through this step's export) before the final export is written, so
            # that the export carries the threshold the evaluation chose and facenet_tf.compare
            # needs no --threshold.
            final_eval = self.evaluate_now()
            self.snapshots.write(final_dir, state.step,
                                threshold=final_eval.get("threshold_mean") if final_eval else None)
            self.checkpointer.save(state)
        return {
            "step": state.step,
            "generation": state.generation,
            "export_dir": final_dir,
            "loss": state.history[-1].get("loss") if state.history else None,
            "history": state.history,
            "evals": state.evals,
            "eval": final_eval,
            "best": state.best,
        }

    def evaluate_now(self) -> dict | None:
        """Evaluates the current weights once per step, through the export made for this step."""
        if not (self.chief and self.validator.enabled):
            return None
        if self.state.evals and self.state.evals[-1]["step"] == self.state.step:
            return self.state.evals[-1]
        with self.clock.paused():  # validation is not training time
            return self.validator.evaluate(self.snapshots.at_step(self.state.step), self.state)

    def fit(self, make_dataset, until_step: int) -> None:
        """model.fit from state.step to until_step, one checkpoint per interval, scoring the
        held-out pairs every eval_every_steps; stops early when the time budget is spent.

        Each model.fit call starts a new iterator, so the dataset is made afresh for every call
        at the current data position (make_dataset() reads it from the state), never replayed.
        """
        config, state = self.config, self.state
        callback = TrainingCallback(state, self.checkpointer, self.writer,
                                    stop_when=self.clock.spent)
        keras.utils.set_random_seed(config.seed * 1_000_003 + state.step)
        every = config.eval_every_steps
        while (state.step < until_step and callback.diverged_at is None
               and callback.stopped_at is None):
            stop = min(until_step, (state.step // every + 1) * every) if every else until_step
            interval = config.checkpoint_every_steps
            remaining = stop - state.step
            epochs, steps_per_epoch = remaining // interval, interval
            if epochs == 0:
                epochs, steps_per_epoch = 1, remaining
            self.model.fit(make_dataset(), epochs=epochs, steps_per_epoch=steps_per_epoch,
                           shuffle=False, callbacks=[callback], verbose=self._verbose())
            if every and state.step % every == 0 and callback.diverged_at is None:
                self.evaluate_now()  # on the chief
                self.checkpointer.save(state)  # every worker saves; the curve survives a kill
        if callback.stopped_at is not None:
            logger.info("time budget of %.0f s spent at step %d (--max_train_seconds)",
                        config.max_train_seconds, state.step)
        if callback.diverged_at is not None:
            raise TrainingDiverged(
                f"loss became NaN or Inf at step {callback.diverged_at}; training stopped. The "
                f"last good checkpoint (step {state.step}) is kept in "
                f"{self.checkpointer.manager.directory}; lower --learning_rate or check the data")

    def _verbose(self) -> int:
        if self.config.verbose is not None:
            return self.config.verbose
        return 1 if sys.stdout.isatty() else 2

    def ensure_generation(self, miner: GenerationMiner, generation: int,
                          background: bool = False) -> None:
        """Mines `generation` with the current weights unless it is already published."""
        out = self.run_dir.generation(generation)
        if self.chief and not background:
            miner.wait(generation)  # a background mining of it (--async_mining), if one runs
        if io_utils.is_complete(out):
            return
        if not self.chief:
            if not background:
                wait_for_generation(out)
            return
        export_path = self.snapshots.at_step(self.state.step)
        if background:
            miner.start(generation, export_path, out)
        else:
            miner.mine(generation, export_path, out)

    def offline_loop(self) -> None:
        """Trains each generation for remine_every_steps, mining the next one in between."""
        config, state = self.config, self.state
        miner = GenerationMiner(config)
        self.ensure_generation(miner, state.generation)
        while state.step < config.steps:
            gen = state.generation
            gen_end = min(state.generation_start + config.remine_every_steps, config.steps)
            if config.async_mining and gen_end < config.steps:
                # Double buffering: k+1 is mined by the weights at the start of k while k trains.
                self.ensure_generation(miner, gen + 1, background=True)
            gen_dir = self.run_dir.generation(gen)
            # Decoded once per generation, for every model.fit call (dataset) made on it.
            images = triplet_data.generation_images(gen_dir,
                                                    decoded_cache_mb=config.decoded_cache_mb)

            def make_dataset(gen_dir=gen_dir, gen=gen, images=images):
                return triplet_data.triplet_dataset(
                    gen_dir, self.preprocess, config.batch_size, seed=mining_seed(config, gen),
                    start_batch=state.data_position, shuffle_buffer=config.shuffle_buffer,
                    augment=AugmentConfig() if config.augment else None,
                    decoded_cache_mb=config.decoded_cache_mb, images=images)

            logger.info("generation %d: steps %d..%d on %s", gen, state.step, gen_end, gen_dir)
            self.fit(make_dataset, gen_end)
            if state.step >= config.steps:
                break
            if self.clock.spent():
                miner.wait(gen + 1)  # a background mining started for this generation's end
                break
            self.evaluate_now()
            self.ensure_generation(miner, gen + 1)
            state.generation = gen + 1
            state.generation_start = state.step
            self.checkpointer.save(state)
            if self.chief:
                for path in self.run_dir.prune_generations(state.generation,
                                                           config.keep_generations):
                    logger.info("deleted %s (--keep_generations=%d)", path,
                                config.keep_generations)

    def online_loop(self) -> None:
        """In-batch mining on P x K batches: P = batch_size / K identities, K =
        images_per_identity.

        Step s always trains on batch s of the seeded pk_batches stream, so a resumed run picks
        up the data where its checkpoint left off.
        """
        config, state = self.config, self.state
        k = config.images_per_identity
        if config.batch_size % k:
            raise ValueError(f"online mining: batch_size={config.batch_size} must be a multiple "
                             f"of images_per_identity={k} (P identities x K images)")
        augment = AugmentConfig() if config.augment else None
        # Workers split each P x K batch, rather than reading different shards (AUTO would
        # shard by file and give each worker batches of its own identities).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA

        def make_dataset():
            return pk_batches(config.train_data, config.batch_size // k, k, self.preprocess,
                              seed=config.seed, augment=augment,
                              start_batch=state.step).with_options(options)

        logger.info("online %s mining: steps %d..%d, P=%d x K=%d", config.strategy, state.step,
                    config.steps, config.batch_size // k, k)
        self.fit(make_dataset, config.steps)
