"""TrainConfig: every setting of a training run, as one JSON-able dataclass."""

import dataclasses

from facenet_tf.common import config_flags, io_utils
from facenet_tf.common.config_flags import setting
from facenet_tf.pipelines.mine_triplets import MiningConfig, SubsetMining

MINING_MODES = ("offline", "online")
OPTIMIZERS = ("adagrad", "adam", "sgd")
SCHEDULES = ("constant", "exponential", "cosine", "piecewise")
DISTRIBUTIONS = ("mirrored", "multi_worker")


def _input_shape(value) -> tuple:
    """--input_shape HEIGHT,WIDTH -> (HEIGHT, WIDTH, 3)."""
    if len(value) != 2:
        raise ValueError(f"--input_shape: expected HEIGHT,WIDTH, got {','.join(value)!r}")
    return tuple(int(v) for v in value) + (3,)


@dataclasses.dataclass
class TrainConfig(SubsetMining):
    """One training run: every setting, its default and its help (the `train` command's flags
    are made from these fields, and a recipe in configs/ reads into this class with
    TrainConfig.from_flagfile). Paths may be local or gs://."""
    train_data: str = setting(help="Training dataset: a beam_jobs.build_dataset output dir "
                              "(images-*.tfrecord + manifest.json).")
    model_dir: str = setting(help="Run directory: checkpoints, train_state.json, mined "
                             "generations, snapshots, TensorBoard logs, run_info.json.")
    architecture: str = setting("nns2", "Network to train: nn1, nn2, nn3, nn4, nns1, nns2, "
                                "inception_resnet_v1, or 'pretrained' (fine-tune the converted "
                                "FaceNet weights, 512-D).")
    embedding_dim: int = setting(128, "Embedding size d (the paper's default 128).")
    input_shape: tuple | None = setting(None, "Network input HEIGHT,WIDTH (default: the "
                                        "architecture's).", from_flag=_input_shape)
    crop_fraction: float = setting(1.0, "Center-crop fraction of the image before resizing.")
    augment: bool = setting(False, "Seeded random crop, flip, brightness and contrast.")
    mining: str = setting("offline", "offline: Beam-mined triplet generations (the paper's); "
                          "online: in-batch mining over P x K batches gathered across "
                          "replicas.", choices=MINING_MODES)
    remine_every_steps: int = setting(1000, "Offline: steps per triplet generation; then "
                                      "checkpoint, snapshot and mine the next generation with "
                                      "the current weights.")
    batch_size: int = setting(30, "Global batch: triplets per step (offline) or images per "
                              "step (online, P x K).")
    optimizer: str = setting("adagrad", "adagrad (the paper's, lr 0.05), adam, or sgd with "
                             "--momentum.", choices=OPTIMIZERS)
    learning_rate: float = setting(0.05, "Initial learning rate.")
    momentum: float = setting(0.9, "Momentum for --optimizer=sgd.")
    lr_schedule: str = setting("constant", "constant; exponential (x lr_decay_rate every "
                               "lr_decay_steps, staircase); piecewise (the same as explicit "
                               "boundaries); cosine (to 0 at --steps).", choices=SCHEDULES)
    lr_decay_steps: int = setting(1000, "Steps between learning-rate decays.")
    lr_decay_rate: float = setting(0.5, "Learning-rate factor per decay.")
    steps: int = setting(1000, "Total training steps; 0 exports the initial network only.")
    checkpoint_every_steps: int = setting(100, "Steps between checkpoints (one Keras epoch "
                                          "each); a kill loses at most this many.")
    export_dir: str | None = setting(None, "Final SavedModel (default: MODEL_DIR/export).")
    eval_pairs: str | None = setting(None, "LFW-format pairs file scored after each "
                                     "generation and at the end (validation); the best "
                                     "checkpoint is kept in MODEL_DIR/best.")
    eval_images: str | None = setting(None, "Image root the --eval_pairs names refer to.")
    eval_every_steps: int | None = setting(None, "Also score --eval_pairs every this many "
                                           "steps (a held-out learning curve); the mining "
                                           "cadence is unchanged (default: after each "
                                           "generation and at the end only).")
    max_train_seconds: float | None = setting(None, "Wall-clock budget: stop training after "
                                              "this many seconds of training and mining "
                                              "(validation not counted, resumed runs count "
                                              "their earlier seconds), then evaluate and "
                                              "export as at --steps (default: no limit).")
    distribution: str = setting("mirrored", "mirrored: MirroredStrategy over all local GPUs "
                                "(or CPU replicas); multi_worker: MultiWorkerMirroredStrategy "
                                "configured by TF_CONFIG.", choices=DISTRIBUTIONS)
    num_cpu_replicas: int = setting(0, "Split the CPU into this many logical devices and "
                                    "mirror over them (multi-replica runs without GPUs).")
    seed: int = setting(0, "Seed of initialisation, mining subsets, shuffling, augmentation.")
    async_mining: bool = setting(False, "Offline: mine generation k+1 in the background "
                                 "while training on k (double buffering; triplets one "
                                 "generation older).")
    keep_generations: int = setting(2, "Offline: keep the newest this many mined generations "
                                    "(and the step snapshots from their mining on); older "
                                    "ones are deleted as training moves on. 0 keeps all.")
    beam_pipeline_args: tuple = setting((), "Beam pipeline options for the miner, comma-"
                                        "separated, e.g. --runner=DataflowRunner,--project=P,"
                                        "--region=R,--temp_location=gs://B/tmp (default: "
                                        "in-process).")
    shuffle_buffer: int = setting(2048, "Triplets in the shuffle buffer of a generation.")
    decoded_cache_mb: float = setting(1024.0, "Offline mining: a generation's images are "
                                      "decoded once and kept in memory when they fit in this "
                                      "many MB (each is used by many triplets); else decoded "
                                      "on every use.")
    verbose: int | None = setting(None, "Keras progress: 1 bar, 2 one line per epoch "
                                  "(default: 1 on a terminal, 2 in logs).")

    def __post_init__(self):
        if self.input_shape is not None:
            self.input_shape = tuple(int(s) for s in self.input_shape)
        self.beam_pipeline_args = tuple(self.beam_pipeline_args or ())
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the first bad field and its value."""
        try:
            self.validate_mining()
        except ValueError as e:
            raise ValueError(f"TrainConfig.{e}") from None
        choices = {"mining": MINING_MODES, "optimizer": OPTIMIZERS, "lr_schedule": SCHEDULES,
                   "distribution": DISTRIBUTIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        positive = ("embedding_dim", "remine_every_steps", "batch_size", "checkpoint_every_steps",
                    "lr_decay_steps", "shuffle_buffer")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("steps", "num_cpu_replicas", "decoded_cache_mb"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.keep_generations == 1 or self.keep_generations < 0:
            raise ValueError("TrainConfig.keep_generations must be 0 (keep all) or >= 2 (the "
                             "generation just trained on stays while other workers may still "
                             f"read it), got {self.keep_generations!r}")
        for name in ("eval_every_steps", "max_train_seconds"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be > 0 (or unset), "
                                 f"got {getattr(self, name)!r}")
        if self.max_train_seconds is not None and self.distribution == "multi_worker":
            raise ValueError("TrainConfig.max_train_seconds is not supported with "
                             "distribution='multi_worker' (each worker's clock would stop it "
                             "at a different step)")
        if self.eval_every_steps is not None and not self.eval_pairs:
            raise ValueError("TrainConfig.eval_every_steps needs eval_pairs and eval_images "
                             f"(got eval_every_steps={self.eval_every_steps!r}, no eval_pairs)")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if (self.eval_pairs is None) != (self.eval_images is None):
            raise ValueError("TrainConfig.eval_pairs and eval_images must be given together "
                             f"(got eval_pairs={self.eval_pairs!r}, "
                             f"eval_images={self.eval_images!r})")
        if self.mining == "online" and self.batch_size < 2 * self.images_per_identity:
            raise ValueError(
                f"online mining needs batch_size >= 2 * images_per_identity (P >= 2 identities "
                f"of K images each), got batch_size={self.batch_size}, "
                f"images_per_identity={self.images_per_identity}")
        if not self.train_data:
            raise ValueError("TrainConfig.train_data is required (a beam_jobs.build_dataset output)")
        if not self.model_dir:
            raise ValueError("TrainConfig.model_dir is required")

    @property
    def resolved_export_dir(self) -> str:
        return self.export_dir or self.model_dir.rstrip("/") + "/export"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        d["beam_pipeline_args"] = list(self.beam_pipeline_args)
        return d

    @classmethod
    def from_dict(cls, values: dict, source: str = "TrainConfig") -> "TrainConfig":
        """The inverse of to_dict; an unknown key is an error naming it and `source`. Runs
        recorded before the network's name was `architecture` called it `model`."""
        values = dict(values)
        if "model" in values and "architecture" not in values:
            values["architecture"] = values.pop("model")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{source}: unknown TrainConfig field(s) {unknown}")
        return cls(**values)

    def save(self, path: str) -> None:
        io_utils.write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str) -> "TrainConfig":
        return cls.from_dict(io_utils.read_json(path), source=path)

    @classmethod
    def from_flagfile(cls, path: str, **overrides) -> "TrainConfig":
        """A recipe of flags (configs/*.flags, as `python -m facenet_tf.train --flagfile=PATH`
        reads it), with `overrides` on top: e.g. TrainConfig.from_flagfile(
        "configs/orl_demo.flags", train_data=..., model_dir=...)."""
        values = config_flags.read_flagfile(cls, path)
        values.update(overrides)
        return cls(**values)

    def mining_config(self, model: str, output_dir: str, seed: int,
                      generation: int) -> MiningConfig:
        """The Beam miner's config for one generation of this run, mined by `model` (the
        path of the step's snapshot)."""
        return MiningConfig(dataset=self.train_data, model=model, output_dir=output_dir,
                            seed=seed, generation=generation, **self.subset_mining())
