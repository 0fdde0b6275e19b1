r"""Which face of a photo is its main face, by the rule of facenet_tf.detection.main_face and by
the rule it replaced (davidsandberg/facenet's align_dataset_mtcnn: largest box area - 2 x
squared distance of its centre from the image centre), on the same detections.

    python -m experiments.main_face_rule [--images DIR] [--work_dir runs/main_face_rule]

MTCNN runs once over every photo under --images (lfw_dev by default; the detections are kept
in WORK_DIR/detections.npz and reused); both rules are then applied to each photo's
detections. Writes experiments/results/main_face_rule.md and .json (counts, and every photo
whose main face changed with both boxes and scores) and docs/images/main_face_rule.png (those
photos, the old choice in red, the new one in green).
"""

import io
import os
import sys
import time

import numpy as np
from absl import flags, logging
from PIL import Image, ImageDraw

from experiments.protocol import (
    LFW_IMAGES,
    REPO_ROOT,
    existing_dir,
    publish_results,
    stage,
)
from facenet_tf import _cli
from facenet_tf.common import io_utils, runinfo
from facenet_tf.common.progress import progress
from facenet_tf.data.image_files import list_images
from facenet_tf.detection.detector import (
    MAIN_FACE_RULE,
    FaceDetections,
    FaceDetector,
    main_face,
)
from facenet_tf.detection.faces import iter_detections

FLAGS = flags.FLAGS
RESULTS = os.path.join(REPO_ROOT, "experiments", "results", "main_face_rule")
PICTURE = os.path.join(REPO_ROOT, "docs", "images", "main_face_rule.png")
OLD_RULE = ("largest box area - 2 x squared distance of its centre from the image centre "
            "(davidsandberg/facenet align_dataset_mtcnn)")
# Photos detected per call: one decoded chunk in memory at a time.
CHUNK = 256


def old_main_face(detections: FaceDetections, height: int, width: int) -> int | None:
    """The main face by the rule main_face replaced."""
    if len(detections) == 0:
        return None
    b = detections.boxes.astype(np.float64)
    dx = (b[:, 0] + b[:, 2]) / 2 - width / 2
    dy = (b[:, 1] + b[:, 3]) / 2 - height / 2
    return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - 2 * (dx * dx + dy * dy)))


def detect_all(images: str, cache: str) -> dict:
    """Every photo's detections (boxes, scores, landmarks, flat, with counts) and size, from
    the cache if it was made from the same photos."""
    paths = list_images(images)
    names = [os.path.relpath(p, images) for p in paths]
    if os.path.exists(cache):
        with np.load(cache) as z:
            if list(z["names"]) == names:
                return {**{k: z[k] for k in z.files}, "cached": True}
    stage(f"detect the faces of {len(paths)} photos under {images}")
    detector = FaceDetector()
    found, sizes = [None] * len(paths), [None] * len(paths)
    bar = progress(total=len(paths), desc="detecting", unit="photos")
    for start in range(0, len(paths), CHUNK):
        for photo in iter_detections(detector, paths[start:start + CHUNK]):
            if photo.error:
                raise ValueError(f"{paths[start + photo.index]}: {photo.error}")
            found[start + photo.index] = photo.detections
            sizes[start + photo.index] = photo.pixels.shape[:2]
        bar.update(min(CHUNK, len(paths) - start))
    bar.close()
    arrays = {"names": np.array(names), "sizes": np.array(sizes, np.int32),
              "counts": np.array([len(d) for d in found], np.int32),
              "boxes": np.concatenate([d.boxes for d in found]),
              "scores": np.concatenate([d.scores for d in found]),
              "landmarks": np.concatenate([d.landmarks for d in found])}
    with open(cache + ".tmp.npz", "wb") as f:
        np.savez(f, **arrays)
    os.replace(cache + ".tmp.npz", cache)
    return {**arrays, "cached": False}


def compare_rules(arrays: dict) -> dict:
    """Counts and the photos whose main face differs between the two rules."""
    starts = np.concatenate([[0], np.cumsum(arrays["counts"])])
    changed = []
    for i, name in enumerate(arrays["names"]):
        rows = slice(starts[i], starts[i + 1])
        found = FaceDetections(arrays["boxes"][rows], arrays["scores"][rows],
                               arrays["landmarks"][rows])
        height, width = (int(v) for v in arrays["sizes"][i])
        old, new = old_main_face(found, height, width), main_face(found, height, width)
        if old != new:
            changed.append({"photo": str(name), "size": [height, width],
                            "num_faces": len(found),
                            "old": _face(found, old), "new": _face(found, new)})
    counts = arrays["counts"]
    return {"num_photos": int(len(counts)), "num_no_face": int(np.sum(counts == 0)),
            "num_several_faces": int(np.sum(counts > 1)), "num_faces": int(np.sum(counts)),
            "num_changed": len(changed), "changed": changed}


def _face(found, index):
    return {"face": index, "box": [round(float(v), 1) for v in found.boxes[index]],
            "score": round(float(found.scores[index]), 4)}


def draw_changed(images: str, changed: list, path: str, height: int = 250) -> str | None:
    """The changed photos side by side, scaled to `height`: old choice red, new green."""
    if not changed:
        return None
    tiles = []
    for c in changed:
        image = Image.open(os.path.join(images, c["photo"])).convert("RGB")
        scale = height / image.height
        image = image.resize((round(image.width * scale), height))
        draw = ImageDraw.Draw(image)
        for key, colour in (("old", (230, 40, 40)), ("new", (40, 220, 40))):
            draw.rectangle([v * scale for v in c[key]["box"]], outline=colour, width=3)
        tiles.append(image)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height),
                      (255, 255, 255))
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 4
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    io_utils.write_bytes_atomic(path, buf.getvalue())
    return path


def markdown(report: dict) -> str:
    r = report["result"]
    lines = [
        "# Main-face rule: old and new on the same detections", "",
        f"Photos: {report['images']} ({r['num_photos']} photos, {r['num_faces']} faces found, "
        f"{r['num_several_faces']} photos with several faces, {r['num_no_face']} without a "
        "face). MTCNN ran once; both rules chose among the same detections.", "",
        f"- old: {OLD_RULE}", f"- new: {MAIN_FACE_RULE}", "",
        f"**{r['num_changed']} of {r['num_photos']} photos** ({r['num_changed']} of the "
        f"{r['num_several_faces']} with several faces) get a different main face:", "",
        "| photo | faces | old: box (score) | new: box (score) |", "|---|---|---|---|"]
    lines += [f"| {c['photo']} | {c['num_faces']} | {c['old']['box']} ({c['old']['score']}) "
              f"| {c['new']['box']} ({c['new']['score']}) |" for c in r["changed"]]
    detected = ("read from an earlier run's detections.npz" if report["detections_cached"]
                else "detection included")
    lines += ["", f"Boxes are x1, y1, x2, y2 in pixels. {report['wall_minutes']} min on this "
              f"machine ({detected}); git {report['run_info']['git_revision']}.", "",
              f"    {report['command']}"]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    started = time.time()
    images = existing_dir(FLAGS.images, "images")
    work = os.path.abspath(FLAGS.work_dir)
    os.makedirs(work, exist_ok=True)
    arrays = detect_all(images, os.path.join(work, "detections.npz"))
    result = compare_rules(arrays)
    report = {"images": images, "old_rule": OLD_RULE, "new_rule": MAIN_FACE_RULE,
              "result": result, "detections_cached": bool(arrays["cached"]),
              "picture": draw_changed(images, result["changed"], FLAGS.picture),
              "command": " ".join([os.path.basename(sys.executable), "-m",
                                   "experiments.main_face_rule"] + sys.argv[1:]),
              "wall_minutes": round((time.time() - started) / 60, 1),
              "run_info": runinfo.collect({f.name: f.value for f in
                                           FLAGS.get_key_flags_for_module(sys.argv[0])})}
    publish_results(FLAGS.output, report, markdown(report))


def _define_flags():
    flags.DEFINE_string("images", LFW_IMAGES, "Photos to detect (default: lfw_dev).")
    flags.DEFINE_string("work_dir", "runs/main_face_rule", "Where the detections are kept.")
    flags.DEFINE_string("output", RESULTS, "Results path without extension (.md and .json).")
    flags.DEFINE_string("picture", PICTURE, "Where the picture of the changed photos goes.")


if __name__ == "__main__":
    _define_flags()
    logging.set_verbosity(logging.WARNING)
    _cli.run(main, __name__)
