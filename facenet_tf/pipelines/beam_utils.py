"""Plumbing every facenet_tf Beam job shares: a process-independent hash, a shard writer,
the job's counters, publishing a finished output directory (manifest last), and the pipeline
shapes that run the same on every runner (see "Runner-neutral pipelines" below)."""

import hashlib
import json
import logging
import math
import os
import time

import apache_beam as beam
import tensorflow as tf
from apache_beam.pipeline import PipelineVisitor

from facenet_tf.common import io_utils
from facenet_tf.data import records
from facenet_tf.detection.detector import FaceDetector

WRITE_MS = "write_ms"
MAIN = "main"  # ParDoWithOutputs: the tag of a DoFn's main (untagged) output
SIDE_RESULTS_NAME = "_side_results.json"
# KeyedBatches: elements are grouped by a hash of their id into groups of about this many
# batches; only its last batch is partial (on average half a batch of padding per group).
BATCHES_PER_GROUP = 4


def stable_hash(*parts, bits: int = 63) -> int:
    """A hash of `parts` that is the same in every process (unlike hash()): the top `bits`
    (1..64) bits of the sha256 of their text, joined by a unit separator."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> (64 - bits)


def ms_since(started: float) -> int:
    """Whole milliseconds since a time.perf_counter() reading (for the jobs' timing counters)."""
    return int(round(1000 * (time.perf_counter() - started)))


# Detector runs a job's worker keeps in flight at once (FaceDetector.parallel_runs), each op on
# one thread (one_thread_per_op): the cores go to whole runs, not to halves of small ops.
DETECTOR_RUNS_IN_FLIGHT = 2


def one_thread_per_op() -> bool:
    """Gives TensorFlow's ops one thread each (intra-op pool of 1), for a worker that keeps
    several small-op graphs running on threads of its own: split over two threads, an op's
    halves mostly wait for each other, and the spinning costs CPU the other runs could use.
    Possible only before the process runs its first op; returns whether it took effect."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # this process already started TensorFlow
        return tf.config.threading.get_intra_op_parallelism_threads() == 1
    return True


def worker_detector(job: str, min_face_size: float, **detector_args) -> FaceDetector:
    """The face detector a job's worker runs: DETECTOR_RUNS_IN_FLIGHT runs at once, each op on
    one thread (detector_args: more FaceDetector arguments). Call it before anything else of
    the worker starts TensorFlow (the embedder's load does); otherwise ops keep their default
    threads, which is logged: on some CPUs the detections' last float bits then differ from
    those of a worker with one thread per op."""
    if not one_thread_per_op():
        logging.info("%s: TensorFlow had started in this process before the job; its ops keep "
                     "their default threads (slower detection)", job)
    return FaceDetector(min_face_size=min_face_size, parallel_runs=DETECTOR_RUNS_IN_FLIGHT,
                        **detector_args)


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


# Runner-neutral pipelines. Beam 2.77's DaskRunner (apache_beam.runners.dask) runs a
# pipeline differently from the FnApiRunner, Dataflow, Flink or Spark in ways that change
# results, so the jobs avoid what it gets wrong:
# - a multi-output ParDo (.with_outputs, beam.Partition): it hands every consumer ALL the
#   outputs, tags dropped -> ParDoWithOutputs;
# - leaf branches: it computes only the transform applied LAST (other sinks never run, and the
#   run still reports DONE) -> every side result goes into one final WriteSideResults stage,
#   and run_to_completion refuses a pipeline with a branch that does not reach it;
# - what a DoFn emits in finish_bundle is lost (beam.BatchElements' last partial batch)
#   -> KeyedBatches;
# - side inputs (also the default value of CombineGlobally, beam.combiners.ToList/Count.Globally)
#   are recomputed, whole upstream included, inside every task that reads them -> joins
#   (CoGroupByKey) and the single final stage instead;
# - Reshuffle is a no-op and work is split only where the pipeline starts (beam.Create, into
#   --dask_npartitions parts): a job spreads its input as a Create of several elements.


def _as_pairs(outputs):
    for output in outputs or ():
        if isinstance(output, beam.pvalue.TaggedOutput):
            yield output.tag, output.value
        else:
            yield MAIN, output


class _OutputsAsPairs(beam.DoFn):
    """Runs a DoFn (or a FlatMap-style function) and emits its outputs as (tag, value) pairs
    on the main output: (MAIN, value) for its main output, (tag, value) for TaggedOutputs."""

    def __init__(self, fn):
        self._fn = fn
        self._is_dofn = isinstance(fn, beam.DoFn)

    def setup(self):
        if self._is_dofn:
            self._fn.setup()

    def start_bundle(self):
        if self._is_dofn:
            self._fn.start_bundle()

    def process(self, element):
        if self._is_dofn:
            yield from _as_pairs(self._fn.process(element))
        else:
            yield from _as_pairs(self._fn(element))

    def finish_bundle(self):
        if self._is_dofn and self._fn.finish_bundle() is not None:
            raise ValueError(f"{type(self._fn).__name__}.finish_bundle emits outputs: "
                             f"ParDoWithOutputs does not carry them (runners lose them)")

    def teardown(self):
        if self._is_dofn:
            self._fn.teardown()


def _tagged_values(pair, tag):
    if pair[0] == tag:
        yield pair[1]


class ParDoWithOutputs(beam.PTransform):
    """ParDo(fn).with_outputs(*tags) as a dict {MAIN: ..., tag: ...} of PCollections, built
    from single-output steps: fn's outputs travel as (tag, value) pairs and one FlatMap per
    tag keeps its values. fn: a DoFn, or a function yielding values and TaggedOutputs."""

    def __init__(self, fn, *tags):
        super().__init__()
        if MAIN in tags:
            raise ValueError(f"ParDoWithOutputs: the tag {MAIN!r} names the main output")
        self._fn = fn
        self._tags = tags

    def expand(self, pcoll):
        pairs = pcoll | "Outputs" >> beam.ParDo(_OutputsAsPairs(self._fn))
        return {tag: pairs | f"Only_{tag}" >> beam.FlatMap(_tagged_values, tag)
                for tag in (MAIN,) + self._tags}


def _keyed_by_group(element, id_fn, num_groups: int):
    return stable_hash("batch", id_fn(element)) % num_groups, element


def _sorted_batches(element, id_fn, batch_size: int):
    _, items = element
    items = sorted(items, key=id_fn)
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


class KeyedBatches(beam.PTransform):
    """Lists of at most batch_size elements, the same lists on every runner (unlike
    beam.BatchElements, whose batches follow the runner's bundles).

    Elements go to one of about expected_count / (batch_size * BATCHES_PER_GROUP) groups by a
    stable hash of id_fn(element) (a unique string or number per element); each group is
    sorted by id and cut into batches. expected_count only sizes the groups.
    """

    def __init__(self, id_fn, batch_size: int, expected_count: int):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self._id_fn = id_fn
        self._batch_size = batch_size
        self.num_groups = max(1, math.ceil(expected_count / (batch_size * BATCHES_PER_GROUP)))

    def expand(self, pcoll):
        return (pcoll
                | "KeyByGroup" >> beam.Map(_keyed_by_group, self._id_fn, self.num_groups)
                | "Group" >> beam.GroupByKey()
                | "Batches" >> beam.FlatMap(_sorted_batches, self._id_fn, self._batch_size))


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def _named(value, name: str):
    return name, value


def _write_side_results(element, names, path):
    _, pairs = element
    results = {name: [] for name in names}
    for name, value in pairs:
        if name is not None:
            results[name].append(value)
    io_utils.write_json_atomic(path, {name: sorted(values, key=_canonical)
                                      for name, values in results.items()})
    return path


class WriteSideResults(beam.PTransform):
    """The job's final stage: applied to {name: PCollection of JSON values}, writes
    directory/SIDE_RESULTS_NAME = {name: the values, in a fixed order} for the driver
    (read_side_results). One step that every result feeds: apply it LAST (the DaskRunner
    runs only the last transform applied and what it depends on)."""

    def __init__(self, directory: str):
        super().__init__()
        self._path = os.path.join(directory, SIDE_RESULTS_NAME)

    def expand(self, pcolls: dict):
        names = sorted(pcolls)
        pipeline = next(iter(pcolls.values())).pipeline
        # One element even when every result is empty, so the file is always written.
        named = [pipeline | "Always" >> beam.Create([(None, None)])]
        named += [pcolls[name] | f"Name_{name}" >> beam.Map(_named, name) for name in names]
        return (named
                | "All" >> beam.Flatten()
                | "OneKey" >> beam.Map(lambda pair: (0, pair))
                | "Gather" >> beam.GroupByKey()
                | "Write" >> beam.Map(_write_side_results, names, self._path))


def read_side_results(directory: str) -> dict:
    """What WriteSideResults wrote into `directory`."""
    return io_utils.read_json(os.path.join(directory, SIDE_RESULTS_NAME))


class _LeafTransforms(PipelineVisitor):
    def __init__(self):
        self.leaves = []

    def visit_transform(self, node):
        self.leaves.append(node)


def require_single_sink(pipeline: beam.Pipeline) -> None:
    """Raises ValueError unless every step of `pipeline` feeds the step applied last (its main
    or side inputs, transitively): on the DaskRunner other branches would silently not run."""
    visitor = _LeafTransforms()
    pipeline.visit(visitor)
    if not visitor.leaves:
        return
    reached, todo = set(), [visitor.leaves[-1]]
    while todo:
        node = todo.pop()
        if id(node) in reached:
            continue
        reached.add(id(node))
        inputs = [p for p in node.inputs if isinstance(p, beam.pvalue.PCollection)]
        inputs += [side.pvalue for side in node.side_inputs]
        todo += [p.producer for p in inputs if p.producer is not None]
    dangling = [node.full_label for node in visitor.leaves if id(node) not in reached]
    if dangling:
        raise ValueError(f"pipeline steps that do not feed its last step "
                         f"({visitor.leaves[-1].full_label}): {dangling}")


def run_to_completion(pipeline: beam.Pipeline):
    """Checks that the pipeline has one final step (require_single_sink), runs it and waits
    for it to finish; returns the PipelineResult."""
    require_single_sink(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return result


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
