"""Beam pipeline: a tree of photos (an identity-per-folder dataset, usually) -> the same tree of
aligned face crops (PNG, image_size x image_size), one per photo, and a manifest that lists
every photo without a face, with several faces (and which one was kept), or unreadable.

The command is beam_jobs.align_faces. Each photo keeps its main face (large, confident and
central: facenet_tf.detection.main_face, the rule in the manifest); MTCNN is loaded once
per worker and photos are detected in fixed batches (beam_utils.KeyedBatches), so the crops
are byte-identical on every runner and re-run. Crops are written to a temporary folder inside
output_dir and published at the end; manifest.json is written last.
"""

import concurrent.futures
import dataclasses
import logging
import os
import time
import uuid

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from facenet_tf.common import io_utils, runinfo
from facenet_tf.common.progress import progress
from facenet_tf.detection.align import AlignConfig
from facenet_tf.detection.detector import MAIN_FACE_RULE
from facenet_tf.detection.faces import align_detected, encode_png, iter_detections
from facenet_tf.pipelines import beam_utils
from facenet_tf.pipelines.options import pipeline_options as make_pipeline_options
from facenet_tf.pipelines.options import runner_of

ALIGNED_FORMAT = "facenet_tf.aligned_faces"
ALIGNED_VERSION = 1
IMAGES_DIR = "images"
_NAMESPACE = "align_faces"
ALIGNED, NO_FACE, UNREADABLE = "aligned", "no_face", "unreadable"


@dataclasses.dataclass(frozen=True)
class AlignJobConfig:
    """One alignment run: where the photos are, where the crops go, how faces are cropped,
    how the detector looks (min_face_size in pixels) and how many photos a batch holds."""
    input_dir: str
    output_dir: str
    align: AlignConfig = AlignConfig()
    min_face_size: float = 20.0
    batch_size: int = 32

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if not self.min_face_size > 0:
            raise ValueError(f"min_face_size must be > 0, got {self.min_face_size!r}")


def output_name(relative_path: str) -> str:
    """Where a photo's crop goes, relative to the images folder: the same path as PNG."""
    return os.path.splitext(relative_path)[0] + ".png"


def list_photos(input_dir: str) -> list:
    """Every file under input_dir (any format: a file that is not an image is reported as
    unreadable, not left out), as sorted paths relative to it."""
    found = []
    for dirpath, _, files in tf.io.gfile.walk(input_dir):
        found += [os.path.relpath(os.path.join(dirpath, f), input_dir) for f in files]
    return sorted(found)


def read_photo(input_dir: str, rel: str):
    """A photo's bytes, or the OSError/OpError that reading it raised."""
    try:
        with tf.io.gfile.GFile(os.path.join(input_dir, rel), "rb") as f:
            return f.read()
    except (OSError, tf.errors.OpError) as e:
        return e


class AlignBatch(beam.DoFn):
    """[relative photo paths] -> one record per photo; writes each aligned crop (PNG) under
    images_dir. The detector is loaded once per worker (setup) and keeps two runs in flight,
    each op on one thread where the worker starts TensorFlow itself (as the index job's).
    Within a batch, a few threads read and decode the photos, then align and write each
    detector run's faces while the next runs are detected."""

    def __init__(self, input_dir: str, images_dir: str, align: AlignConfig,
                 min_face_size: float, total: int):
        self._input_dir = input_dir
        self._images_dir = images_dir
        self._align = align
        self._min_face_size = min_face_size
        self._total = total

    def setup(self):
        self._detector = beam_utils.worker_detector("align_faces", self._min_face_size)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="align_faces")
        self._progress = progress(total=self._total, desc="aligning", unit="photos")
        self._aligned = beam.metrics.Metrics.counter(_NAMESPACE, "photos_aligned")
        self._no_face = beam.metrics.Metrics.counter(_NAMESPACE, "photos_without_face")
        self._unreadable = beam.metrics.Metrics.counter(_NAMESPACE, "photos_unreadable")
        self._align_ms = beam.metrics.Metrics.counter(_NAMESPACE, "detect_align_write_ms")

    def process(self, batch):
        started = time.perf_counter()
        read = list(self._pool.map(read_photo, [self._input_dir] * len(batch), batch))
        records = [{"image": rel, "status": UNREADABLE, "reason": f"cannot read file ({e})"}
                   for rel, e in zip(batch, read) if isinstance(e, Exception)]
        readable = [(rel, data) for rel, data in zip(batch, read) if isinstance(data, bytes)]
        detected = iter_detections(self._detector, [data for _, data in readable],
                                   names=[rel for rel, _ in readable], map_fn=self._pool.map)
        written = [self._pool.submit(self._align_and_write, photo) for photo in detected]
        records += [future.result() for future in written]
        for record in records:
            {ALIGNED: self._aligned, NO_FACE: self._no_face,
             UNREADABLE: self._unreadable}[record["status"]].inc()
        self._align_ms.inc(beam_utils.ms_since(started))
        self._progress.update(len(batch))
        yield from records

    def _align_and_write(self, photo) -> dict:
        faces = align_detected(photo, self._align, keep="main")
        if faces.error:
            return {"image": faces.name, "status": UNREADABLE, "reason": faces.error}
        if faces.main is None:
            return {"image": faces.name, "status": NO_FACE, "num_faces": 0}
        path = os.path.join(self._images_dir, output_name(faces.name))
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(encode_png(faces.crops[0]))
        d = faces.detections
        return {"image": faces.name, "status": ALIGNED, "output": output_name(faces.name),
                "num_faces": len(d), "kept": faces.main,
                "boxes": [[round(float(v), 2) for v in box] for box in d.boxes],
                "scores": [round(float(s), 5) for s in d.scores]}

    def teardown(self):
        self._pool.shutdown()
        self._progress.close()


def build_pipeline(pipeline: beam.Pipeline, config: AlignJobConfig, photos: list,
                   tmp_dir: str) -> None:
    """Adds the alignment stages to `pipeline`: crops under tmp_dir/images, one record per
    photo in tmp_dir's side results (beam_utils.read_side_results)."""
    records = (pipeline
               | "Photos" >> beam.Create(photos)
               | "Batches" >> beam_utils.KeyedBatches(lambda rel: rel, config.batch_size,
                                                      len(photos))
               | "DetectAlignWrite" >> beam.ParDo(AlignBatch(
                   config.input_dir, os.path.join(tmp_dir, IMAGES_DIR), config.align,
                   config.min_face_size, len(photos))))
    {"photos": records} | "SideResults" >> beam_utils.WriteSideResults(tmp_dir)


def summarize(records: list) -> dict:
    """The manifest's lists and counts from the per-photo records."""
    records = sorted(records, key=lambda r: r["image"])
    aligned = [r for r in records if r["status"] == ALIGNED]
    return {
        "num_photos": len(records),
        "num_aligned": len(aligned),
        "num_no_face": sum(r["status"] == NO_FACE for r in records),
        "num_unreadable": sum(r["status"] == UNREADABLE for r in records),
        "num_multiple_faces": sum(r["num_faces"] > 1 for r in aligned),
        "no_face": [r["image"] for r in records if r["status"] == NO_FACE],
        "unreadable": [{"image": r["image"], "reason": r["reason"]}
                       for r in records if r["status"] == UNREADABLE],
        "multiple_faces": [{k: r[k] for k in ("image", "num_faces", "kept", "boxes", "scores")}
                           for r in aligned if r["num_faces"] > 1],
        "aligned": {r["image"]: {"output": r["output"], "box": r["boxes"][r["kept"]],
                                 "score": r["scores"][r["kept"]]} for r in aligned},
    }


def align_faces(config: AlignJobConfig, pipeline_options: PipelineOptions | None = None,
                flags: dict | None = None) -> dict:
    """Runs the alignment pipeline and publishes config.output_dir (images/ and, last,
    manifest.json); returns the manifest."""
    input_dir = config.input_dir.rstrip("/") or "/"
    io_utils.require_dir(input_dir, "input_dir")
    photos = list_photos(input_dir)
    if not photos:
        raise ValueError(f"input_dir {input_dir}: no files")
    outputs = {}
    for rel in photos:
        outputs.setdefault(output_name(rel), []).append(rel)
    clashes = [names for names in outputs.values() if len(names) > 1]
    if clashes:
        raise ValueError(f"input_dir {input_dir}: photos that differ only in their extension "
                         f"would get the same crop name, e.g. {clashes[0]}; rename them")
    config = dataclasses.replace(config, input_dir=input_dir)
    tmp_dir = os.path.join(config.output_dir, f".tmp-{uuid.uuid4().hex}")
    tf.io.gfile.makedirs(tmp_dir)
    start = time.time()
    logging.info("align_faces: %d files under %s -> %s", len(photos), input_dir,
                 config.output_dir)
    options = make_pipeline_options(pipeline_options)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, photos, tmp_dir)
    result = beam_utils.run_to_completion(pipeline)
    summary = summarize(beam_utils.read_side_results(tmp_dir)["photos"])
    if summary["num_photos"] != len(photos):
        raise RuntimeError(f"align_faces: {len(photos)} files listed but "
                           f"{summary['num_photos']} reported; not publishing a manifest")
    manifest = {
        "format": ALIGNED_FORMAT,
        "version": ALIGNED_VERSION,
        "source": input_dir,
        "images_dir": IMAGES_DIR,
        "align": dataclasses.asdict(config.align),
        "min_face_size": config.min_face_size,
        "rule": MAIN_FACE_RULE,
        **summary,
        "beam_runner": runner_of(options),
        "beam_counters": beam_utils.query_counters(result, _NAMESPACE),
        "elapsed_seconds": round(time.time() - start, 3),
        "run_info": runinfo.collect(flags),
    }
    _publish(tmp_dir, config.output_dir, manifest)
    logging.info("align_faces: %d aligned, %d without a face, %d unreadable (%.1f s)",
                 summary["num_aligned"], summary["num_no_face"], summary["num_unreadable"],
                 time.time() - start)
    return manifest


def _publish(tmp_dir: str, output_dir: str, manifest: dict) -> None:
    """An older result's manifest goes first, then its images; the new images move in and
    the manifest is written last."""
    manifest_path = os.path.join(output_dir, io_utils.MANIFEST_NAME)
    if tf.io.gfile.exists(manifest_path):
        tf.io.gfile.remove(manifest_path)
    images = os.path.join(output_dir, IMAGES_DIR)
    if tf.io.gfile.exists(images):
        tf.io.gfile.rmtree(images)
    staged = os.path.join(tmp_dir, IMAGES_DIR)
    if not tf.io.gfile.exists(staged):
        tf.io.gfile.makedirs(staged)
    tf.io.gfile.rename(staged, images)
    tf.io.gfile.rmtree(tmp_dir)
    io_utils.write_json_atomic(manifest_path, manifest)


def format_summary(manifest: dict) -> str:
    lines = [f"photos: {manifest['num_photos']}, aligned: {manifest['num_aligned']} "
             f"({manifest['num_multiple_faces']} with several faces, the main one kept), "
             f"no face: {manifest['num_no_face']}, unreadable: {manifest['num_unreadable']}"]
    lines += [f"  no face: {name}" for name in manifest["no_face"][:10]]
    lines += [f"  unreadable: {u['image']}: {u['reason']}" for u in manifest["unreadable"][:10]]
    listed = min(len(manifest["no_face"]), 10) + min(len(manifest["unreadable"]), 10)
    if manifest["num_no_face"] + manifest["num_unreadable"] > listed:
        lines.append("  ... (all are listed in manifest.json)")
    return "\n".join(lines)
