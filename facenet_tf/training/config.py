"""TrainConfig: every setting of a training run, as one JSON-able dataclass."""

import dataclasses

from facenet_tf.common import io_utils
from facenet_tf.pipelines.mine_triplets import MiningConfig

MINING_MODES = ("offline", "online")
MINING_STRATEGIES = ("semi_hard", "hard", "all", "random")
OPTIMIZERS = ("adagrad", "adam", "sgd")
SCHEDULES = ("constant", "exponential", "cosine", "piecewise")
DISTRIBUTIONS = ("mirrored", "multi_worker")


@dataclasses.dataclass
class TrainConfig:
    """One training run. Paths may be local or gs://; see facenet_tf.train for each field's flag."""
    train_data: str
    model_dir: str
    model: str = "nns2"
    embedding_dim: int = 128
    input_shape: tuple | None = None
    crop_fraction: float = 1.0
    augment: bool = False
    alpha: float = 0.2
    mining: str = "offline"
    strategy: str = "semi_hard"
    remine_every_steps: int = 1000
    identities_per_subset: int = 45
    images_per_identity: int = 40
    num_subsets: int | None = None
    subset_fraction: float | None = None
    batch_size: int = 30
    optimizer: str = "adagrad"
    learning_rate: float = 0.05
    momentum: float = 0.9
    lr_schedule: str = "constant"
    lr_decay_steps: int = 1000
    lr_decay_rate: float = 0.5
    steps: int = 1000
    checkpoint_every_steps: int = 100
    export_dir: str | None = None
    eval_pairs: str | None = None
    eval_images: str | None = None
    distribution: str = "mirrored"
    num_cpu_replicas: int = 0
    seed: int = 0
    async_mining: bool = False
    keep_generations: int = 2
    beam_pipeline_args: tuple = ()
    shuffle_buffer: int = 2048
    decoded_cache_mb: float = 1024.0
    verbose: int | None = None

    def __post_init__(self):
        if self.input_shape is not None:
            self.input_shape = tuple(int(s) for s in self.input_shape)
        self.beam_pipeline_args = tuple(self.beam_pipeline_args or ())
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the first bad field and its value."""
        choices = {"mining": MINING_MODES, "strategy": MINING_STRATEGIES,
                   "optimizer": OPTIMIZERS, "lr_schedule": SCHEDULES,
                   "distribution": DISTRIBUTIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        positive = ("embedding_dim", "remine_every_steps", "identities_per_subset",
                    "images_per_identity", "batch_size", "checkpoint_every_steps",
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
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.alpha < 0:
            raise ValueError(f"TrainConfig.alpha must be >= 0, got {self.alpha!r}")
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
        """The inverse of to_dict; an unknown key is an error naming it and `source`."""
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

    def mining_config(self, model: str, output_dir: str, seed: int,
                      generation: int) -> MiningConfig:
        """The Beam miner's config for one generation of this run, mined by `model`."""
        return MiningConfig(
            dataset=self.train_data, model=model, output_dir=output_dir,
            strategy=self.strategy, alpha=self.alpha,
            identities_per_subset=self.identities_per_subset,
            images_per_identity=self.images_per_identity, num_subsets=self.num_subsets,
            subset_fraction=self.subset_fraction, seed=seed, generation=generation)
