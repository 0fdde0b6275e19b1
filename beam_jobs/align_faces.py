"""Detects and aligns the face of every photo of a folder tree (a Beam job), for training and
evaluation on faces from ordinary photos.

    python -m beam_jobs.align_faces --input_dir PHOTOS --output_dir OUT \
        [--image_size 160] [--margin 32] [--align_method margin] [Beam pipeline options]

OUT/images/ mirrors PHOTOS with one aligned PNG crop per photo (its main face: the largest,
nearest the centre); OUT/manifest.json, written last, lists every photo without a face, with
several faces (and which was kept) or unreadable. Then, for training:
    python -m beam_jobs.build_dataset --input_dir OUT/images --output_dir DATA
(the pipeline: facenet_tf.pipelines.align_faces).
"""

import logging
import os

from absl import flags
from apache_beam.options.pipeline_options import PipelineOptions

from facenet_tf import _cli
from facenet_tf.common import io_utils, runinfo
from facenet_tf.detection.align import AlignConfig
from facenet_tf.pipelines.align_faces import AlignJobConfig, align_faces, format_summary


def main(argv):
    f = flags.FLAGS
    logging.getLogger().setLevel(logging.INFO)
    config = AlignJobConfig(
        input_dir=f.input_dir, output_dir=f.output_dir,
        align=AlignConfig(image_size=f.image_size, margin=f.margin, method=f.align_method),
        min_face_size=f.min_face_size, batch_size=f.batch_size)
    manifest = align_faces(config, PipelineOptions(argv[1:]), flags=runinfo.absl_flag_values())
    print(format_summary(manifest))
    print(f"wrote {os.path.join(f.output_dir, io_utils.MANIFEST_NAME)}")


def _define_flags():
    flags.DEFINE_string("input_dir", None, "Photos: a folder tree (one sub-folder per identity "
                        "for a dataset).")
    flags.DEFINE_string("output_dir", None, "Where images/ (the aligned crops) and "
                        "manifest.json are published.")
    flags.DEFINE_integer("image_size", 160, "Side of the square crops, in pixels.")
    _cli.define_face_crop_flags()
    flags.DEFINE_float("min_face_size", 20.0, "Smallest face the detector looks for, in pixels.")
    flags.DEFINE_integer("batch_size", 32, "Photos per detector batch.")
    flags.mark_flags_as_required(["input_dir", "output_dir"])


def run():
    """The `facenet-align` command."""
    _define_flags()
    _cli.run(main, __name__, flags_parser=_cli.beam_flags_parser)


if __name__ == "__main__":
    run()
