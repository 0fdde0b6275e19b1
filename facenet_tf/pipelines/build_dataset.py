"""Beam pipeline: an identity-per-folder image dataset -> sharded TFRecords of image records.

The command is beam_jobs.build_dataset. Every file under DIR/<identity>/ is validated and normalised to RGB PNG/JPEG
(facenet_tf.data.images); bad files are skipped, counted and listed with their reason in the
manifest. Labels are the sorted identity names numbered 0..n-1 (identities with no usable image
get no label). All images of one identity go to the same shard (a stable hash of the identity
name), sorted by image id, so the same input gives byte-identical shards, and
facenet_tf.data.readers can stream identity-balanced batches. Shards are written to a
temporary folder and published at the end; manifest.json is written last.
"""

import logging
import os
import time
import uuid

import apache_beam as beam
import tensorflow as tf
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from facenet_tf.common import io_utils, runinfo
from facenet_tf.common.progress import progress
from facenet_tf.data import images, readers, records
from facenet_tf.pipelines import beam_utils
from facenet_tf.pipelines.options import pipeline_options as make_pipeline_options
from facenet_tf.pipelines.options import runner_of

DEFAULT_NUM_SHARDS = 8
_NAMESPACE = "build_dataset"


def shard_of(identity: str, num_shards: int) -> int:
    """The shard an identity's images go to (all of them to one: readers stream identities)."""
    return beam_utils.stable_hash(identity, bits=64) % num_shards


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
        self._progress = progress(desc="ingesting", unit="files")

    def teardown(self):
        self._progress.close()

    def process(self, metadata):
        path = metadata.path
        self._progress.update(1)
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


def label_map_of(identities) -> dict:
    """Labels: the sorted identity names numbered 0..n-1."""
    return {name: i for i, name in enumerate(sorted(identities))}


def serialize_dataset_rows(rows_and_labels):
    """One shard's image records from ((identity, file name, NormalizedImage) rows,
    [(identity, label), ...] of its identities), sorted by image id."""
    rows, labels = rows_and_labels
    label_map = dict(labels)
    for identity, file_name, image in sorted(rows, key=lambda r: f"{r[0]}/{r[1]}"):
        record = records.ImageRecord(
            encoded=image.encoded, format=image.format, label=label_map[identity],
            identity=identity, image_id=f"{identity}/{file_name}",
            height=image.height, width=image.width)
        # Deterministic serialisation: Features is a protobuf map.
        yield records.image_example(record).SerializeToString(deterministic=True)


def input_patterns(input_dir: str) -> list:
    """File patterns that together match every file under input_dir once: its top-level files
    and each top-level folder's files at any depth (one pattern per identity folder, so the
    work is spread over the job's workers from the start)."""
    names = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(input_dir))
    return [FileSystems.join(_literal(input_dir), "*")] + [
        FileSystems.join(_literal(input_dir), _literal(name), "**") for name in names]


def _literal(text: str) -> str:
    """text with Beam's file-pattern characters (* ? [) matched literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _per_shard_labels(element, num_shards: int):
    """(_, [(identity, (images, converted)) of every identity]) -> (shard, (identity, label))
    for each identity."""
    _, identity_counts = element
    label_map = label_map_of(identity for identity, _ in identity_counts)
    for identity, label in label_map.items():
        yield shard_of(identity, num_shards), (identity, label)


def _rows_and_labels(element):
    shard, groups = element
    return shard, (groups["rows"], groups["labels"])


def _identity_row(identity_counts):
    identity, (images, converted) = identity_counts
    return {"identity": identity, "images": images, "converted": converted}


def build_pipeline(pipeline: beam.Pipeline, input_dir: str, tmp_dir: str, num_shards: int):
    """Adds the ingestion stages to `pipeline`; its side results (shards written, images and
    conversions per identity, skipped files) land in tmp_dir (beam_utils.read_side_results).

    Labels reach the shard writers by a join (each shard gets its identities' labels), so
    every branch ends in the single final stage (see beam_utils' runner-neutral notes).
    """
    normalized = (pipeline
                  | "Patterns" >> beam.Create(input_patterns(input_dir))
                  | "MatchFiles" >> fileio.MatchAll()
                  | "Spread" >> beam.Reshuffle()
                  | "Normalize" >> beam_utils.ParDoWithOutputs(NormalizeFile(input_dir),
                                                               NormalizeFile.SKIPPED))
    ok, skipped = normalized[beam_utils.MAIN], normalized[NormalizeFile.SKIPPED]

    per_identity = (ok
                    | "ImageAndConversion" >> beam.Map(
                        lambda r: (r[0], (1, int(r[2].converted))))
                    | "CountPerIdentity" >> beam.CombinePerKey(
                        beam.combiners.TupleCombineFn(sum, sum)))
    labels = (per_identity
              | "OneKey" >> beam.Map(lambda counts: (0, counts))
              | "AllIdentities" >> beam.GroupByKey()
              | "LabelsPerShard" >> beam.FlatMap(_per_shard_labels, num_shards))
    rows = ok | "KeyByShard" >> beam.Map(lambda r: (shard_of(r[0], num_shards), r))
    shards = ({"rows": rows, "labels": labels}
              | "JoinLabels" >> beam.CoGroupByKey()
              | "RowsAndLabels" >> beam.Map(_rows_and_labels)
              | "WriteShards" >> beam.ParDo(beam_utils.WriteShard(
                  tmp_dir, records.IMAGE_SHARD_PREFIX, num_shards, serialize_dataset_rows)))
    ({"shards": shards,
      "identities": per_identity | "IdentityRows" >> beam.Map(_identity_row),
      "skipped": skipped}
     | "SideResults" >> beam_utils.WriteSideResults(tmp_dir))


def summarize(side_results: dict) -> dict:
    """The manifest's summary fields from the pipeline's side results."""
    identities = side_results["identities"]
    skipped = sorted(side_results["skipped"], key=lambda s: s["path"])
    return {
        "label_map": label_map_of(row["identity"] for row in identities),
        "images_per_identity": dict(sorted((row["identity"], row["images"])
                                           for row in identities)),
        "num_images": sum(row["images"] for row in identities),
        "num_identities": len(identities),
        "num_converted": sum(row["converted"] for row in identities),
        "skipped": skipped,
        "num_skipped": len(skipped),
    }


def build_dataset(input_dir: str, output_dir: str, num_shards: int = DEFAULT_NUM_SHARDS,
                  pipeline_options: PipelineOptions | None = None,
                  flags: dict | None = None) -> dict:
    """Runs the ingestion pipeline and publishes output_dir; returns the manifest."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    input_dir = input_dir.rstrip("/") or "/"
    io_utils.require_dir(input_dir, "input_dir")
    tmp_dir = os.path.join(output_dir, f".tmp-{uuid.uuid4().hex}")
    tf.io.gfile.makedirs(tmp_dir)
    start = time.time()
    logging.info("build_dataset: reading %s into %s shards (staging in %s)",
                 input_dir, num_shards, tmp_dir)
    options = make_pipeline_options(pipeline_options)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, input_dir, tmp_dir, num_shards)
    result = beam_utils.run_to_completion(pipeline)
    counters = beam_utils.query_counters(result, _NAMESPACE)
    logging.info("build_dataset: pipeline finished in %.1f s; counters %s",
                 time.time() - start, counters)

    side_results = beam_utils.read_side_results(tmp_dir)
    summary = summarize(side_results)
    if summary["num_images"] == 0:
        tf.io.gfile.rmtree(tmp_dir)
        raise ValueError(f"input_dir {input_dir}: no usable image in any identity folder "
                         f"({summary['num_skipped']} files skipped)")

    def make_manifest(published):
        names, counts = published[records.IMAGE_SHARD_PREFIX]
        return {
            "format": readers.DATASET_FORMAT,
            "version": readers.DATASET_VERSION,
            "source": input_dir,
            "num_shards": num_shards,
            "run_info": runinfo.collect(flags),
            "beam_runner": runner_of(options),
            "beam_counters": counters,
            "shards": names,
            "shard_sizes": dict(zip(names, counts)),
            **summary,
        }

    logging.info("build_dataset: publishing %d shards to %s", num_shards, output_dir)
    manifest = beam_utils.publish(
        tmp_dir, output_dir,
        {records.IMAGE_SHARD_PREFIX: (num_shards, side_results["shards"])}, make_manifest)
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
