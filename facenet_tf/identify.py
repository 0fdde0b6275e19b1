"""Names the faces of photos against a gallery of known people (facenet_tf.enroll).

  python -m facenet_tf.identify --gallery people.gallery --input PHOTO_OR_FOLDER \
      [--top_k 5] [--threshold T] [--output results.json] [--annotate DIR]

Every face of every photo (MTCNN, aligned; --nodetect_faces: each file is a face crop) is
compared with every enrolled person. A face is named after the nearest person when within
the threshold (default: the one measured for the gallery's model, docs/recognition.md), else
reported as unknown. --output writes a JSON list, one object per face: photo, face, box
(x1, y1, x2, y2 pixels), identity (null when unknown), distance (squared L2 to the nearest
person, by the gallery's rule), confidence (calibrated probability that the nearest person is
right; null for a model without a calibration) and candidates (top_k {identity, distance},
nearest first). --annotate DIR writes a copy of each photo with the boxes and names drawn.
The gallery's own model is loaded (--model: another path to it, checked by fingerprint).
"""

import os

import tensorflow as tf
from absl import flags, logging

from facenet_tf import _cli
from facenet_tf.common import io_utils
from facenet_tf.data import image_files
from facenet_tf.data import images as image_utils
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import gallery as gallery_lib
from facenet_tf.recognition.index import AUTO, KINDS


def main(argv):
    del argv
    f = flags.FLAGS
    gallery = gallery_lib.open_gallery(f.gallery)
    if tf.io.gfile.isdir(f.input):
        paths, root = image_files.list_images(f.input), f.input
        if not paths:
            raise ValueError(f"{f.input}: no images found")
    elif tf.io.gfile.exists(f.input):
        paths, root = [f.input], None
        with tf.io.gfile.GFile(f.input, "rb") as photo:
            try:  # one photo: fail now, before the model loads, if it is not an image
                image_utils.normalize_image(photo.read())
            except image_utils.BadImageError as e:
                raise image_utils.BadImageError(f"{f.input}: unreadable image: {e}") from None
    else:
        raise FileNotFoundError(f"{f.input}: no such photo or folder")
    embedder = load_embedder(f.model or _gallery_model(gallery))
    result = gallery_lib.identify_photos(
        gallery, embedder, FaceDetector() if f.detect_faces else None, paths, f.top_k,
        f.threshold, batch_embed.align_config_for(embedder, f.margin, f.align_method),
        f.batch_size, f.index)
    faces = result["faces"]
    for face in faces:
        print(_line(face, root))
    for s in result["skipped"]:
        logging.warning("skipped %s: %s", s["photo"], s["reason"])
    named = sum(face["identity"] is not None for face in faces)
    print(f"{len(paths)} photos, {len(faces)} faces: {named} named, {len(faces) - named} "
          f"unknown (threshold {result['threshold']:g}, rule {result['rule']}); "
          f"{len(result['skipped'])} photos skipped")
    if gallery.calibration.note and not gallery.calibration.calibrated:
        print(gallery.calibration.note)
    if f.output:
        io_utils.write_json_atomic(f.output, faces)
        print(f"wrote {f.output}")
    if f.annotate:
        written = gallery_lib.annotate_photos(faces, f.annotate, root, result["skipped"])
        print(f"wrote {len(written)} annotated photos to {f.annotate}")


def _gallery_model(gallery) -> str:
    model = gallery.model
    if model != "pretrained" and "://" not in model and not os.path.exists(model):
        raise FileNotFoundError(f"{gallery.path} was made with model {model} (fingerprint "
                                f"{gallery.fingerprint}), which is not there any more; pass "
                                "--model with that model's new path")
    return model


def _line(face: dict, root) -> str:
    photo = os.path.relpath(face["photo"], root) if root else face["photo"]
    box = ",".join(f"{v:.0f}" for v in face["box"])
    conf = "" if face["confidence"] is None else f"confidence {face['confidence']:.2f}, "
    if face["identity"] is not None:
        return (f"{photo} face {face['face']} [{box}]: {face['identity']} "
                f"({conf}distance {face['distance']:.3f})")
    nearest = face["candidates"][0] if face["candidates"] else None
    hint = f"; nearest {nearest['identity']}" if nearest else ""
    dist = "" if nearest is None else f"distance {face['distance']:.3f}"
    return f"{photo} face {face['face']} [{box}]: unknown ({conf}{dist}{hint})"


def _define_flags():
    flags.DEFINE_string("gallery", None, "The gallery directory (facenet_tf.enroll).",
                        required=True)
    flags.DEFINE_string("input", None, "A photo, or a folder of photos (searched "
                        "recursively).", required=True)
    flags.DEFINE_integer("top_k", gallery_lib.DEFAULT_TOP_K, "Candidates listed per face.")
    flags.DEFINE_float("threshold", None, "Squared-L2 distance under which a face is named "
                       "(default: the gallery's calibration).")
    flags.DEFINE_string("output", None, "Write the faces as a JSON list here.")
    flags.DEFINE_string("annotate", None, "Write copies of the photos with boxes and names "
                        "drawn into this folder.")
    flags.DEFINE_string("model", None, "The gallery's model at another path (checked by "
                        "fingerprint); default: where the gallery recorded it.")
    flags.DEFINE_enum("index", AUTO, [AUTO, *KINDS], "Search: exact, or a FAISS index "
                      "(auto: exact for small galleries, HNSW for large ones).")
    flags.DEFINE_bool("detect_faces", True, "Find every face of each photo (MTCNN); "
                      "--nodetect_faces: each file is one face crop.")
    _cli.define_face_crop_flags()
    flags.DEFINE_integer("batch_size", 64, "Faces per model call.")


def run():
    """The `facenet-identify` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
