r"""Searching an indexed collection for a person (issue 27): the lfw_dev held-out identities.

    python -m experiments.search_lfw_dev [--work_dir runs/search_lfw_dev] [--model int8|saved_model]
        [--min_face_size 20]

The original photos of the held-out protocol (experiments.protocol: 400 identities, 2,535
photos) are indexed with beam_jobs.index_faces (every face of every photo); then every identity
is searched with its first photo's main face (facenet_tf.recognition.collection.nearest_photos,
no threshold, the query's own photo left out): mean average precision and precision@10 over
the identities (relevant: photos of the same identity). The held-out pairs are verified from the
same index too (main faces). Writes WORK_DIR/results.json and .md (copies are kept in
experiments/results/search_lfw_dev.*).
"""

import os
import time

from absl import flags

from experiments import heldout_collection as heldout
from experiments.protocol import publish_results, stage
from facenet_tf import _cli
from facenet_tf.common import runinfo
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.pipelines.index_faces import IndexJobConfig, index_faces
from facenet_tf.recognition import collection as collection_lib

FLAGS = flags.FLAGS


def run_experiment(work: str, model_name: str, min_face_size: float) -> dict:
    protocol = heldout.prepare(work)
    models = heldout.prepare_models(protocol)
    photos_dir = os.path.join(work, "photos")
    stage(f"copy the held-out photos to {photos_dir}")
    photos = heldout.collection_folder(protocol, photos_dir)
    index_dir = os.path.join(work, f"index_{model_name}_min{min_face_size:g}")
    stage(f"index {len(photos)} photos into {index_dir} (beam_jobs.index_faces)")
    manifest = index_faces(IndexJobConfig(photos_dir, models[model_name], index_dir,
                                          min_face_size=min_face_size))
    stage("search every identity by one of its photos")
    started = time.perf_counter()
    search = heldout.search_metrics(index_dir, photos)
    search_seconds = time.perf_counter() - started
    collection = collection_lib.open_collection(index_dir)
    embedder = load_embedder(models[model_name])
    pairs = heldout.pairs_accuracy(heldout.main_faces_from_index(index_dir), protocol, photos,
                                   photos_dir, embedder)
    return {"model": model_name, "model_path": models[model_name],
            "min_face_size": min_face_size, "index": index_dir,
            "num_photos": manifest["num_photos"], "num_faces": manifest["num_faces"],
            "num_no_face": manifest["num_no_face"], "search_index": manifest["search_index"],
            "index_seconds": manifest["elapsed_seconds"], "search": search,
            "ms_per_query": round(1000 * search_seconds / search["num_queries"], 2),
            "collection_faces": len(collection.index), "heldout_pairs": pairs,
            "run_info": runinfo.collect(runinfo.absl_flag_values())}


def markdown(result: dict) -> str:
    s, p = result["search"], result["heldout_pairs"]
    return "\n".join([
        "# Searching the lfw_dev held-out photos for each identity", "",
        f"Collection: the {result['num_photos']} original photos of the {s['num_queries']} "
        f"held-out identities, {result['num_faces']} faces indexed "
        f"({result['num_no_face']} photos without a face) with the pretrained FaceNet as "
        f"{result['model']} at min_face_size {result['min_face_size']:g}; search index: "
        f"{result['search_index']['kind']} ({result['search_index']['engine']}).", "",
        "| queries | mean relevant photos | mAP | precision@10 | precision@1 | ms a query |",
        "|---|---|---|---|---|---|",
        f"| {s['num_queries']} | {s['mean_relevant_per_query']:.2f} | {s['map']:.4f} | "
        f"{s['precision_at_10']:.4f} | {s['precision_at_1']:.4f} | "
        f"{result['ms_per_query']:.2f} |", "",
        "Each identity is queried with its first photo's main face; every other photo of the "
        "collection is ranked by its nearest face (no threshold). Relevant: the photos of the "
        "query's identity. Precision@10 cannot reach 1 here: most identities have fewer than "
        "10 other photos.", "",
        f"Held-out pairs from the same index (main faces): accuracy "
        f"{p['accuracy_mean']:.4f}, VAL@1e-3 {p['val_at_far_1e-3']:.4f} over "
        f"{p['num_pairs']} pairs.", "",
        f"Command: `python -m experiments.search_lfw_dev --model {result['model']} "
        f"--min_face_size {result['min_face_size']:g}` (git "
        f"{result['run_info']['git_revision']}).", ""])


def main(argv):
    del argv
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    result = run_experiment(FLAGS.work_dir, FLAGS.model, FLAGS.min_face_size)
    publish_results(os.path.join(FLAGS.work_dir, "results"), result, markdown(result))


def _define_flags():
    flags.DEFINE_string("work_dir", os.path.join("runs", "search_lfw_dev"), "Where the photos, "
                        "the index and the results go.")
    flags.DEFINE_enum("model", "tflite_int8", ["tflite_int8", "saved_model"], "The pretrained "
                      "model's form to index with.")
    flags.DEFINE_float("min_face_size", IndexJobConfig.min_face_size, "The index job's "
                       "--min_face_size.")


if __name__ == "__main__":
    _define_flags()
    _cli.run(main, __name__)
