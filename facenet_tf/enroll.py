"""Enrols known people into a gallery (created on first use), to name faces with
facenet_tf.identify.

  python -m facenet_tf.enroll --model pretrained --gallery people.gallery --input known/
  python -m facenet_tf.enroll --gallery people.gallery --remove NAME
  python -m facenet_tf.enroll --gallery people.gallery --list

Each sub-folder of --input is one person (its name is the folder's) holding ordinary photos;
each photo gives its main face (MTCNN, aligned; --nodetect_faces: each file is a face crop).
Photos with no face, with several faces (the main one is enrolled) or unreadable are listed
here and in the gallery's record. Running it again on a grown folder embeds only the photos it
has not seen (same path and bytes); a changed photo replaces its old face. --model: a
SavedModel dir, .keras or .tflite file or "pretrained" (default: the gallery's model);
a gallery refuses a model other than the one it was made with. --calibration FILE: this
gallery's threshold and confidence fit (python -m facenet_tf.evaluate --identification DIR
--fit_calibration FILE), for a model without a shipped one.
"""

import json

from absl import flags, logging

from facenet_tf import _cli
from facenet_tf.common import io_utils
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import calibration as calibration_lib
from facenet_tf.recognition import gallery as gallery_lib


def main(argv):
    del argv
    f = flags.FLAGS
    if f.remove or f.list:
        gallery = gallery_lib.open_gallery(f.gallery)
        if f.remove:
            removed = gallery.remove(f.remove)
            print(f"removed {f.remove} ({removed} faces) from {f.gallery}")
        _print_people(gallery)
        return
    if not f.input and not f.calibration:
        raise ValueError("give --input KNOWN_FOLDER (or --remove NAME, --list, "
                         "--calibration FILE)")
    people = gallery_lib.people_in_folder(f.input) if f.input else {}
    model = f.model or _existing_model(f.gallery)
    embedder = load_embedder(model)
    gallery = gallery_lib.open_gallery(f.gallery, embedder, create=True)
    if f.calibration:
        gallery.set_calibration(calibration_lib.read_calibration(f.calibration))
        print(f"{f.gallery}: calibration from {f.calibration}")
    if people:
        report = gallery.enroll_photos(
            embedder, FaceDetector() if f.detect_faces else None, people,
            align=batch_embed.align_config_for(embedder, f.margin, f.align_method),
            batch_size=f.batch_size)
        for problem in report["problems"]:
            logging.warning("%s (%s): %s%s", problem["photo"], problem["identity"],
                            problem["status"].replace("_", " "),
                            f": {problem['note']}" if problem["note"] else "")
        print(f"{f.gallery}: {report['new']} new photos, {report['changed']} changed, "
              f"{report['unchanged']} already enrolled; {report['faces_enrolled']} faces "
              f"enrolled; {len(report['problems'])} photos with a problem (listed above and "
              f"in the gallery's record)")
        for name in report["people_without_faces"]:
            logging.warning("person %s: no usable face in %d photos; not enrolled", name,
                            len(people[name]))
        if f.output:
            io_utils.write_json_atomic(f.output, report)
    gallery.search_index()  # built now (large galleries) rather than by the first identify
    _print_people(gallery)
    if not gallery.calibration.calibrated:
        print(gallery.calibration.note)


def _existing_model(path: str) -> str:
    try:
        return gallery_lib.open_gallery(path).model
    except FileNotFoundError:
        raise ValueError(f"{path}: not a gallery yet; give --model to create it") from None


def _print_people(gallery) -> None:
    people = gallery.people()
    print(f"{gallery.path}: {len(people)} people, {len(gallery)} faces (model "
          f"{gallery.fingerprint})")
    for name, count in people.items():
        print(f"  {name}: {count} face{'s' if count != 1 else ''}")


def _define_flags():
    flags.DEFINE_string("gallery", None, "The gallery directory (created by the first "
                        "enrolment).", required=True)
    flags.DEFINE_string("input", None, "Folder with one sub-folder of photos per person.")
    flags.DEFINE_string("model", None, "SavedModel dir, .keras or .tflite file, or "
                        "'pretrained' (default: the gallery's own model).")
    flags.DEFINE_string("remove", None, "Take this person out of the gallery.")
    flags.DEFINE_bool("list", False, "List the people in the gallery.")
    flags.DEFINE_string("calibration", None, "A calibration JSON for the gallery's model "
                        "(evaluate --identification DIR --fit_calibration FILE).")
    flags.DEFINE_string("output", None, "Also write the enrolment report here (JSON).")
    flags.DEFINE_bool("detect_faces", True, "Enrol the main face of each photo (MTCNN); "
                      "--nodetect_faces: each file is a face crop, taken whole.")
    _cli.define_face_crop_flags()
    flags.DEFINE_integer("batch_size", 64, "Faces per model call.")


def run():
    """The `facenet-enroll` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
