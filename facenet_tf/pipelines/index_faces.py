"""Beam pipeline: a tree of photos -> every face of every photo, embedded, in sharded Parquet
tables (facenet_tf.data.face_tables), with a search index built from them and a manifest
written last. The command is beam_jobs.index_faces; facenet_tf.search queries the result.

Each worker loads the model and MTCNN once (DoFn.setup) and takes photos in fixed batches
(beam_utils.KeyedBatches), so the shards are byte-identical on every runner. Within a batch a
few threads read, hash and decode the photos; two detector runs go at once, each TensorFlow op
on one thread (beam_utils.one_thread_per_op); the faces of a finished run are aligned and
embedded on other threads (EMBED_THREADS) while the next runs are detected. Every photo is a
detector run of its own (ONE_IMAGE_PER_RUN), and embedders whose rows depend on their batch
embed photo by photo, so a photo's rows never depend on which photos share its batch: a
re-run that embeds only the new photos writes the rows a full run writes.

Re-runs are incremental. A photo is known by its path and the sha256 of its bytes: the
previous tables are joined to the new listing by path (CoGroupByKey), a photo whose bytes are
unchanged keeps its rows (no detection, no embedding), a new or changed one is embedded, and a
photo that is gone leaves the tables and the index. The previous result is reused only if it
was made with the same model (fingerprint) and the same detection and crop settings.

Layout of output_dir: manifest.json (written last) names the data folder of the current
generation, data-NNNNN/, which holds faces-*.parquet, photos-*.parquet and the search index.
A run writes a new generation beside the old one and removes the old one only after the new
manifest is in place, so a search always reads a complete generation.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import os
import time

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from facenet_tf.common import io_utils, runinfo
from facenet_tf.common.progress import progress
from facenet_tf.data import face_tables as tables
from facenet_tf.detection.align import AlignConfig
from facenet_tf.detection.cascade import CascadeConfig
from facenet_tf.detection.faces import align_detected, iter_detections
from facenet_tf.detection.detector import ONE_IMAGE_PER_RUN
from facenet_tf.inference.batch_embed import align_config_for
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.pipelines import beam_utils
from facenet_tf.pipelines.align_faces import list_photos, read_photo
from facenet_tf.pipelines.options import pipeline_options as make_pipeline_options
from facenet_tf.pipelines.options import runner_of
from facenet_tf.recognition import collection

DATA_DIR_PREFIX = "data-"
# --num_shards 0: one shard per this many photos listed (at least one).
PHOTOS_PER_SHARD = 10_000
_NAMESPACE = "index_faces"
_REMOVED = "removed"
# Photos whose faces are aligned and embedded together, while the detector runs on.
EMBED_GROUP = 4
# Threads aligning and embedding groups at once. One was the job's bottleneck: its alignment
# waits behind the detector's ops for TensorFlow's threads, then its LiteRT call runs, and
# every batch ended waiting for it (docs/collections.md, "Throughput").
EMBED_THREADS = 2
# Manifest fields the previous generation must share for its rows to be reused.
_REUSE_KEYS = ("model_fingerprint", "embedding_dim", "align", "detector")


@dataclasses.dataclass(frozen=True)
class IndexJobConfig:
    """One indexing run: the photos, the model (a SavedModel dir, .keras or .tflite file, or
    "pretrained"), where the index goes; how faces are cropped (margin, align_method; the crop
    side is the model's input side), the smallest face looked for (pixels), photos per
    batch, shards per table (0: one per PHOTOS_PER_SHARD photos) and whether to ignore a
    previous result (full_rebuild)."""
    input_dir: str
    model: str
    output_dir: str
    margin: float = AlignConfig.margin
    align_method: str = AlignConfig.method
    min_face_size: float = CascadeConfig.min_face_size
    batch_size: int = 32
    num_shards: int = 0
    full_rebuild: bool = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if self.num_shards < 0:
            raise ValueError(f"num_shards must be >= 0 (0: automatic), got {self.num_shards!r}")
        CascadeConfig(min_face_size=self.min_face_size)  # raises on a bad value
        AlignConfig(margin=self.margin, method=self.align_method)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shard_of(photo: str, num_shards: int) -> int:
    """The shard a photo's rows go to (the same in both tables and on every runner)."""
    return beam_utils.stable_hash("shard", photo) % num_shards


class IndexBatch(beam.DoFn):
    """A batch of work items ({"photo": relative path, "previous": the photo's rows from the
    previous generation or None}) -> one record per photo: {"photo": photo row, "faces": face
    rows, "embedded": whether it was detected and embedded in this run}. The model and the
    detector are loaded once per worker (setup)."""

    def __init__(self, input_dir: str, model: str, fingerprint: str, align: AlignConfig,
                 min_face_size: float, total: int):
        self._input_dir = input_dir
        self._model = model
        self._fingerprint = fingerprint
        self._align = align
        self._min_face_size = min_face_size
        self._total = total

    def setup(self):
        # Every photo a detector run of its own, so that its detections depend on it alone (on
        # some CPUs a run's float rounding depends on how many images it holds); measured on
        # 400 LFW photos, 2 cores: 4% fewer images/s than runs of 4
        # (benchmarks.bench_detector_runs).
        self._detector = beam_utils.worker_detector("index_faces", self._min_face_size,
                                                    max_batch_pixels=ONE_IMAGE_PER_RUN)
        self._embedder = load_embedder(self._model)
        if self._embedder.fingerprint != self._fingerprint:
            raise RuntimeError(f"{self._model}: fingerprint {self._embedder.fingerprint} on "
                               f"this worker, {self._fingerprint} when the job started; the "
                               "model changed during the run")
        self._io = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="index_faces_io")
        # Threads align and embed a detector run's faces while the next run is detected.
        self._embedding = concurrent.futures.ThreadPoolExecutor(
            max_workers=EMBED_THREADS, thread_name_prefix="index_faces_embed")
        self._progress = progress(total=self._total, desc="indexing", unit="photos")
        self._counters = {name: beam.metrics.Metrics.counter(_NAMESPACE, name) for name in (
            "photos_embedded", "photos_reused", "faces_embedded", "read_ms", "detect_ms",
            "align_ms", "embed_ms", "batch_ms")}

    def process(self, batch):
        started = time.perf_counter()
        read = list(self._io.map(self._read_and_hash, [item["photo"] for item in batch]))
        self._counters["read_ms"].inc(beam_utils.ms_since(started))
        records, todo = [], []
        for item, (data, digest) in zip(batch, read):
            previous = item["previous"]
            if isinstance(data, Exception):
                records.append(_photo_record(item["photo"], None, tables.UNREADABLE,
                                             f"cannot read file ({data})"))
            elif previous is not None and previous["photo"]["sha256"] == digest:
                records.append({**previous, "embedded": False})
            else:
                todo.append((item["photo"], data, digest))
        records += self._detect_and_embed(todo)
        self._counters["photos_reused"].inc(sum(not r["embedded"] for r in records))
        self._counters["photos_embedded"].inc(sum(r["embedded"] for r in records))
        self._counters["batch_ms"].inc(beam_utils.ms_since(started))
        self._progress.update(len(batch))
        yield from records

    def _read_and_hash(self, rel: str):
        """(bytes, sha256) of a photo, or (the error reading it raised, None)."""
        data = read_photo(self._input_dir, rel)
        return (data, None) if isinstance(data, Exception) else (data, sha256_hex(data))

    def _detect_and_embed(self, todo: list) -> list:
        if not todo:
            return []
        digests = {rel: digest for rel, _, digest in todo}
        detected = iter_detections(self._detector, [data for _, data, _ in todo],
                                   names=[rel for rel, _, _ in todo], map_fn=self._io.map)
        futures, group = [], []
        while True:
            started = time.perf_counter()
            photo = next(detected, None)
            self._counters["detect_ms"].inc(beam_utils.ms_since(started))
            if photo is not None:
                group.append(photo)
            if group and (photo is None or len(group) == EMBED_GROUP):
                futures.append(self._embedding.submit(self._embed_group, group, digests))
                group = []
            if photo is None:
                break
        records = []
        for future in futures:
            group_records, seconds = future.result()
            # Beam counters count only on the bundle's own thread.
            for name, value in seconds.items():
                self._counters[name].inc(int(round(1000 * value)))
            self._counters["faces_embedded"].inc(sum(len(r["faces"]) for r in group_records))
            records += group_records
        return records

    def _embed_group(self, photos: list, digests: dict) -> tuple:
        """(the records of a few detected photos, their faces aligned and embedded; the
        seconds spent aligning and embedding). With an embedder whose rows do not depend on
        their batch, the group's faces are embedded in one call; else photo by photo, so that a
        photo's embeddings never depend on which other photos share its batch (a re-run that
        embeds only new photos then writes the rows a full run writes)."""
        started = time.perf_counter()
        aligned = [align_detected(photo, self._align, keep="all") for photo in photos]
        seconds = {"align_ms": time.perf_counter() - started}
        started = time.perf_counter()
        with_faces = [faces for faces in aligned if faces.kept]
        if self._embedder.rows_independent and with_faces:
            embeddings = np.split(self._embedder.embed_faces(
                np.concatenate([faces.crops for faces in with_faces])),
                np.cumsum([len(faces.kept) for faces in with_faces])[:-1])
        else:
            embeddings = [self._embedder.embed_faces(faces.crops) for faces in with_faces]
        seconds["embed_ms"] = time.perf_counter() - started
        by_name = dict(zip((faces.name for faces in with_faces), embeddings))
        return [self._record(faces, digests[faces.name], by_name.get(faces.name))
                for faces in aligned], seconds

    def _record(self, faces, digest: str, embeddings) -> dict:
        if faces.error:
            return _photo_record(faces.name, digest, tables.UNREADABLE, faces.error)
        if not faces.kept:
            return _photo_record(faces.name, digest, tables.NO_FACE, "no face found",
                                 faces.height, faces.width)
        rows = [{"photo": faces.name, "face": int(index),
                 "box": np.asarray(faces.detections.boxes[index], np.float32),
                 "score": float(faces.detections.scores[index]),
                 "is_main": index == faces.main, "embedding": embedding,
                 "photo_sha256": digest, "model_fingerprint": self._fingerprint}
                for index, embedding in zip(faces.kept, embeddings)]
        record = _photo_record(faces.name, digest, tables.INDEXED, None, faces.height,
                               faces.width, num_faces=len(rows))
        return {**record, "faces": rows}

    def teardown(self):
        self._io.shutdown()
        self._embedding.shutdown()
        self._progress.close()


def _photo_record(photo: str, digest, status: str, reason, height: int = 0, width: int = 0,
                  num_faces: int = 0) -> dict:
    return {"photo": {"photo": photo, "sha256": digest, "status": status, "reason": reason,
                      "num_faces": num_faces, "height": int(height), "width": int(width)},
            "faces": [], "embedded": True}


class WriteTables(beam.DoFn):
    """(shard, photo records) -> that shard of both tables, rows sorted by photo then face;
    emits the shard's counts."""

    def __init__(self, data_dir: str, num_shards: int, embedding_dim: int):
        self._data_dir = data_dir
        self._num_shards = num_shards
        self._dim = embedding_dim

    def process(self, element):
        started = time.perf_counter()
        shard, records = element
        records = sorted(records, key=lambda r: r["photo"]["photo"])
        faces = [face for r in records for face in sorted(r["faces"], key=lambda f: f["face"])]
        for name, table in ((tables.FACES, tables.faces_table(faces, self._dim)),
                            (tables.PHOTOS, tables.photos_table([r["photo"] for r in records]))):
            tables.write_table(os.path.join(
                self._data_dir, tables.shard_name(name, shard, self._num_shards)), table)
        beam.metrics.Metrics.counter(_NAMESPACE, beam_utils.WRITE_MS).inc(
            beam_utils.ms_since(started))
        yield {"index": shard, "photos": len(records), "faces": len(faces),
               "embedded": sum(r["embedded"] for r in records)}


def _previous_rows(path: str, table: str):
    """(photo, row) of every row of one previous shard."""
    for row in tables.rows(tables.read_table(path)):
        yield row["photo"], (table, row)


def _work_item(element):
    """A joined photo -> its work item, or TaggedOutput(removed) for a photo no longer
    listed."""
    photo, grouped = element
    previous = {tables.PHOTOS: None, tables.FACES: []}
    for table, row in grouped.get("previous", ()):
        if table == tables.PHOTOS:
            previous[tables.PHOTOS] = row
        else:
            previous[tables.FACES].append(row)
    if not grouped["listed"]:
        if previous[tables.PHOTOS] is not None:
            yield beam.pvalue.TaggedOutput(_REMOVED, photo)
        return
    known = None
    if previous[tables.PHOTOS] is not None:
        known = {"photo": previous[tables.PHOTOS],
                 "faces": sorted(previous[tables.FACES], key=lambda f: f["face"])}
    yield {"photo": photo, "previous": known}


def _skipped(record):
    photo = record["photo"]
    if photo["status"] != tables.INDEXED:
        yield {"photo": photo["photo"], "status": photo["status"], "reason": photo["reason"]}


def _batch_id(item) -> str:
    return item["photo"]


def build_pipeline(pipeline: beam.Pipeline, config: IndexJobConfig, photos: list,
                   previous_shards: list, data_dir: str, fingerprint: str,
                   embedding_dim: int, align: AlignConfig, num_shards: int) -> None:
    """Adds the indexing stages to `pipeline`: both tables' shards in data_dir, the shard
    counts, skipped and removed photos in data_dir's side results."""
    inputs = {"listed": pipeline | "Photos" >> beam.Create(photos)
                        | "KeyListed" >> beam.Map(lambda rel: (rel, True))}
    if previous_shards:
        inputs["previous"] = (pipeline | "PreviousShards" >> beam.Create(previous_shards)
                              | "ReadPrevious" >> beam.FlatMapTuple(_previous_rows))
    joined = (inputs | "Join" >> beam.CoGroupByKey()
              | "WorkItems" >> beam_utils.ParDoWithOutputs(_work_item, _REMOVED))
    records = (joined[beam_utils.MAIN]
               | "Batches" >> beam_utils.KeyedBatches(_batch_id, config.batch_size, len(photos))
               | "DetectEmbed" >> beam.ParDo(IndexBatch(
                   config.input_dir, config.model, fingerprint, align, config.min_face_size,
                   len(photos))))
    shards = (records
              | "KeyByShard" >> beam.Map(lambda r: (shard_of(r["photo"]["photo"], num_shards),
                                                    r))
              | "GroupShards" >> beam.GroupByKey()
              | "WriteTables" >> beam.ParDo(WriteTables(data_dir, num_shards, embedding_dim)))
    skipped = records | "Skipped" >> beam.FlatMap(_skipped)
    {"shards": shards, "skipped": skipped, _REMOVED: joined[_REMOVED]} \
        | "SideResults" >> beam_utils.WriteSideResults(data_dir)


def _generation(manifest: dict | None) -> int:
    return manifest["generation"] if manifest else 0


def _reusable(previous: dict | None, settings: dict) -> tuple:
    """(whether the previous generation's rows may be reused, why not)."""
    if previous is None:
        return False, "no previous index"
    if (previous.get("format"), previous.get("version")) != (tables.INDEX_FORMAT,
                                                             tables.INDEX_VERSION):
        return False, "the previous index has another format"
    changed = [key for key in _REUSE_KEYS if previous.get(key) != settings[key]]
    if changed:
        return False, f"the previous index differs in {changed}"
    return True, ""


def index_faces(config: IndexJobConfig, pipeline_options: PipelineOptions | None = None,
                flags: dict | None = None) -> dict:
    """Runs the indexing pipeline and publishes a new generation of config.output_dir (tables,
    search index, then manifest.json); returns the manifest."""
    start = time.time()
    input_dir = config.input_dir.rstrip("/") or "/"
    output_dir = config.output_dir.rstrip("/")
    if not tf.io.gfile.isdir(input_dir):
        raise FileNotFoundError(f"input_dir {input_dir}: no such directory")
    inside = os.path.relpath(os.path.abspath(output_dir), os.path.abspath(input_dir))
    if "://" not in input_dir and not inside.startswith(os.pardir):
        raise ValueError(f"output_dir {output_dir} is inside input_dir {input_dir}; its files "
                         "would be indexed as photos")
    photos = list_photos(input_dir)
    if not photos:
        raise ValueError(f"input_dir {input_dir}: no files")
    config = dataclasses.replace(config, input_dir=input_dir, output_dir=output_dir)
    embedder = load_embedder(config.model)
    align = align_config_for(embedder, config.margin, config.align_method)
    settings = json.loads(json.dumps({  # as the manifest holds them (tuples as lists)
        "model_fingerprint": embedder.fingerprint, "embedding_dim": embedder.embedding_dim,
        "align": dataclasses.asdict(align),
        "detector": dataclasses.asdict(CascadeConfig(min_face_size=config.min_face_size))}))
    previous = (io_utils.read_manifest(output_dir) if io_utils.is_complete(output_dir)
                else None)
    reuse, why_not = _reusable(previous, settings)
    if config.full_rebuild:
        reuse, why_not = False, "full rebuild asked for"
    previous_shards = []
    if reuse:
        old_dir = os.path.join(output_dir, previous["data_dir"])
        previous_shards = [(os.path.join(old_dir, name), table)
                           for table in (tables.PHOTOS, tables.FACES)
                           for name in previous["shards"][table]]
    generation = _generation(previous) + 1
    data_name = f"{DATA_DIR_PREFIX}{generation:05d}"
    data_dir = os.path.join(output_dir, data_name)
    if tf.io.gfile.exists(data_dir):  # left by an interrupted run
        tf.io.gfile.rmtree(data_dir)
    tf.io.gfile.makedirs(data_dir)
    num_shards = config.num_shards or max(1, math.ceil(len(photos) / PHOTOS_PER_SHARD))
    logging.info("index_faces: %d files under %s -> %s (generation %d; %s)", len(photos),
                 input_dir, data_dir, generation,
                 "reusing the previous one's rows" if reuse else why_not)
    options = make_pipeline_options(pipeline_options)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, photos, previous_shards, data_dir, embedder.fingerprint,
                   embedder.embedding_dim, align, num_shards)
    result = beam_utils.run_to_completion(pipeline)
    side = beam_utils.read_side_results(data_dir)
    tf.io.gfile.remove(os.path.join(data_dir, beam_utils.SIDE_RESULTS_NAME))
    shards = {s["index"]: s for s in side["shards"]}
    counted = sum(s["photos"] for s in shards.values())
    if counted != len(photos):
        raise RuntimeError(f"index_faces: {len(photos)} files listed but {counted} written; "
                           "not publishing a manifest")
    for index in set(range(num_shards)) - set(shards):  # shards no photo hashed to
        tables.write_table(os.path.join(data_dir, tables.shard_name(
            tables.FACES, index, num_shards)), tables.faces_table([], embedder.embedding_dim))
        tables.write_table(os.path.join(data_dir, tables.shard_name(
            tables.PHOTOS, index, num_shards)), tables.photos_table([]))
    shard_names = {table: [tables.shard_name(table, i, num_shards) for i in range(num_shards)]
                   for table in (tables.FACES, tables.PHOTOS)}
    index_started = time.time()
    search_index = collection.build_search_index(data_dir, shard_names[tables.FACES])
    index_seconds = time.time() - index_started
    skipped = sorted(side["skipped"], key=lambda s: s["photo"])
    num_faces = sum(s["faces"] for s in shards.values())
    embedded = sum(s["embedded"] for s in shards.values())
    manifest = {
        "format": tables.INDEX_FORMAT,
        "version": tables.INDEX_VERSION,
        "source": input_dir,
        "model": config.model,
        **settings,
        "generation": generation,
        "data_dir": data_name,
        "num_shards": num_shards,
        "shards": shard_names,
        "faces_per_shard": [shards.get(i, {"faces": 0})["faces"] for i in range(num_shards)],
        "schema": {tables.FACES: str(tables.faces_schema(embedder.embedding_dim)),
                   tables.PHOTOS: str(tables.PHOTOS_SCHEMA)},
        "search_index": search_index,
        "num_photos": len(photos),
        "num_faces": num_faces,
        "num_indexed": len(photos) - len(skipped),
        "num_no_face": sum(s["status"] == tables.NO_FACE for s in skipped),
        "num_unreadable": sum(s["status"] == tables.UNREADABLE for s in skipped),
        "no_face": [s["photo"] for s in skipped if s["status"] == tables.NO_FACE],
        "unreadable": [{"photo": s["photo"], "reason": s["reason"]}
                       for s in skipped if s["status"] == tables.UNREADABLE],
        "num_embedded": embedded,
        "num_reused": len(photos) - embedded,
        "num_removed": len(side[_REMOVED]),
        "removed": sorted(side[_REMOVED]),
        "reuse": "previous generation's rows reused where unchanged" if reuse else why_not,
        "beam_runner": runner_of(options),
        "beam_counters": beam_utils.query_counters(result, _NAMESPACE),
        "index_seconds": round(index_seconds, 3),
        "elapsed_seconds": round(time.time() - start, 3),
        "run_info": runinfo.collect(flags),
    }
    io_utils.write_json_atomic(os.path.join(output_dir, io_utils.MANIFEST_NAME), manifest)
    for name in tf.io.gfile.listdir(output_dir):  # older generations, now unreferenced
        name = name.rstrip("/")
        if name.startswith(DATA_DIR_PREFIX) and name != data_name:
            tf.io.gfile.rmtree(os.path.join(output_dir, name))
    logging.info("index_faces: %d photos, %d faces (%d photos embedded, %d reused, %d "
                 "removed), %d without a face, %d unreadable (%.1f s)", len(photos), num_faces,
                 embedded, len(photos) - embedded, manifest["num_removed"],
                 manifest["num_no_face"], manifest["num_unreadable"], time.time() - start)
    return manifest


def format_summary(manifest: dict) -> str:
    lines = [f"photos: {manifest['num_photos']} ({manifest['num_embedded']} embedded, "
             f"{manifest['num_reused']} unchanged, {manifest['num_removed']} removed), "
             f"faces: {manifest['num_faces']}, no face: {manifest['num_no_face']}, "
             f"unreadable: {manifest['num_unreadable']}"]
    lines += [f"  no face: {name}" for name in manifest["no_face"][:10]]
    lines += [f"  unreadable: {u['photo']}: {u['reason']}" for u in manifest["unreadable"][:10]]
    listed = min(len(manifest["no_face"]), 10) + min(len(manifest["unreadable"]), 10)
    if manifest["num_no_face"] + manifest["num_unreadable"] > listed:
        lines.append("  ... (all are listed in manifest.json)")
    index = manifest["search_index"]
    lines.append(f"search index: {index['kind']}, {index['num_vectors']} faces "
                 f"({manifest['data_dir']}/)")
    return "\n".join(lines)
