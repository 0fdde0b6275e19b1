"""The generation loop: mine with the current model, model.fit on those triplets, re-mine, export."""

import logging
import os
import sys
import time
import uuid

import keras
import tensorflow as tf

from facenet_tf import io_utils, runinfo
from facenet_tf.data.augment import AugmentConfig
from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.training import callbacks as cb
from facenet_tf.training import distribution, triplet_data
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.model_wrapper import TripletEmbeddingModel

logger = logging.getLogger("facenet_tf.train")
logger.setLevel(logging.INFO)


# Where a run keeps its mined generations (GENERATIONS/gen-NNNNN) and the per-step exports the
# miner and the evaluator read (EXPORTS/step-NNNNNNNN); prune_generations lists them by these.
GENERATIONS, GENERATION_PREFIX = "triplets", "gen-"
EXPORTS, STEP_EXPORT_PREFIX = "exports", "step-"


def generation_dir(model_dir: str, generation: int) -> str:
    return os.path.join(model_dir, GENERATIONS, f"{GENERATION_PREFIX}{generation:05d}")


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


def prune_generations(model_dir: str, current_generation: int, keep: int) -> list:
    """Deletes the mined generations older than the newest `keep` (counting back from
    `current_generation`) and the step exports older than the model that mined the oldest kept
    one; keep=0 deletes nothing. Returns the deleted paths.

    A generation's manifest goes first, so a crash mid-way leaves a directory that reads as
    incomplete (never as a generation with shards missing), and the next call removes the rest.
    """
    if keep <= 0:
        return []
    generations = _numbered_dirs(os.path.join(model_dir, GENERATIONS), GENERATION_PREFIX)
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
        for step, path in sorted(_numbered_dirs(os.path.join(model_dir, EXPORTS),
                                                STEP_EXPORT_PREFIX).items()):
            if step < min(kept_steps):
                tf.io.gfile.rmtree(path)
                deleted.append(path)
    return deleted


def preprocess_config(config: TrainConfig, input_shape) -> PreprocessConfig:
    if config.model == "pretrained":
        # The pretrained weights expect per-image prewhitening; the crop depends on the data
        # (0.52 for LFW's 250x250 thumbnails, 1.0 for tight face crops such as ORL).
        from facenet_tf.pretrained import PRETRAINED_PREPROCESS
        return PreprocessConfig(image_size=PRETRAINED_PREPROCESS.image_size,
                                crop_fraction=config.crop_fraction,
                                standardization=PRETRAINED_PREPROCESS.standardization)
    return PreprocessConfig(image_size=tuple(input_shape[:2]), crop_fraction=config.crop_fraction)


def build_embedder(config: TrainConfig, embedder_fn=None) -> keras.Model:
    """The embedding network: `embedder_fn()` if given, else facenet_tf.models by name."""
    if embedder_fn is not None:
        return embedder_fn()
    if config.model == "pretrained":
        from facenet_tf.pretrained import build_pretrained_model
        return build_pretrained_model()
    from facenet_tf.models import build_model
    return build_model(config.model, embedding_dim=config.embedding_dim,
                       input_shape=config.input_shape, seed=config.seed)


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """The paper's AdaGrad (lr 0.05), Adam or SGD with momentum, under the chosen schedule."""
    lr = config.learning_rate
    schedules = keras.optimizers.schedules
    if config.lr_schedule == "exponential":
        lr = schedules.ExponentialDecay(lr, config.lr_decay_steps, config.lr_decay_rate,
                                        staircase=True)
    elif config.lr_schedule == "cosine":
        lr = schedules.CosineDecay(lr, max(1, config.steps))
    elif config.lr_schedule == "piecewise":
        # Lower by lr_decay_rate every lr_decay_steps ("lowered to finalise", the paper).
        bounds = list(range(config.lr_decay_steps, max(config.steps, 1), config.lr_decay_steps))
        values = [config.learning_rate * config.lr_decay_rate ** i for i in range(len(bounds) + 1)]
        lr = schedules.PiecewiseConstantDecay(bounds, values) if bounds else config.learning_rate
    if config.optimizer == "adagrad":
        return keras.optimizers.Adagrad(learning_rate=lr)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.SGD(learning_rate=lr, momentum=config.momentum)


def triplet_metrics(alpha: float) -> list:
    """Per-example statistics of an offline [B, 3, D] triplet batch, averaged by Keras.

    (Online mining reports the same statistics through facenet_tf.losses.triplet_metrics.)
    """
    def distances(y_pred):
        a, p, n = y_pred[:, 0], y_pred[:, 1], y_pred[:, 2]
        return (keras.ops.sum(keras.ops.square(a - p), axis=-1),
                keras.ops.sum(keras.ops.square(a - n), axis=-1))

    def fraction_active(y_true, y_pred):
        d_ap, d_an = distances(y_pred)
        return keras.ops.cast(d_ap - d_an + alpha > 0, "float32")

    def mean_d_ap(y_true, y_pred):
        return distances(y_pred)[0]

    def mean_d_an(y_true, y_pred):
        return distances(y_pred)[1]

    return [fraction_active, mean_d_ap, mean_d_an]


def compile_model(config: TrainConfig, strategy, embedder_fn=None):
    """(training model, embedder, optimizer), built and compiled in strategy.scope()."""
    from facenet_tf import losses
    with strategy.scope():
        embedder = build_embedder(config, embedder_fn)
        optimizer = make_optimizer(config)
        input_shape = tuple(embedder.input_shape[1:])
        if config.mining == "offline":
            model = TripletEmbeddingModel(embedder, name="triplet_trainer")
            model.build((None, 3) + input_shape)
            model.compile(optimizer=optimizer, loss=losses.OfflineTripletLoss(config.alpha),
                          metrics=triplet_metrics(config.alpha), jit_compile=False)
        else:
            model = embedder
            mining_args = dict(strategy=config.strategy, alpha=config.alpha, seed=config.seed)
            model.compile(optimizer=optimizer, loss=losses.OnlineTripletLoss(**mining_args),
                          metrics=losses.triplet_metrics(**mining_args), jit_compile=False)
        optimizer.build(embedder.trainable_variables)
    return model, embedder, optimizer


def export_embedder(embedder: keras.Model, export_dir: str, preprocess: PreprocessConfig,
                    step: int, extra: dict | None = None, optimize: bool = True,
                    threshold: float | None = None) -> str:
    """Exports a copy of the embedder (made outside any strategy) and publishes it by rename.

    optimize: serve the folded, frozen inference build (facenet_tf.export); the per-step
    exports that the miner and the evaluator read use False, so that triplets are mined with
    the training graph's own float rounding. threshold: the recommended verification threshold
    written into the export's metadata.
    """
    from facenet_tf.export import export_saved_model
    copy = keras.models.clone_model(embedder)
    copy.set_weights(embedder.get_weights())
    tmp = f"{export_dir.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    export_saved_model(copy, tmp, preprocess, step=step, threshold=threshold, extra_metadata=extra,
                       optimize=optimize)
    if tf.io.gfile.exists(export_dir):
        tf.io.gfile.rmtree(export_dir)
    tf.io.gfile.rename(tmp, export_dir)
    return export_dir


def step_export_dir(model_dir: str, step: int) -> str:
    """The SavedModel of the weights at `step` (used by the miner and the evaluator)."""
    return os.path.join(model_dir, EXPORTS, f"{STEP_EXPORT_PREFIX}{step:08d}")


def _verbose(config: TrainConfig) -> int:
    if config.verbose is not None:
        return config.verbose
    return 1 if sys.stdout.isatty() else 2


def _export_at(embedder, model_dir, preprocess, step, meta) -> str:
    """The export of the current weights (at `step`), made once."""
    path = step_export_dir(model_dir, step)
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        export_embedder(embedder, path, preprocess, step, meta, optimize=False)
    return path


def train(config: TrainConfig, embedder_fn=None, strategy=None) -> dict:
    """Trains per `config` (resuming from model_dir if a run is there); returns final metrics.

    Returns step, generation, export_dir, final loss, the loss history, every evaluation, the
    final and the best one. `embedder_fn` (optional) builds a custom embedding network instead
    of config.model; `strategy` overrides the one config.distribution selects.
    """
    if strategy is None:
        strategy = distribution.make_strategy(config.distribution, config.num_cpu_replicas)
    chief = distribution.is_chief(strategy)
    worker_id = "%s-%d" % distribution.task_info()
    model_dir = config.model_dir
    tf.io.gfile.makedirs(model_dir)
    if chief:
        runinfo.write(model_dir, flags=config.to_dict())

    model, embedder, optimizer = compile_model(config, strategy, embedder_fn)
    preprocess = preprocess_config(config, embedder.input_shape[1:])
    checkpointer = cb.Checkpointer(model_dir, embedder, optimizer, chief, worker_id)
    state = checkpointer.load()
    if state.step:
        logger.info("resuming from step %d, generation %d (checkpoint %s)",
                    state.step, state.generation, state.checkpoint)
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard")) \
        if chief else None
    evaluator = cb.Evaluator(model_dir, config.eval_pairs, config.eval_images,
                             checkpointer.checkpoint, writer)
    meta = {"model": config.model, "mining": config.mining, "alpha": config.alpha}

    def evaluate_now():
        """Evaluates the current weights once per step, through the export made for this step."""
        if not (chief and evaluator.enabled):
            return None
        if state.evals and state.evals[-1]["step"] == state.step:
            return state.evals[-1]
        return evaluator.evaluate(_export_at(embedder, model_dir, preprocess, state.step, meta),
                                  state)

    if state.step == 0 and evaluator.enabled and chief and not state.evals:
        evaluate_now()  # the untrained baseline
        checkpointer.save(state)

    if config.steps > state.step:
        if config.mining == "offline":
            _offline_loop(config, model, embedder, preprocess, state, checkpointer, writer,
                          evaluate_now, chief, meta)
        else:
            _online_loop(config, model, preprocess, state, checkpointer, writer)

    final_dir = config.resolved_export_dir
    final_eval = None
    if chief:
        # Evaluated (through this step's export) before the final export is written, so that the
        # export carries the threshold the evaluation chose and facenet_tf.compare needs no
        # --threshold.
        final_eval = evaluate_now()
        export_embedder(embedder, final_dir, preprocess, state.step, meta,
                        threshold=final_eval.get("threshold_mean") if final_eval else None)
        checkpointer.save(state)
    if writer is not None:
        writer.close()
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


def _fit(config, model, make_dataset, state, checkpointer, writer, until_step):
    """model.fit from state.step to until_step, one checkpoint per interval.

    Each model.fit call starts a new iterator, so the dataset is made afresh for every call
    at the current data position (make_dataset() reads it from `state`), never replayed.
    """
    callback = cb.TrainingCallback(state, checkpointer, writer)
    keras.utils.set_random_seed(config.seed * 1_000_003 + state.step)
    while state.step < until_step and callback.diverged_at is None:
        interval = config.checkpoint_every_steps
        remaining = until_step - state.step
        epochs, steps_per_epoch = remaining // interval, interval
        if epochs == 0:
            epochs, steps_per_epoch = 1, remaining
        model.fit(make_dataset(), epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
                  callbacks=[callback], verbose=_verbose(config))
    if callback.diverged_at is not None:
        raise cb.TrainingDiverged(
            f"loss became NaN or Inf at step {callback.diverged_at}; training stopped. The last "
            f"good checkpoint (step {state.step}) is kept in {checkpointer.manager.directory}; "
            "lower --learning_rate or check the data")


def _mining_kwargs(config: TrainConfig) -> dict:
    return {"dataset": config.train_data, "strategy": config.strategy, "alpha": config.alpha,
            "identities_per_subset": config.identities_per_subset,
            "images_per_identity": config.images_per_identity,
            "num_subsets": config.num_subsets, "subset_fraction": config.subset_fraction}


def _wait_for_generation(directory: str, timeout_s: float = 24 * 3600) -> None:
    """Non-chief workers wait for the chief to publish a generation."""
    deadline = time.time() + timeout_s
    while not io_utils.is_complete(directory):
        if time.time() > deadline:
            raise TimeoutError(f"{directory}: generation not published within {timeout_s} s")
        time.sleep(1.0)


def _offline_loop(config, model, embedder, preprocess, state, checkpointer, writer,
                  evaluate_now, chief, meta):
    miner = cb.GenerationMiner(_mining_kwargs(config), config.beam_pipeline_args)
    model_dir = config.model_dir

    def mining_seed(generation):
        return config.seed * 1000 + generation

    def ensure_generation(generation, background=False):
        """Mines `generation` with the current weights unless it is already published."""
        out = generation_dir(model_dir, generation)
        if chief and not background:
            miner.wait(generation)  # a background mining of it (--async_mining), if one runs
        if io_utils.is_complete(out):
            return
        if not chief:
            if not background:
                _wait_for_generation(out)
            return
        export_path = _export_at(embedder, model_dir, preprocess, state.step, meta)
        if background:
            miner.start(generation, export_path, out, mining_seed(generation))
        else:
            miner.mine(generation, export_path, out, mining_seed(generation))

    ensure_generation(state.generation)
    while state.step < config.steps:
        gen = state.generation
        gen_end = min(state.generation_start + config.remine_every_steps, config.steps)
        if config.async_mining and gen_end < config.steps:
            # Double buffering: k+1 is mined by the weights at the start of k while k trains.
            ensure_generation(gen + 1, background=True)
        gen_dir = generation_dir(model_dir, gen)

        def make_dataset(gen_dir=gen_dir, gen=gen):
            return triplet_data.triplet_dataset(
                gen_dir, preprocess, config.batch_size, seed=mining_seed(gen),
                start_batch=state.data_position, shuffle_buffer=config.shuffle_buffer,
                augment=AugmentConfig() if config.augment else None,
                decoded_cache_mb=config.decoded_cache_mb)

        logger.info("generation %d: steps %d..%d on %s", gen, state.step, gen_end, gen_dir)
        _fit(config, model, make_dataset, state, checkpointer, writer, gen_end)
        if state.step >= config.steps:
            break
        evaluate_now()
        ensure_generation(gen + 1)
        state.generation = gen + 1
        state.generation_start = state.step
        checkpointer.save(state)
        if chief:
            for path in prune_generations(model_dir, state.generation, config.keep_generations):
                logger.info("deleted %s (--keep_generations=%d)", path, config.keep_generations)


def _online_loop(config, model, preprocess, state, checkpointer, writer):
    """In-batch mining on P x K batches: P = batch_size / K identities, K = images_per_identity.

    Step s always trains on batch s of the seeded pk_batches stream, so a resumed run picks up
    the data where its checkpoint left off.
    """
    from facenet_tf.data.datasets import pk_batches
    k = config.images_per_identity
    if config.batch_size % k:
        raise ValueError(f"online mining: batch_size={config.batch_size} must be a multiple of "
                         f"images_per_identity={k} (P identities x K images)")
    augment = AugmentConfig() if config.augment else None
    # Workers split each P x K batch, rather than reading different shards (AUTO would shard
    # by file and give each worker batches of its own identities).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    def make_dataset():
        return pk_batches(config.train_data, config.batch_size // k, k, preprocess,
                          seed=config.seed, augment=augment,
                          start_batch=state.step).with_options(options)

    logger.info("online %s mining: steps %d..%d, P=%d x K=%d", config.strategy, state.step,
                config.steps, config.batch_size // k, k)
    _fit(config, model, make_dataset, state, checkpointer, writer, config.steps)
