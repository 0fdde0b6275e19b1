"""Exports a trained face model as a SavedModel (facenet_tf.serving.saved_model) and/or as TFLite
files for phones (facenet_tf.serving.tflite: float32, and int8 calibrated on training images).

    python -m facenet_tf.export --checkpoint model.keras --export_dir DIR
    python -m facenet_tf.export --checkpoint MODEL_DIR/best --export_dir DIR
    python -m facenet_tf.export --checkpoint MODEL_DIR/best --tflite_dir DIR \
        --calibration_data DATASET_OR_IMAGE_FOLDER

--checkpoint is a Keras `.keras` file or a trainer checkpoint (the network is rebuilt from the
run's recorded config).
"""

from absl import flags, logging

from facenet_tf import _cli
from facenet_tf.common import runinfo
from facenet_tf.data import preprocess as pp
from facenet_tf.detection.align import AlignConfig
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.inference.embedders import load_keras_embedder
from facenet_tf.serving.saved_model import (
    DEFAULT_MAX_FACES,
    PhotoSignature,
    export_saved_model,
)
from facenet_tf.serving.tflite import DEFAULT_NUM_CALIBRATION, export_tflite
from facenet_tf.training.restore import restore_network


def main(argv):
    del argv
    f = flags.FLAGS
    if not (f.export_dir or f.tflite_dir):
        raise ValueError("give --export_dir (SavedModel), --tflite_dir (TFLite) or both")
    if f.checkpoint.endswith(".keras"):
        embedder = load_keras_embedder(f.checkpoint)
        model, base, step, threshold = embedder.network, embedder.preprocess, f.step, None
    else:
        restored = restore_network(f.checkpoint)
        model, base, step, threshold = (restored.network, restored.preprocess, restored.step,
                                        restored.threshold)
    size = tuple(f.image_size) if f.image_size else base.image_size
    preprocess = pp.PreprocessConfig(
        image_size=tuple(int(s) for s in size),
        crop_fraction=base.crop_fraction if f.crop_fraction is None else f.crop_fraction,
        standardization=f.standardization or base.standardization)
    step = step if f.step is None else f.step
    threshold = threshold if f.threshold is None else f.threshold
    extra = {"checkpoint": f.checkpoint, "export_flags": runinfo.absl_flag_values()}
    if f.tflite_dir:
        # First, so that a bad --calibration_data fails before any slow work.
        meta = export_tflite(model, f.tflite_dir, preprocess,
                             calibration_images=f.calibration_data,
                             num_calibration=f.num_calibration, threshold=threshold,
                             seed=f.seed, extra_metadata={**extra, "step": step})
        logging.info("exported %s to %s", f.checkpoint, f.tflite_dir)
        print("\n".join(f"{f.tflite_dir}/{entry['file']}" for entry in meta["files"].values()))
    if f.export_dir:
        photos = None
        if f.detect_and_embed:
            align = AlignConfig(image_size=max(preprocess.image_size), margin=f.margin,
                                method=f.align_method)
            photos = PhotoSignature(FaceDetector(), align, f.max_faces)
        out = export_saved_model(model, f.export_dir, preprocess, step=step,
                                 threshold=threshold, extra_metadata=extra,
                                 optimize=f.optimize, xla_max_batch=f.xla_max_batch,
                                 photos=photos)
        logging.info("exported %s to %s", f.checkpoint, out)
        print(out)


def _define_flags():
    flags.DEFINE_string("checkpoint", None, "A Keras .keras file, or a trainer checkpoint: a "
                        "prefix like MODEL_DIR/checkpoints/ckpt-600 or a directory of them "
                        "(MODEL_DIR/best, MODEL_DIR/checkpoints).", required=True)
    flags.DEFINE_string("export_dir", None, "SavedModel directory to write.")
    flags.DEFINE_bool("detect_and_embed", True, "Also serve whole photos: the signature "
                      "detect_and_embed runs MTCNN, aligns each face and embeds it "
                      "(--nodetect_and_embed: face crops only).")
    flags.DEFINE_integer("max_faces", DEFAULT_MAX_FACES, "detect_and_embed returns at most "
                         "this many faces per photo (highest detector scores).")
    _cli.define_face_crop_flags("detect_and_embed's face crop")
    flags.DEFINE_string("tflite_dir", None, "Directory to write model_float32.tflite and, with "
                        "--calibration_data, model_int8.tflite, with their metadata JSON.")
    flags.DEFINE_string("calibration_data", None, "Representative training images for the int8 "
                        "model: a beam_jobs.build_dataset directory or an image folder.")
    flags.DEFINE_integer("num_calibration", DEFAULT_NUM_CALIBRATION, "Calibration images "
                         "(a seeded sample).")
    flags.DEFINE_integer("seed", 0, "Seed of the calibration sample.")
    flags.DEFINE_list("image_size", None, "height,width (default: the model's input size).")
    flags.DEFINE_float("crop_fraction", None, "Center-crop fraction (default: the training "
                       "run's for a trainer checkpoint, 1.0 = no crop for a .keras file).")
    flags.DEFINE_enum("standardization", None, list(pp.STANDARDIZATIONS),
                      "Pixel standardisation the model was trained with (default: the run's, "
                      "or 'fixed' for a .keras file).")
    flags.DEFINE_float("threshold", None, "Recommended squared-L2 verification threshold "
                       "(default: the run's best evaluation's, for a trainer checkpoint).")
    flags.DEFINE_integer("step", None, "Training step of the checkpoint.")
    flags.DEFINE_bool("optimize", True, "Serve a graph with batch norm folded into the "
                      "convolutions and the weights as constants (no variables saved); "
                      "--nooptimize serves the Keras model's own call with its variables.")
    flags.DEFINE_integer("xla_max_batch", None, "With --optimize, batches up to this size run "
                         "an XLA-compiled graph (0: never; default "
                         "facenet_tf.models.inference.XLA_MAX_BATCH).")


def run():
    """The `facenet-export` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
