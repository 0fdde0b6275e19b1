"""Plumbing every facenet_tf Beam job shares: a process-independent hash, a shard writer,
the job's counters, and publishing a finished output directory (manifest last)."""

import hashlib
import logging
import os
import time

import apache_beam as beam
import tensorflow as tf

from facenet_tf import io_utils
from facenet_tf.data import records

WRITE_MS = "write_ms"


def stable_hash(*parts, bits: int = 63) -> int:
    """A hash of `parts` that is the same in every process (unlike hash()): the top `bits`
    (1..64) bits of the sha256 of their text, joined by a unit separator."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> (64 - bits)


def ms_since(started: float) -> int:
    """Whole milliseconds since a time.perf_counter() reading (for the jobs' timing counters)."""
    return int(round(1000 * (time.perf_counter() - started)))


class WriteShard(beam.DoFn):
    """Writes an element (shard index, items) as one whole TFRecord shard in `directory`.

    `serialize(items, *side_inputs)` yields the shard's serialized records in their
    deterministic order. Emits {"file", "index", "count"} for publish(). With a
    `counter_namespace`, counts the records as "<prefix>_written" and the time as write_ms.
    """

    def __init__(self, directory: str, prefix: str, num_shards: int, serialize,
                 counter_namespace: str | None = None):
        self._directory = directory
        self._prefix = prefix
        self._num_shards = num_shards
        self._serialize = serialize
        self._namespace = counter_namespace

    def process(self, element, *side_inputs):
        started = time.perf_counter()
        shard, items = element
        name = records.shard_name(self._prefix, shard, self._num_shards)
        count = 0
        with tf.io.TFRecordWriter(os.path.join(self._directory, name)) as writer:
            for record in self._serialize(items, *side_inputs):
                writer.write(record)
                count += 1
        if self._namespace:
            beam.metrics.Metrics.counter(self._namespace, f"{self._prefix}_written").inc(count)
            beam.metrics.Metrics.counter(self._namespace, WRITE_MS).inc(ms_since(started))
        logging.info("%s: wrote %s (%d records)", self._namespace or "job", name, count)
        yield {"file": name, "index": shard, "count": count}


def sorted_dicts(items) -> list:
    """A list of dicts (from beam.combiners.ToList) in a fixed order, whatever Beam's was."""
    return sorted(items, key=lambda d: sorted(d.items()))


def write_json(value, path: str) -> str:
    """Writes a job's side result (a JSON value) for its driver to read after the run."""
    io_utils.write_json_atomic(path, value)
    return path


def query_counters(result, namespace: str) -> dict:
    """The job's Beam counters in `namespace`, summed over steps ({} where the runner reports
    no metrics; the manifests take their counts from the data, not from these)."""
    try:
        query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(namespace))
    except (AttributeError, NotImplementedError):
        return {}
    counters = {}
    for counter in query["counters"]:  # one result per step that uses the counter
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + value
    return dict(sorted(counters.items()))


def publish(tmp_dir: str, output_dir: str, shards: dict, make_manifest) -> dict:
    """Moves a finished job's shards from tmp_dir into output_dir and writes its manifest last.

    shards: {prefix: (num_shards, [WriteShard outputs])}; a shard nothing was written to is
    published empty. An older manifest is removed first and older shards of the same prefixes
    are replaced, so output_dir never reads as complete while it is changing.
    make_manifest({prefix: (names, counts)}) returns the manifest (it may raise to publish
    nothing more). Returns the manifest.
    """
    manifest_path = os.path.join(output_dir, io_utils.MANIFEST_NAME)
    if tf.io.gfile.exists(manifest_path):
        tf.io.gfile.remove(manifest_path)
    published = {}
    for prefix, (num_shards, written) in shards.items():
        for old in tf.io.gfile.glob(os.path.join(
                output_dir, f"{prefix}-*-of-*{records.SHARD_SUFFIX}")):
            tf.io.gfile.remove(old)
        counts_by_index = {d["index"]: d["count"] for d in written}
        names, counts = [], []
        for i in range(num_shards):
            name = records.shard_name(prefix, i, num_shards)
            src = os.path.join(tmp_dir, name)
            if i not in counts_by_index:
                with tf.io.TFRecordWriter(src):
                    pass
            tf.io.gfile.rename(src, os.path.join(output_dir, name), overwrite=True)
            names.append(name)
            counts.append(counts_by_index.get(i, 0))
        published[prefix] = (names, counts)
    manifest = make_manifest(published)
    tf.io.gfile.rmtree(tmp_dir)
    io_utils.write_json_atomic(manifest_path, manifest)
    return manifest
