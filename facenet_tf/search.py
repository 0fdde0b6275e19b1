"""Finds the photos of an indexed collection where the person of a query photo appears.

    python -m facenet_tf.search --index INDEX --query FACE_PHOTO [--top_k 50] [--annotate DIR]

INDEX is the output of beam_jobs.index_faces. The query photo's main face (the largest, nearest
the centre) is embedded with the model the collection was indexed with; the photos whose
nearest face lies within the model's threshold (squared L2; --threshold to change it) are
printed nearest first, each with the box of the matching face and its distance. --annotate
writes copies of the query and of the matched photos with the faces outlined.
"""

import math

from absl import flags

from facenet_tf import _cli
from facenet_tf.common import io_utils
from facenet_tf.detection.detector import FaceDetector
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import collection as collection_lib


def main(argv):
    del argv
    f = flags.FLAGS
    collection = collection_lib.open_collection(f.index)
    embedder = load_embedder(f.model or collection.manifest["model"])
    threshold = math.inf if f.all else f.threshold
    result = collection_lib.search_photo(collection, embedder, FaceDetector(), f.query,
                                         f.top_k, threshold)
    print(format_result(result))
    if f.annotate:
        written = collection_lib.annotate(collection, result, f.annotate)
        print(f"wrote {len(written)} annotated photos to {f.annotate}")
    if f.output_json:
        io_utils.write_json_atomic(f.output_json, result)
        print(f"wrote {f.output_json}")


def format_result(result: dict) -> str:
    face = result["query_face"]
    t = result["threshold"]
    within = f"within distance {t:g}" if t is not None and math.isfinite(t) else "nearest"
    lines = [f"query: {result['query']} (face at {face['box']}, {face['num_faces']} face(s) "
             f"found, the main one used)",
             f"{len(result['results'])} photo(s) of {result['num_collection_photos']} {within} "
             f"(top {result['top_k']}):"]
    lines += [f"{r['rank']:4d}  {r['distance']:.3f}  {r['photo']}  face {r['face']} at "
              f"{r['box']}" for r in result["results"]]
    return "\n".join(lines)


def _define_flags():
    flags.DEFINE_string("index", None, "An index_faces output directory.", required=True)
    flags.DEFINE_string("query", None, "A photo of the person to look for.", required=True)
    flags.DEFINE_integer("top_k", 50, "At most this many photos.")
    flags.DEFINE_float("threshold", None, "Largest squared L2 distance of a match (default: "
                       "the model's recommended threshold).")
    flags.DEFINE_bool("all", False, "Rank the top_k nearest photos whatever their distance.")
    flags.DEFINE_string("model", None, "The model to embed the query with (default: the one "
                        "the index was made with; it must have the same fingerprint).")
    flags.DEFINE_string("annotate", None, "Write copies of the query and matched photos with "
                        "the faces outlined to this directory.")
    flags.DEFINE_string("output_json", None, "Also write the result as JSON here.")


def run():
    """The `facenet-search` command."""
    _define_flags()
    _cli.run(main, __name__)


if __name__ == "__main__":
    run()
