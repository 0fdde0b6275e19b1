"""Beam job: an identity-per-folder image dataset -> sharded TFRecords of image records.

    python -m beam_jobs.build_dataset --input_dir DIR --output_dir OUT [--num_shards N] \
        [Beam pipeline options, e.g. --direct_num_workers=2 or --runner=DataflowRunner ...]

Every file under DIR/<identity>/ is validated and normalised to RGB PNG/JPEG
(facenet_tf.data.images); bad files are skipped, counted and listed with their reason in the
manifest. Labels are the sorted identity names numbered 0..n-1 (identities with no usable image
get no label). All images of one identity go to the same shard (a stable hash of the identity
name), sorted by image id, so the same input gives byte-identical shards, and
facenet_tf.data.datasets can stream identity-balanced batches. Shards are written to a
temporary folder and published at the end; manifest.json is written last.
"""

import hashlib
import json
import logging
import os
import time
import uuid

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import options as job_options
from facenet_tf import io_utils, runinfo
from facenet_tf.data import images, records

MANIFEST_FORMAT = "facenet_tf.images"
MANIFEST_VERSION = 1
DEFAULT_NUM_SHARDS = 8
PROGRESS_EVERY = 1000
_SUMMARY_NAME = "_summary.json"
_NAMESPACE = "build_dataset"


def shard_of(identity: str, num_shards: int) -> int:
    """The shard an identity's images go to: a stable (process-independent) hash."""
    digest = hashlib.sha256(identity.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def _relative_parts(path: str, input_dir: str) -> list:
    rel = path[len(input_dir):] if path.startswith(input_dir) else path
    return [part for part in rel.replace("\\", "/").split("/") if part]


class NormalizeFile(beam.DoFn):
    """FileMetadata -> (identity, file name, NormalizedImage), or a tagged skip record."""
    SKIPPED = "skipped"

    def __init__(self, input_dir: str):
        self._input_dir = input_dir

    def setup(self):
        self._ok = Metrics.counter(_NAMESPACE, "images_ok")
        self._converted = Metrics.counter(_NAMESPACE, "images_converted")
        self._skipped = Metrics.counter(_NAMESPACE, "images_skipped")
        self._seen = 0
        self._start = time.time()

    def process(self, metadata):
        path = metadata.path
        self._seen += 1
        if self._seen % PROGRESS_EVERY == 0:
            logging.info("build_dataset: this worker has read %d files (%.0f files/s)",
                         self._seen, self._seen / max(time.time() - self._start, 1e-9))
        parts = _relative_parts(path, self._input_dir)
        if len(parts) != 2:
            self._skipped.inc()
            reason = ("not inside an identity folder" if len(parts) < 2
                      else "nested below an identity folder")
            yield beam.pvalue.TaggedOutput(self.SKIPPED, {"path": path, "reason": reason})
            return
        try:
            with FileSystems.open(path) as f:
                data = f.read()
            image = images.normalize_image(data)
        except images.BadImageError as e:
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(self.SKIPPED, {"path": path, "reason": str(e)})
            return
        except OSError as e:
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(
                self.SKIPPED, {"path": path, "reason": f"cannot read file ({e})"})
            return
        self._ok.inc()
        if image.converted:
            self._converted.inc()
        yield parts[0], parts[1], image


class WriteShard(beam.DoFn):
    """(shard index, {"records": [...]}) -> writes that shard, sorted by image id."""

    def __init__(self, tmp_dir: str, num_shards: int):
        self._tmp_dir = tmp_dir
        self._num_shards = num_shards

    def process(self, element, label_map):
        import tensorflow as tf
        index, grouped = element
        rows = sorted(grouped["records"], key=lambda r: f"{r[0]}/{r[1]}")
        name = records.shard_name(records.IMAGE_SHARD_PREFIX, index, self._num_shards)
        path = FileSystems.join(self._tmp_dir, name)
        with tf.io.TFRecordWriter(path) as writer:
            for identity, file_name, image in rows:
                record = records.ImageRecord(
                    encoded=image.encoded, format=image.format, label=label_map[identity],
                    identity=identity, image_id=f"{identity}/{file_name}",
                    height=image.height, width=image.width)
                # Deterministic serialisation: Features is a protobuf map.
                writer.write(records.image_example(record).SerializeToString(deterministic=True))
        logging.info("build_dataset: wrote shard %s (%d images)", name, len(rows))
        yield name, len(rows)


def _summary(_, label_map, per_identity, skipped, converted, shards):
    skipped = sorted(skipped, key=lambda s: s["path"])
    return {
        "label_map": label_map,
        "images_per_identity": dict(sorted(per_identity)),
        "num_images": sum(n for _, n in per_identity),
        "num_identities": len(label_map),
        "num_converted": converted,
        "shards": [name for name, _ in sorted(shards)],
        "shard_sizes": {name: n for name, n in shards},
        "skipped": skipped,
        "num_skipped": len(skipped),
    }


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode("utf-8"))


def build_pipeline(pipeline: beam.Pipeline, input_dir: str, tmp_dir: str, num_shards: int):
    """Adds the ingestion stages to `pipeline`; the summary lands in tmp_dir/_summary.json."""
    files = (pipeline
             | "MatchFiles" >> fileio.MatchFiles(FileSystems.join(input_dir, "**"))
             | "Spread" >> beam.Reshuffle())
    normalized = files | "Normalize" >> beam.ParDo(NormalizeFile(input_dir)).with_outputs(
        NormalizeFile.SKIPPED, main="ok")
    ok, skipped = normalized.ok, normalized[NormalizeFile.SKIPPED]

    identities = ok | "Identity" >> beam.Map(lambda r: r[0])
    label_map = (identities
                 | "Distinct" >> beam.Distinct()
                 | "AllIdentities" >> beam.combiners.ToList()
                 | "Labels" >> beam.Map(lambda ids: {n: i for i, n in enumerate(sorted(ids))}))
    per_identity = (identities
                    | "CountPerIdentity" >> beam.combiners.Count.PerElement()
                    | "PerIdentityList" >> beam.combiners.ToList())
    converted = (ok
                 | "Converted" >> beam.Filter(lambda r: r[2].converted)
                 | "CountConverted" >> beam.combiners.Count.Globally())

    keyed = ok | "KeyByShard" >> beam.Map(lambda r: (shard_of(r[0], num_shards), r))
    # Every shard index appears, so shards with no image are still written (empty).
    all_shards = (pipeline
                  | "ShardIndices" >> beam.Create([(i, None) for i in range(num_shards)]))
    shards = ({"records": keyed, "index": all_shards}
              | "GroupByShard" >> beam.CoGroupByKey()
              | "WriteShards" >> beam.ParDo(WriteShard(tmp_dir, num_shards),
                                            label_map=beam.pvalue.AsSingleton(label_map))
              | "ShardList" >> beam.combiners.ToList())

    summary_path = FileSystems.join(tmp_dir, _SUMMARY_NAME)
    (pipeline
     | "SummarySeed" >> beam.Create([None])
     | "Summarize" >> beam.Map(
         _summary,
         label_map=beam.pvalue.AsSingleton(label_map),
         per_identity=beam.pvalue.AsSingleton(per_identity),
         skipped=beam.pvalue.AsList(skipped),
         converted=beam.pvalue.AsSingleton(converted),
         shards=beam.pvalue.AsSingleton(shards))
     | "WriteSummary" >> beam.Map(
         lambda s: _write_text(summary_path, json.dumps(s, sort_keys=True))))


def _counters(result) -> dict:
    """The job's Beam counters (committed values where the runner has them)."""
    try:
        query = result.metrics().query(
            beam.metrics.MetricsFilter().with_namespace(_NAMESPACE))
    except (AttributeError, NotImplementedError):  # a runner without metrics support
        return {}
    counters = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + value
    return dict(sorted(counters.items()))


def _publish(tmp_dir: str, output_dir: str, manifest: dict) -> None:
    """Replaces any previous output: manifest first removed, shards moved, manifest last."""
    import tensorflow as tf
    manifest_path = os.path.join(output_dir, io_utils.MANIFEST_NAME)
    if tf.io.gfile.exists(manifest_path):
        tf.io.gfile.remove(manifest_path)
    old = tf.io.gfile.glob(os.path.join(
        output_dir, f"{records.IMAGE_SHARD_PREFIX}-*-of-*{records.SHARD_SUFFIX}"))
    for path in old:
        tf.io.gfile.remove(path)
    for name in manifest["shards"]:
        tf.io.gfile.rename(os.path.join(tmp_dir, name), os.path.join(output_dir, name),
                           overwrite=True)
    io_utils.write_json_atomic(manifest_path, manifest)
    tf.io.gfile.rmtree(tmp_dir)


def build_dataset(input_dir: str, output_dir: str, num_shards: int = DEFAULT_NUM_SHARDS,
                  pipeline_options: PipelineOptions | None = None,
                  flags: dict | None = None) -> dict:
    """Runs the ingestion pipeline and publishes output_dir; returns the manifest."""
    import tensorflow as tf
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    input_dir = input_dir.rstrip("/") or "/"
    if not tf.io.gfile.isdir(input_dir):
        raise FileNotFoundError(f"input_dir {input_dir}: no such directory")
    tmp_dir = os.path.join(output_dir, f".tmp-{uuid.uuid4().hex}")
    tf.io.gfile.makedirs(tmp_dir)
    start = time.time()
    logging.info("build_dataset: reading %s into %s shards (staging in %s)",
                 input_dir, num_shards, tmp_dir)
    pipeline = beam.Pipeline(options=job_options.pipeline_options(pipeline_options))
    build_pipeline(pipeline, input_dir, tmp_dir, num_shards)
    result = pipeline.run()
    result.wait_until_finish()
    counters = _counters(result)
    logging.info("build_dataset: pipeline finished in %.1f s; counters %s",
                 time.time() - start, counters)

    summary = io_utils.read_json(os.path.join(tmp_dir, _SUMMARY_NAME))
    if summary["num_images"] == 0:
        tf.io.gfile.rmtree(tmp_dir)
        raise ValueError(f"input_dir {input_dir}: no usable image in any identity folder "
                         f"({summary['num_skipped']} files skipped)")
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "source": input_dir,
        "num_shards": num_shards,
        "run_info": runinfo.collect(flags),
        "beam_counters": counters,
        **{k: v for k, v in summary.items()},
    }
    logging.info("build_dataset: publishing %d shards to %s", num_shards, output_dir)
    _publish(tmp_dir, output_dir, manifest)
    logging.info("build_dataset: done in %.1f s", time.time() - start)
    return manifest


def format_summary(manifest: dict) -> str:
    lines = [f"images: {manifest['num_images']} ({manifest['num_converted']} converted) "
             f"of {manifest['num_identities']} identities in {len(manifest['shards'])} shards",
             f"skipped: {manifest['num_skipped']}"]
    lines += [f"  {s['path']}: {s['reason']}" for s in manifest["skipped"][:20]]
    if manifest["num_skipped"] > 20:
        lines.append(f"  ... and {manifest['num_skipped'] - 20} more (see manifest.json)")
    return "\n".join(lines)


def main(argv):
    from absl import flags
    FLAGS = flags.FLAGS
    logging.getLogger().setLevel(logging.INFO)
    options = PipelineOptions(argv[1:])
    manifest = build_dataset(FLAGS.input_dir, FLAGS.output_dir, FLAGS.num_shards, options,
                             flags=runinfo.absl_flag_values())
    print(format_summary(manifest))
    print(f"wrote {os.path.join(FLAGS.output_dir, io_utils.MANIFEST_NAME)}")


def _define_flags():
    from absl import flags
    flags.DEFINE_string("input_dir", None, "Dataset root: one sub-folder of images per identity.")
    flags.DEFINE_string("output_dir", None, "Where the shards and manifest.json are published.")
    flags.DEFINE_integer("num_shards", DEFAULT_NUM_SHARDS, "Number of TFRecord shards.",
                         lower_bound=1)
    flags.mark_flags_as_required(["input_dir", "output_dir"])


def _parse_flags(argv):
    # Unknown flags are Beam pipeline options: they pass through to PipelineOptions unchanged.
    from absl import flags
    return flags.FLAGS(argv, known_only=True)


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main, flags_parser=_parse_flags)
