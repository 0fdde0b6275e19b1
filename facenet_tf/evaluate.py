"""Evaluates a face model: the LFW pairs protocol, or retrieval and clustering on a folder.

  python -m facenet_tf.evaluate --model DIR --pairs pairs.txt --images ROOT [--align] \
      [--output_json F] [--plots_dir D] [--flip] [--skip_missing] [--crop_fraction 0.52 ...] \
      [--degrade jpeg:20 | pixels:80]
  python -m facenet_tf.evaluate --model DIR --identity_folder ROOT [--output_json F] \
      [--projector_dir D]   # then: tensorboard --logdir D, tab Projector
  python -m facenet_tf.evaluate --model DIR --identification ROOT [--gallery_size K] \
      [--distractors DIR] [--plots_dir D] [--fit_calibration F]

--model is a SavedModel from facenet_tf.export (or a .keras or .tflite file); crop/preprocessing
flags override the preprocessing stored with the model. --align detects each image's main face
(MTCNN) and aligns it before embedding: raw photos, such as LFW's, give the aligned figure.
--degrade jpeg:Q or pixels:N lowers the quality of every face after alignment, to measure a
camera's quality (facenet_tf.data.degrade). The protocols: facenet_tf.evaluation.protocols.
--identification: a gallery of the first K images of each identity, the other images as
probes, the one-image identities (or --distractors) as strangers: rank-1, rank-5, CMC
(--plots_dir), DIR at FAR 1% and 0.1% (facenet_tf.recognition.identification), decided as a
gallery decides for this model (its calibration).
"""

import json

from absl import flags

from facenet_tf import _cli
from facenet_tf.common import io_utils
from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data import preprocess as pp
from facenet_tf.data.degrade import Degradation
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.recognition.identification import evaluate_identification_folder
from facenet_tf.evaluation.protocols import (
    evaluate_identity_folder,
    evaluate_pairs_file,
    override_preprocess,
)
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition.calibration import Calibration, write_calibration


def main(argv):
    del argv
    f = flags.FLAGS
    # The inputs are checked before the (slow) model load.
    if f.pairs:
        if not f.images:
            raise flags.ValidationError("--pairs needs --images")
        io_utils.require_file(f.pairs, "--pairs")
        io_utils.require_dir(f.images, "--images")
    elif f.identity_folder:
        io_utils.require_dir(f.identity_folder, "--identity_folder")
    elif f.identification:
        io_utils.require_dir(f.identification, "--identification")
        if f.distractors:
            io_utils.require_dir(f.distractors, "--distractors")
    else:
        raise flags.ValidationError("give --pairs and --images, --identity_folder, or "
                                    "--identification")
    embedder = load_embedder(f.model)
    embedder = embedder.with_preprocess(override_preprocess(
        embedder.preprocess, f.image_size, f.crop_fraction, f.standardization,
        Degradation.parse(f.degrade)))
    if f.pairs:
        result = evaluate_pairs_file(embedder, f.pairs, f.images, flip=f.flip,
                                skip_missing=f.skip_missing, batch_size=f.batch_size, ext=f.ext,
                                naming=f.naming, num_folds=f.num_folds, seed=f.seed,
                                plots_dir=f.plots_dir, output_json=f.output_json,
                                detector=FaceDetector() if f.align else None,
                                align=batch_embed.align_config_for(embedder, f.margin,
                                                                   f.align_method))
    elif f.identity_folder:
        result = evaluate_identity_folder(embedder, f.identity_folder, flip=f.flip,
                                          projector_dir=f.projector_dir,
                                          batch_size=f.batch_size, output_json=f.output_json,
                                          distance_threshold=f.cluster_threshold)
    else:
        result = evaluate_identification_folder(
            embedder, f.identification, gallery_size=f.gallery_size,
            distractors_root=f.distractors, detector=FaceDetector() if f.align else None,
            align=batch_embed.align_config_for(embedder, f.margin, f.align_method),
            batch_size=f.batch_size, flip=f.flip, plots_dir=f.plots_dir,
            output_json=f.output_json,
            fit_calibration_far=f.calibration_far if f.fit_calibration else None)
        if f.fit_calibration:
            write_calibration(f.fit_calibration,
                              Calibration.from_dict(result["fitted_calibration"]))
    print(json.dumps(result, indent=2, sort_keys=True, default=lambda v: v.tolist()))


def _define_flags():
    flags.DEFINE_string("model", None, "SavedModel dir (facenet_tf.export), .keras or .tflite "
                        "file.", required=True)
    flags.DEFINE_string("pairs", None, "LFW-format pairs file.")
    flags.DEFINE_string("images", None, "Image root the pairs refer to.")
    flags.DEFINE_string("projector_dir", None, "With --identity_folder: write a TensorBoard "
                        "projector log of the faces here (tensorboard --logdir DIR).")
    flags.DEFINE_string("identity_folder", None, "Identity-per-folder dataset for retrieval "
                        "and clustering metrics (instead of --pairs).")
    flags.DEFINE_string("identification", None, "Identity-per-folder dataset for "
                        "identification metrics against a gallery (instead of --pairs).")
    flags.DEFINE_integer("gallery_size", 1, "With --identification: images of each identity "
                         "enrolled (the first ones); the others are probes.")
    flags.DEFINE_string("distractors", None, "With --identification: a folder of strangers' "
                        "images (default: the identities with one image).")
    flags.DEFINE_string("fit_calibration", None, "With --identification: fit a gallery "
                        "calibration (threshold, confidence) on this set and write it here "
                        "(for facenet_tf.enroll --calibration).")
    flags.DEFINE_float("calibration_far", 0.01, "With --fit_calibration: the threshold names "
                       "this fraction of the strangers.")
    flags.DEFINE_string("output_json", None, "Write the metrics here too.")
    flags.DEFINE_string("plots_dir", None, "Write roc.png and distance_histogram.png here "
                        "(--identification: cmc.png).")
    flags.DEFINE_bool("align", False, "With --pairs or --identification: detect and align "
                      "each image's main face "
                      "(MTCNN) before embedding it; for raw photos.")
    _cli.define_face_crop_flags("With --align, the face crop")
    flags.DEFINE_bool("flip", False, "Average each embedding with its mirror image's.")
    flags.DEFINE_bool("skip_missing", False, "Drop pairs whose images are missing.")
    flags.DEFINE_list("image_size", None, "height,width (default: the model's).")
    flags.DEFINE_float("crop_fraction", None, "Center-crop fraction (default: the model's).")
    flags.DEFINE_enum("standardization", None, list(pp.STANDARDIZATIONS),
                      "Pixel standardisation (default: the model's).")
    flags.DEFINE_string("degrade", None, "Degrade every face after alignment (or as the "
                        "pre-cropped file is), at the model's input size, before embedding: "
                        "jpeg:Q re-encodes it at JPEG quality Q (1-100), pixels:N scales it "
                        "down to N x N and back up. To measure a camera's quality.")
    flags.DEFINE_integer("batch_size", 64, "Images per model call.")
    flags.DEFINE_string("ext", "jpg", "Extension of LFW-named image files.")
    flags.DEFINE_enum("naming", "auto", list(pairs_lib.NAMINGS), "Pairs image naming rule.")
    flags.DEFINE_integer("num_folds", 10, "Folds for files without their own folds.")
    flags.DEFINE_integer("seed", 0, "Seed of the fold split for files without folds.")
    flags.DEFINE_float("cluster_threshold", None, "Squared-L2 clustering threshold "
                       "(default: the model's threshold, else the number of identities).")


def run():
    """The `facenet-evaluate` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
