"""Offline triplet mining (FaceNet section 3.2) as an Apache Beam job.

Samples subsets of identities from a dataset written by beam_jobs.build_dataset, embeds every
chosen image once with a model (loaded once per worker), mines each subset's triplets with
facenet_tf.triplets.mining.select_triplets and writes them as sharded triplet TFRecords; the
generation's manifest.json is written last, so readers only ever see complete generations.

Runs on Beam's in-process FnApiRunner by default (facenet_tf.pipelines.options), or on any
runner its pipeline options name (see docs/scaling.md). The command is beam_jobs.mine_triplets;
the trainer calls mine_triplets() for each generation.
"""

import dataclasses
import functools
import logging
import os
import time
import uuid

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.utils.shared import Shared

from facenet_tf.common import io_utils, runinfo
from facenet_tf.common.config_flags import setting
from facenet_tf.data import readers, records
from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.pipelines import beam_utils
from facenet_tf.pipelines import mining_transforms as mt
from facenet_tf.pipelines.options import pipeline_options as make_pipeline_options
from facenet_tf.pipelines.options import runner_of
from facenet_tf.triplets import mining

STRATEGIES = mining.STRATEGIES


@dataclasses.dataclass(kw_only=True)
class SubsetMining:
    """How offline triplets are mined: the selection rule and the subsets of identities it
    runs on. Shared by the miner's MiningConfig and the trainer's TrainConfig (which mines a
    generation every remine_every_steps)."""
    strategy: str = setting("semi_hard", "Triplet selection rule (facenet_tf.triplets.mining."
                            "select_triplets; the same code mines online and offline).",
                            choices=STRATEGIES)
    alpha: float = setting(0.2, "Triplet margin alpha on squared L2 distances.")
    identities_per_subset: int = setting(45, "Offline: identities per mined subset.")
    images_per_identity: int = setting(40, "At most this many images per identity in a mined "
                                       "subset (a seeded sample); online: K of the P x K "
                                       "batches.")
    num_subsets: int | None = setting(None, "Offline: subsets mined per generation (default: "
                                      "enough to cover --subset_fraction of the identities).")
    subset_fraction: float | None = setting(None, "Offline, instead of --num_subsets: the "
                                            "fraction of the identities with >= 2 images that "
                                            "the subsets cover (1.0 if neither is given).")

    def validate_mining(self) -> None:
        """Raises ValueError naming the first bad mining setting and its value."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        for name in ("identities_per_subset", "images_per_identity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.num_subsets is not None and self.subset_fraction is not None:
            raise ValueError("give num_subsets or subset_fraction, not both")
        if self.num_subsets is not None and self.num_subsets < 1:
            raise ValueError(f"num_subsets must be >= 1, got {self.num_subsets!r}")
        if self.subset_fraction is not None and not 0 < self.subset_fraction:
            raise ValueError(f"subset_fraction must be > 0, got {self.subset_fraction!r}")

    def subset_mining(self) -> dict:
        """These settings as keyword arguments (for another SubsetMining)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SubsetMining)}


@dataclasses.dataclass
class MiningConfig(SubsetMining):
    """One generation of offline mining.

    Subsets: num_subsets, or enough subsets to cover subset_fraction of the identities that
    have >= 2 images (1.0 if neither is given); each holds identities_per_subset identities x
    up to images_per_identity images, plus negatives_per_subset random images of other
    identities (including one-image identities) that serve only as negatives.
    strategy_options are passed to select_triplets (e.g. its choice of negative).
    preprocess overrides the model's own preprocessing (for .keras files without metadata).
    """
    dataset: str = setting(help="Dataset directory written by beam_jobs.build_dataset "
                           "(manifest.json + images-*.tfrecord shards); local or gs://.")
    model: str = setting(help="Embedding model: a SavedModel written by facenet_tf.export "
                         "(including the converted pretrained model), a .keras or a .tflite "
                         "file.")
    output_dir: str = setting(help="Generation directory to write (triplets-*.tfrecord, "
                              "images-*.tfrecord + manifest.json, written last); must not hold "
                              "a complete generation.")
    negatives_per_subset: int = setting(0, "Extra random images of other identities per "
                                        "subset, used only as negatives.")
    seed: int = setting(0, "Seed of subset sampling and of random selection.")
    generation: int = setting(0, "Generation number recorded in every triplet.")
    num_shards: int = setting(4, "Number of triplet TFRecord shards.")
    batch_size: int = setting(64, "Images per embedding batch.")
    strategy_options: dict = setting(
        help="JSON object of extra select_triplets options, e.g. "
             "'{\"choose\": \"hardest\"}' (semi_hard's negative within the band).",
        default_factory=dict)
    preprocess: PreprocessConfig | None = None

    def __post_init__(self):
        self.validate_mining()
        for name in ("num_shards", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.negatives_per_subset < 0:
            raise ValueError(f"negatives_per_subset must be >= 0, got "
                             f"{self.negatives_per_subset!r}")
        # select_triplets rejects unknown options; find out now, not on a worker.
        mining.select_triplets(np.zeros((2, 1), np.float32), [0, 1], self.strategy,
                               alpha=self.alpha, seed=0, **self.strategy_options)


def read_dataset(dataset_dir: str) -> dict:
    """The dataset's manifest plus resolved shard paths; clear errors for unusable datasets."""
    manifest = readers.load_manifest(dataset_dir)
    counts = manifest["images_per_identity"]
    label_map = manifest["label_map"]
    num_images = int(manifest["num_images"])
    if num_images == 0:
        raise ValueError(f"{dataset_dir}: the dataset is empty (num_images = 0)")
    if len(label_map) < 2:
        raise ValueError(f"{dataset_dir}: {len(label_map)} identit"
                         f"{'y' if len(label_map) == 1 else 'ies'}; mining needs at least 2")
    eligible = sorted(int(label_map[name]) for name, n in counts.items() if int(n) >= 2)
    if not eligible:
        raise ValueError(f"{dataset_dir}: no identity has 2 or more images, so there is no "
                         f"anchor-positive pair to mine")
    shards = readers.shard_paths(dataset_dir, manifest)
    if not shards:
        raise ValueError(f"{dataset_dir}/manifest.json: empty 'shards' list")
    images_per_label = {int(label_map[name]): int(n) for name, n in counts.items()}
    return {"manifest": manifest, "shards": shards, "eligible_labels": eligible,
            "images_per_label": images_per_label, "num_images": num_images,
            "num_identities": len(label_map)}


def load_model_info(config: MiningConfig, shared_model: Shared) -> dict:
    """Loads the model on the driver: a clear error now rather than on every worker.

    The model is loaded through `shared_model`, so in-process workers reuse it; the returned
    dict holds it ("embedder") and must stay referenced while the pipeline runs.
    """
    if not tf.io.gfile.exists(config.model):
        raise FileNotFoundError(f"--model {config.model}: no such file or directory")
    preprocess = config.preprocess.to_dict() if config.preprocess else None
    try:
        embedder = mt.load_job_embedder(config.model, preprocess, config.batch_size,
                                        shared_model)
    except Exception as e:
        raise ValueError(f"--model {config.model}: not a loadable embedding model "
                         f"(a SavedModel from facenet_tf.export or a .keras file): {e}") from e
    metadata = dict(getattr(embedder, "metadata", None) or {})
    step = metadata.get("step")
    return {"fingerprint": str(embedder.fingerprint), "step": step,
            "embedding_dim": int(embedder.embedding_dim),
            "preprocess": embedder.preprocess.to_dict(), "embedder": embedder}


def build_pipeline(pipeline, config: MiningConfig, shard_paths, subsets, model_tag: str,
                   preprocess_dict: dict, tmp_dir: str, expected_images: int,
                   shared_model: Shared | None = None):
    """Adds the mining stages to `pipeline`; its side results (the shards written, the
    subsets' stats, bad records) land in tmp_dir (beam_utils.read_side_results).
    expected_images: about how many images the generation embeds (sizes the embedding
    batches' groups: mining_transforms.max_selected_images).
    """
    label_to_subsets = {}
    for s, members in enumerate(subsets):
        for label in members:
            label_to_subsets.setdefault(label, []).append(s)
    seed = config.seed

    parsed = (pipeline
              | "ShardPaths" >> beam.Create(shard_paths)
              | "Read" >> beam.io.ReadAllFromTFRecord(with_filename=True)
              | "Parse" >> beam_utils.ParDoWithOutputs(mt.parse_record, mt.BAD))
    recs = parsed[beam_utils.MAIN]
    main = (recs
            | "MainCandidates" >> beam.FlatMap(mt.main_candidates, label_to_subsets, seed)
            | "ImagesPerIdentity" >> beam.combiners.Top.SmallestPerKey(
                config.images_per_identity)
            | "MainMemberships" >> beam.FlatMap(mt.main_memberships))
    if config.negatives_per_subset:
        negatives = (recs
                     | "NegativeCandidates" >> beam.FlatMap(
                         mt.negative_candidates, label_to_subsets, len(subsets), seed)
                     | "NegativesPerSubset" >> beam.combiners.Top.SmallestPerKey(
                         config.negatives_per_subset)
                     | "NegativeMemberships" >> beam.FlatMap(mt.negative_memberships))
    else:
        negatives = pipeline | "NoNegatives" >> beam.Create([])
    joined = ({"records": recs | "ById" >> beam.Map(lambda r: (r.image_id, r)),
               "main": main, "negatives": negatives}
              | "JoinSelection" >> beam.CoGroupByKey()
              | "Selected" >> beam_utils.ParDoWithOutputs(mt.join_selection, mt.BAD))
    embedded = (joined[beam_utils.MAIN]
                | "Batch" >> beam_utils.KeyedBatches(mt.selected_image_id, config.batch_size,
                                                     expected_images)
                | "Embed" >> beam_utils.ParDoWithOutputs(mt.EmbedImages(
                    config.model, preprocess_dict, config.batch_size, shared_model), mt.BAD))
    embeddings = embedded[beam_utils.MAIN]
    mined = (embeddings
             | "BySubset" >> beam.FlatMap(mt.by_subset)
             | "GroupSubsets" >> beam.GroupByKey()
             | "Mine" >> beam_utils.ParDoWithOutputs(mt.MineSubset(
                 config.strategy, config.alpha, seed, config.num_shards,
                 config.strategy_options), mt.STATS))
    shards = (mined[beam_utils.MAIN]
              | "GroupShards" >> beam.GroupByKey()
              | "WriteShards" >> beam.ParDo(beam_utils.WriteShard(
                  tmp_dir, records.TRIPLET_SHARD_PREFIX, config.num_shards,
                  functools.partial(mt.serialize_triplet_rows, model_tag, config.strategy,
                                    config.alpha, config.generation), mt.NAMESPACE)))
    image_shards = (embeddings
                    | "ByImageShard" >> beam.FlatMap(mt.by_image_shard, config.num_shards)
                    | "GroupImageShards" >> beam.GroupByKey()
                    | "WriteImageShards" >> beam.ParDo(beam_utils.WriteShard(
                        tmp_dir, records.IMAGE_SHARD_PREFIX, config.num_shards,
                        mt.serialize_image_records, mt.NAMESPACE)))
    bad = (parsed[mt.BAD], joined[mt.BAD], embedded[mt.BAD]) | "AllBad" >> beam.Flatten()
    ({"shards": shards, "image_shards": image_shards, "stats": mined[mt.STATS], "bad": bad}
     | "SideResults" >> beam_utils.WriteSideResults(tmp_dir))


def mine_triplets(config: MiningConfig, pipeline_options=None, run_info: dict | None = None):
    """Runs one generation of offline mining into config.output_dir; returns its manifest.

    pipeline_options: None (in-process FnApiRunner), a PipelineOptions, or a list of Beam
    command-line arguments. Raises before the pipeline starts on an unusable dataset or model,
    or if output_dir already holds a complete generation.
    """
    log = logging.getLogger("mine_triplets")
    started = time.time()
    if io_utils.is_complete(config.output_dir):
        raise FileExistsError(f"{config.output_dir}: already holds a complete generation "
                              f"({io_utils.MANIFEST_NAME} exists); use a new output_dir")
    data = read_dataset(config.dataset)
    shared_model = Shared()
    model = load_model_info(config, shared_model)
    model_tag = model["fingerprint"]
    eligible = data["eligible_labels"]
    num_subsets = config.num_subsets or mt.num_subsets_for_fraction(
        len(eligible), config.identities_per_subset, config.subset_fraction or 1.0)
    subsets = mt.sample_subsets(eligible, num_subsets, config.identities_per_subset,
                                config.seed)
    log.info("mine_triplets: dataset %s: %d images, %d identities (%d with >= 2 images), "
             "%d shards", config.dataset, data["num_images"], data["num_identities"],
             len(eligible), len(data["shards"]))
    log.info("mine_triplets: model %s (fingerprint %s, step %s); %d subsets of %d identities",
             config.model, model["fingerprint"], model["step"], num_subsets, len(subsets[0]))

    tf.io.gfile.makedirs(config.output_dir)
    tmp_dir = os.path.join(config.output_dir, f".tmp-{uuid.uuid4().hex}")
    tf.io.gfile.makedirs(tmp_dir)
    options = make_pipeline_options(pipeline_options)
    pipeline = beam.Pipeline(options=options)
    expected_images = mt.max_selected_images(data["images_per_label"], subsets,
                                             config.images_per_identity,
                                             config.negatives_per_subset)
    build_pipeline(pipeline, config, data["shards"], subsets, model_tag, model["preprocess"],
                   tmp_dir, expected_images, shared_model)
    log.info("mine_triplets: running the pipeline (read, sample, embed, mine, write)")
    result = beam_utils.run_to_completion(pipeline)
    del model["embedder"]
    counters = beam_utils.query_counters(result, mt.NAMESPACE)
    log.info("mine_triplets: pipeline done in %.1f s; counters %s", time.time() - started,
             counters)

    side_results = beam_utils.read_side_results(tmp_dir)
    stats = sorted(side_results["stats"], key=lambda d: d["subset"])
    bad = side_results["bad"]
    num_triplets = sum(d["triplets"] for d in stats)
    pairs = sum(d["anchor_positive_pairs"] for d in stats)

    def make_manifest(published):
        shard_names, shard_counts = published[records.TRIPLET_SHARD_PREFIX]
        image_shard_names, image_counts = published[records.IMAGE_SHARD_PREFIX]
        if num_triplets != sum(shard_counts):
            raise RuntimeError(f"mine_triplets: {num_triplets} triplets mined but "
                               f"{sum(shard_counts)} written; not publishing a manifest")
        return {
            "kind": "triplets",
            "format_version": records.TRIPLET_FORMAT_VERSION,
            "dataset": config.dataset,
            "dataset_num_images": data["num_images"],
            "model": config.model,
            "model_fingerprint": model["fingerprint"],
            "model_step": model["step"],
            "embedding_dim": model["embedding_dim"],
            "preprocess": model["preprocess"],
            "strategy": config.strategy,
            "strategy_options": dict(config.strategy_options),
            "alpha": config.alpha,
            "seed": config.seed,
            "generation": config.generation,
            "identities_per_subset": config.identities_per_subset,
            "images_per_identity": config.images_per_identity,
            "negatives_per_subset": config.negatives_per_subset,
            "num_subsets": num_subsets,
            "num_subsets_mined": len(stats),
            "subsets": [{"subset": s, "labels": members} for s, members in enumerate(subsets)],
            "subset_stats": stats,
            "num_images": sum(d["images"] for d in stats),
            "num_anchor_positive_pairs": pairs,
            "num_triplets": num_triplets,
            "semi_hard_pair_fraction": (sum(d["pairs_with_semi_hard_negative"] for d in stats)
                                        / pairs if pairs else 0.0),
            "mean_d_ap": (sum(d["sum_d_ap"] for d in stats) / num_triplets
                          if num_triplets else None),
            "mean_d_an": (sum(d["sum_d_an"] for d in stats) / num_triplets
                          if num_triplets else None),
            "num_bad_records": len(bad),
            "bad_records": bad,
            "shards": shard_names,
            "triplets_per_shard": shard_counts,
            "image_shards": image_shard_names,
            "images_per_image_shard": image_counts,
            "num_images_stored": sum(image_counts),
            "beam_runner": runner_of(options),
            "counters": counters,
            "elapsed_seconds": round(time.time() - started, 3),
            "run_info": run_info if run_info is not None else runinfo.collect(
                {k: v for k, v in dataclasses.asdict(config).items() if k != "preprocess"}),
        }

    manifest = beam_utils.publish(tmp_dir, config.output_dir, {
        records.TRIPLET_SHARD_PREFIX: (config.num_shards, side_results["shards"]),
        records.IMAGE_SHARD_PREFIX: (config.num_shards, side_results["image_shards"]),
    }, make_manifest)
    log.info("mine_triplets: generation %d complete: %d subsets, %d images, %d anchor-positive "
             "pairs (%.1f%% with a semi-hard negative), %d triplets, %d bad records -> %s",
             config.generation, len(stats), manifest["num_images"], pairs,
             100 * manifest["semi_hard_pair_fraction"], num_triplets, len(bad),
             config.output_dir)
    return manifest
