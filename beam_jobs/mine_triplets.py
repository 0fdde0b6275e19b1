"""Offline triplet mining (FaceNet section 3.2) as an Apache Beam job.

Samples subsets of identities from a dataset written by beam_jobs.build_dataset, embeds every
chosen image once with a model (loaded once per worker), mines each subset's triplets with
facenet_tf.mining.select_triplets and writes them as sharded triplet TFRecords; the
generation's manifest.json is written last, so readers only ever see complete generations.

Runs on Beam's in-process FnApiRunner by default (beam_jobs.options); any standard Beam
pipeline option (--runner, --direct_num_workers, --direct_running_mode, --project, --region,
--temp_location, --flink_master, --spark_master_url, ...) may follow the job's own flags. See
docs/scaling.md.

  python -m beam_jobs.mine_triplets --dataset DATA --model MODEL --output_dir OUT \
      [--strategy semi_hard] [--num_subsets 10] [--runner DataflowRunner ...]
"""

import dataclasses
import functools
import json
import logging
import os
import sys
import time
import uuid

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.utils.shared import Shared

from beam_jobs import mining_transforms as mt
from beam_jobs import options as job_options
from facenet_tf import io_utils, mining, runinfo
from facenet_tf.data import records
from facenet_tf.data.preprocess import PreprocessConfig

STRATEGIES = mining.STRATEGIES


@dataclasses.dataclass
class MiningConfig:
    """One generation of offline mining.

    Subsets: num_subsets, or enough subsets to cover subset_fraction of the identities that
    have >= 2 images (1.0 if neither is given); each holds identities_per_subset identities x
    up to images_per_identity images, plus negatives_per_subset random images of other
    identities (including one-image identities) that serve only as negatives.
    strategy_options are passed to select_triplets (e.g. its choice of negative).
    preprocess overrides the model's own preprocessing (for .keras files without metadata).
    """
    dataset: str
    model: str
    output_dir: str
    strategy: str = "semi_hard"
    alpha: float = 0.2
    identities_per_subset: int = 45
    images_per_identity: int = 40
    num_subsets: int | None = None
    subset_fraction: float | None = None
    negatives_per_subset: int = 0
    seed: int = 0
    generation: int = 0
    num_shards: int = 4
    batch_size: int = 64
    strategy_options: dict = dataclasses.field(default_factory=dict)
    preprocess: PreprocessConfig | None = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        for name in ("identities_per_subset", "images_per_identity", "num_shards", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.negatives_per_subset < 0:
            raise ValueError(f"negatives_per_subset must be >= 0, got "
                             f"{self.negatives_per_subset!r}")
        if self.num_subsets is not None and self.subset_fraction is not None:
            raise ValueError("give num_subsets or subset_fraction, not both")
        if self.num_subsets is not None and self.num_subsets < 1:
            raise ValueError(f"num_subsets must be >= 1, got {self.num_subsets!r}")
        if self.subset_fraction is not None and not 0 < self.subset_fraction:
            raise ValueError(f"subset_fraction must be > 0, got {self.subset_fraction!r}")
        # select_triplets rejects unknown options; find out now, not on a worker.
        mining.select_triplets(np.zeros((2, 1), np.float32), [0, 1], self.strategy,
                               alpha=self.alpha, seed=0, **self.strategy_options)


def read_dataset(dataset_dir: str) -> dict:
    """The dataset's manifest plus resolved shard paths; clear errors for unusable datasets."""
    manifest = io_utils.read_manifest(dataset_dir)
    counts = manifest.get("images_per_identity")
    label_map = manifest.get("label_map")
    if not isinstance(counts, dict) or not isinstance(label_map, dict):
        raise ValueError(f"{dataset_dir}/manifest.json: needs 'label_map' and "
                         f"'images_per_identity' objects (is it a build_dataset output?)")
    num_images = int(manifest.get("num_images", sum(counts.values())))
    if num_images == 0:
        raise ValueError(f"{dataset_dir}: the dataset is empty (num_images = 0)")
    if len(label_map) < 2:
        raise ValueError(f"{dataset_dir}: {len(label_map)} identit"
                         f"{'y' if len(label_map) == 1 else 'ies'}; mining needs at least 2")
    eligible = sorted(int(label_map[name]) for name, n in counts.items() if int(n) >= 2)
    if not eligible:
        raise ValueError(f"{dataset_dir}: no identity has 2 or more images, so there is no "
                         f"anchor-positive pair to mine")
    shards = io_utils.listed_shards(dataset_dir, manifest)
    if not shards:
        raise ValueError(f"{dataset_dir}/manifest.json: empty 'shards' list")
    return {"manifest": manifest, "shards": shards, "eligible_labels": eligible,
            "num_images": num_images, "num_identities": len(label_map)}


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
                   preprocess_dict: dict, tmp_dir: str, shared_model: Shared | None = None):
    """Adds the mining stages to `pipeline`; side results land as JSON files in tmp_dir."""
    label_to_subsets = {}
    for s, members in enumerate(subsets):
        for label in members:
            label_to_subsets.setdefault(label, []).append(s)
    seed = config.seed

    parsed = (pipeline
              | "ShardPaths" >> beam.Create(shard_paths)
              | "Read" >> beam.io.ReadAllFromTFRecord(with_filename=True)
              | "Parse" >> beam.FlatMap(mt.parse_record).with_outputs(mt.BAD, main="records"))
    recs = parsed.records
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
              | "Selected" >> beam.FlatMap(mt.join_selection).with_outputs(
                  mt.BAD, main="selected"))
    embedded = (joined.selected
                | "Batch" >> beam.BatchElements(min_batch_size=config.batch_size,
                                                max_batch_size=config.batch_size)
                | "Embed" >> beam.ParDo(mt.EmbedImages(
                    config.model, preprocess_dict, config.batch_size,
                    shared_model)).with_outputs(
                    mt.BAD, main="embeddings"))
    mined = (embedded.embeddings
             | "BySubset" >> beam.FlatMap(mt.by_subset)
             | "GroupSubsets" >> beam.GroupByKey()
             | "Mine" >> beam.ParDo(mt.MineSubset(
                 config.strategy, config.alpha, seed, config.num_shards,
                 config.strategy_options)).with_outputs(mt.STATS, main="triplets"))
    shards = (mined.triplets
              | "GroupShards" >> beam.GroupByKey()
              | "WriteShards" >> beam.ParDo(mt.WriteShard(
                  tmp_dir, config.num_shards, records.TRIPLET_SHARD_PREFIX,
                  functools.partial(mt.serialize_triplet_rows, model_tag, config.strategy,
                                    config.alpha, config.generation),
                  "num_triplets", "triplets_written")))
    image_shards = (embedded.embeddings
                    | "ByImageShard" >> beam.FlatMap(mt.by_image_shard, config.num_shards)
                    | "GroupImageShards" >> beam.GroupByKey()
                    | "WriteImageShards" >> beam.ParDo(mt.WriteShard(
                        tmp_dir, config.num_shards, records.IMAGE_SHARD_PREFIX,
                        mt.serialize_image_records, "num_images", "images_written")))
    bad = (parsed[mt.BAD], joined[mt.BAD], embedded[mt.BAD]) | "AllBad" >> beam.Flatten()
    for name, pcoll in (("shards", shards), ("image_shards", image_shards),
                        ("stats", mined[mt.STATS]), ("bad", bad)):
        (pcoll
         | f"Collect_{name}" >> beam.combiners.ToList()
         | f"Save_{name}" >> beam.Map(mt.write_json, os.path.join(tmp_dir, f"{name}.json")))


def _query_counters(result) -> dict:
    try:
        metrics = result.metrics().query(
            beam.metrics.MetricsFilter().with_namespace(mt.NAMESPACE))
        totals = {}
        for c in metrics["counters"]:  # one result per step that uses the counter
            totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + c.committed
        return totals
    except Exception:  # some runners do not report metrics; the manifest has the counts
        return {}


def _publish_shards(tmp_dir, output_dir, prefix, num_shards, written, count_key):
    """Moves the shards the pipeline wrote (an empty file for a shard that got nothing) from
    tmp_dir into output_dir; returns their names and record counts."""
    info = {d["index"]: d for d in written}
    names, counts = [], []
    for i in range(num_shards):
        name = records.shard_name(prefix, i, num_shards)
        src = os.path.join(tmp_dir, name)
        if i not in info:
            with tf.io.TFRecordWriter(src):
                pass
        tf.io.gfile.rename(src, os.path.join(output_dir, name), overwrite=True)
        names.append(name)
        counts.append(info[i][count_key] if i in info else 0)
    return names, counts


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
    pipeline = beam.Pipeline(options=job_options.pipeline_options(pipeline_options))
    build_pipeline(pipeline, config, data["shards"], subsets, model_tag, model["preprocess"],
                   tmp_dir, shared_model)
    log.info("mine_triplets: running the pipeline (read, sample, embed, mine, write)")
    result = pipeline.run()
    result.wait_until_finish()
    del model["embedder"]
    counters = _query_counters(result)
    log.info("mine_triplets: pipeline done in %.1f s; counters %s", time.time() - started,
             counters)

    stats = io_utils.read_json(os.path.join(tmp_dir, "stats.json"))
    bad = io_utils.read_json(os.path.join(tmp_dir, "bad.json"))
    shard_names, shard_counts = _publish_shards(
        tmp_dir, config.output_dir, records.TRIPLET_SHARD_PREFIX, config.num_shards,
        io_utils.read_json(os.path.join(tmp_dir, "shards.json")), "num_triplets")
    image_shard_names, image_counts = _publish_shards(
        tmp_dir, config.output_dir, records.IMAGE_SHARD_PREFIX, config.num_shards,
        io_utils.read_json(os.path.join(tmp_dir, "image_shards.json")), "num_images")
    tf.io.gfile.rmtree(tmp_dir)
    log.info("mine_triplets: published %d shards to %s", len(shard_names), config.output_dir)

    stats = sorted(stats, key=lambda d: d["subset"])
    num_triplets = sum(d["triplets"] for d in stats)
    pairs = sum(d["anchor_positive_pairs"] for d in stats)
    manifest = {
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
        "mean_d_ap": sum(d["sum_d_ap"] for d in stats) / num_triplets if num_triplets else None,
        "mean_d_an": sum(d["sum_d_an"] for d in stats) / num_triplets if num_triplets else None,
        "num_bad_records": len(bad),
        "bad_records": bad,
        "shards": shard_names,
        "triplets_per_shard": shard_counts,
        "image_shards": image_shard_names,
        "images_per_image_shard": image_counts,
        "num_images_stored": sum(image_counts),
        "counters": counters,
        "elapsed_seconds": round(time.time() - started, 3),
        "run_info": run_info if run_info is not None else runinfo.collect(
            {k: v for k, v in dataclasses.asdict(config).items() if k != "preprocess"}),
    }
    if num_triplets != sum(shard_counts):
        raise RuntimeError(f"mine_triplets: {num_triplets} triplets mined but "
                           f"{sum(shard_counts)} written; not publishing a manifest")
    io_utils.write_json_atomic(os.path.join(config.output_dir, io_utils.MANIFEST_NAME), manifest)
    log.info("mine_triplets: generation %d complete: %d subsets, %d images, %d anchor-positive "
             "pairs (%.1f%% with a semi-hard negative), %d triplets, %d bad records -> %s",
             config.generation, len(stats), manifest["num_images"], pairs,
             100 * manifest["semi_hard_pair_fraction"], num_triplets, len(bad),
             config.output_dir)
    return manifest


def _define_flags():
    from absl import flags
    flags.DEFINE_string("dataset", None, "Dataset directory written by beam_jobs.build_dataset "
                        "(manifest.json + images-*.tfrecord shards); local or gs://.")
    flags.DEFINE_string("model", None, "Embedding model: a SavedModel written by "
                        "facenet_tf.export (including the converted pretrained model) or a "
                        ".keras checkpoint.")
    flags.DEFINE_string("output_dir", None, "Generation directory to write (triplets-*.tfrecord, "
                        "images-*.tfrecord + manifest.json, written last); must not hold a "
                        "complete generation.")
    flags.DEFINE_enum("strategy", "semi_hard", list(STRATEGIES), "Triplet selection rule "
                      "(facenet_tf.mining.select_triplets, the same code as online mining).")
    flags.DEFINE_float("alpha", 0.2, "Triplet margin on squared L2 distances.")
    flags.DEFINE_integer("identities_per_subset", 45, "Identities per mined subset.")
    flags.DEFINE_integer("images_per_identity", 40, "At most this many images per identity "
                         "in a subset (a seeded sample).")
    flags.DEFINE_integer("num_subsets", None, "Number of subsets to mine (default: enough to "
                         "cover --subset_fraction of the identities).")
    flags.DEFINE_float("subset_fraction", None, "Instead of --num_subsets: fraction of the "
                       "identities with >= 2 images to cover (1.0 if neither is given).")
    flags.DEFINE_integer("negatives_per_subset", 0, "Extra random images of other identities "
                         "per subset, used only as negatives.")
    flags.DEFINE_integer("seed", 0, "Seed of subset sampling and of random selection.")
    flags.DEFINE_integer("generation", 0, "Generation number recorded in every triplet.")
    flags.DEFINE_integer("num_shards", 4, "Number of triplet TFRecord shards.")
    flags.DEFINE_integer("batch_size", 64, "Images per embedding batch.")
    flags.DEFINE_string("strategy_options", "{}", "JSON object of extra select_triplets "
                        "options, e.g. '{\"negative\": \"hardest\"}'.")
    for name in ("dataset", "model", "output_dir"):
        flags.mark_flag_as_required(name)


def _parse_flags(argv):
    """absl parses the job's flags; everything else is left for Beam's PipelineOptions."""
    from absl import flags
    return flags.FLAGS(argv, known_only=True)


def main(argv):
    from absl import flags
    FLAGS = flags.FLAGS
    logging.getLogger().setLevel(logging.INFO)
    try:
        options = json.loads(FLAGS.strategy_options)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--strategy_options: not JSON ({e})")
    config = MiningConfig(
        dataset=FLAGS.dataset, model=FLAGS.model, output_dir=FLAGS.output_dir,
        strategy=FLAGS.strategy, alpha=FLAGS.alpha,
        identities_per_subset=FLAGS.identities_per_subset,
        images_per_identity=FLAGS.images_per_identity, num_subsets=FLAGS.num_subsets,
        subset_fraction=FLAGS.subset_fraction, negatives_per_subset=FLAGS.negatives_per_subset,
        seed=FLAGS.seed, generation=FLAGS.generation, num_shards=FLAGS.num_shards,
        batch_size=FLAGS.batch_size, strategy_options=options)
    manifest = mine_triplets(config, pipeline_options=argv[1:],
                             run_info=runinfo.collect(runinfo.absl_flag_values()))
    print(json.dumps({k: manifest[k] for k in (
        "num_subsets_mined", "num_images", "num_anchor_positive_pairs", "num_triplets",
        "semi_hard_pair_fraction", "mean_d_ap", "mean_d_an", "num_bad_records")}, indent=2))


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main, flags_parser=_parse_flags)
