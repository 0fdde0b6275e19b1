"""Indexes every face of every photo of a folder tree for search (a Beam job).

    python -m beam_jobs.index_faces --input_dir PHOTOS --model M --output_dir INDEX \
        [--min_face_size 20] [--num_shards 0] [--full_rebuild] [Beam pipeline options]

--model: a SavedModel directory or .keras file from facenet_tf.export, a .tflite file (the int8
one is the fastest on CPUs), or "pretrained". INDEX/manifest.json, written last, names the
current generation's folder: faces-*.parquet (one row per face: photo, face, box, score,
is_main, embedding, photo_sha256, model_fingerprint), photos-*.parquet (one row per photo, with
its status and reason) and the search index; it lists the photos without a face and the
unreadable ones with the reason. Run it again over the grown folder: only new or changed
photos are embedded, deleted ones leave the index. Then:
    python -m facenet_tf.search --index INDEX --query FACE_PHOTO
(the pipeline: facenet_tf.pipelines.index_faces).
"""

import logging
import os

from absl import flags
from apache_beam.options.pipeline_options import PipelineOptions

from facenet_tf import _cli
from facenet_tf.common import io_utils, runinfo
from facenet_tf.pipelines.index_faces import (
    PHOTOS_PER_SHARD,
    IndexJobConfig,
    format_summary,
    index_faces,
)


def main(argv):
    f = flags.FLAGS
    logging.getLogger().setLevel(logging.INFO)
    config = IndexJobConfig(
        input_dir=f.input_dir, model=f.model, output_dir=f.output_dir, margin=f.margin,
        align_method=f.align_method, min_face_size=f.min_face_size, batch_size=f.batch_size,
        num_shards=f.num_shards, full_rebuild=f.full_rebuild)
    manifest = index_faces(config, PipelineOptions(argv[1:]), flags=runinfo.absl_flag_values())
    print(format_summary(manifest))
    print(f"wrote {os.path.join(f.output_dir, io_utils.MANIFEST_NAME)}")


def _define_flags():
    flags.DEFINE_string("input_dir", None, "Photos: a folder tree.")
    flags.DEFINE_string("model", None, "SavedModel dir, .keras or .tflite file, or "
                        "'pretrained'.")
    flags.DEFINE_string("output_dir", None, "Where the index is published (manifest.json "
                        "last); a previous index there is updated incrementally.")
    _cli.define_face_crop_flags()
    flags.DEFINE_float("min_face_size", IndexJobConfig.min_face_size,
                       "Smallest face the detector looks for, in pixels: the image pyramid "
                       "starts there, so a larger value is faster when the collection has no "
                       "smaller faces.")
    flags.DEFINE_integer("batch_size", IndexJobConfig.batch_size, "Photos per batch.")
    flags.DEFINE_integer("num_shards", IndexJobConfig.num_shards, "Parquet shards per table "
                         f"(0: one per {PHOTOS_PER_SHARD:,} photos).")
    flags.DEFINE_bool("full_rebuild", IndexJobConfig.full_rebuild, "Embed every photo again "
                      "instead of reusing the rows of unchanged ones.")
    flags.mark_flags_as_required(["input_dir", "model", "output_dir"])


def run():
    """The `facenet-index` command."""
    _define_flags()
    _cli.run(main, __name__, flags_parser=_cli.beam_flags_parser)


if __name__ == "__main__":
    run()
