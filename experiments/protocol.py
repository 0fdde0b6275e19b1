"""The held-out LFW dev protocol shared by the research runs (experiments.lfw_dev) and the
benchmarks that score on it (benchmarks.bench_tflite): align the photos (the align_faces Beam
job), split the identities with a seed (held-out ones among those with 2+ images), write
LFW-format pairs with identity-disjoint folds on the held-out identities, and ingest the
training identities (the build_dataset Beam job). Prepared once per work directory and reused.
"""

import os
import shutil
import time

from facenet_tf.common import io_utils
from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data.image_files import list_images
from facenet_tf.data.splits import split_identities, subset_identities
from facenet_tf.pipelines.align_faces import AlignJobConfig, align_faces
from facenet_tf.pipelines.build_dataset import build_dataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# The shared data: beside the checkout, or where $FACENET_TF_SHARED_DATA says (as for the tests).
SHARED_DATA = os.environ.get("FACENET_TF_SHARED_DATA",
                             os.path.join(os.path.dirname(REPO_ROOT), "shared", "data"))
LFW_IMAGES = os.path.join(SHARED_DATA, "lfw_dev", "images")
# Names a prepared work directory that the benchmarks and experiments share.
LFW_WORK_ENV = "FACENET_TF_LFW_DEV_WORK"


def existing_dir(path: str, flag: str) -> str:
    """`path` made absolute; FileNotFoundError naming the flag when it is not a directory."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--{flag}={path}: no such directory")
    return os.path.abspath(path)


def publish_results(base_path: str, report: dict, markdown: str, also_written=()) -> None:
    """A run's report as BASE.json and its table as BASE.md (each written atomically), and
    the table printed with every file written (also_written: the run's other files, such as
    its plot)."""
    io_utils.write_json_atomic(base_path + ".json", report)
    io_utils.write_bytes_atomic(base_path + ".md", markdown.encode("utf-8"))
    written = [base_path + ".md", base_path + ".json", *also_written]
    print("\n" + markdown + "\nwrote " + ", ".join(written), flush=True)


def default_params(images: str = LFW_IMAGES) -> dict:
    """The protocol of docs/experiments.md: aligned, seed 0, 400 held-out identities, 10 folds
    of 300 pairs."""
    return {"images": images, "align": True, "seed": 0, "heldout_identities": 400,
            "num_folds": 10, "pairs_per_fold": 300}


def stage(message: str) -> None:
    print(f"=== [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_data(work: str, params: dict) -> dict:
    """Aligned crops, split, held-out pairs and training dataset under `work` (reused when
    protocol.json says they were made with the same `params`); returns the protocol."""
    path = os.path.join(work, "protocol.json")
    if os.path.exists(path):
        protocol = io_utils.read_json(path)
        if protocol["params"] != params:
            raise ValueError(f"{path}: {work} was prepared with {protocol['params']}, not "
                             f"{params}; use another --work_dir (or delete that one)")
        return protocol
    started = time.time()
    images, no_face, unreadable = params["images"], None, None
    if params["align"]:
        aligned_dir = os.path.join(work, "aligned")
        if (io_utils.is_complete(aligned_dir)
                and io_utils.read_manifest(aligned_dir)["source"] == params["images"]):
            manifest = io_utils.read_manifest(aligned_dir)
        else:
            stage(f"detect and align the faces of {images} (align_faces Beam job)")
            manifest = align_faces(AlignJobConfig(images, aligned_dir))
        images = os.path.join(aligned_dir, manifest["images_dir"])
        no_face, unreadable = manifest["num_no_face"], manifest["num_unreadable"]
    stage(f"split the identities of {images}")
    split_dir, dataset_dir = os.path.join(work, "split"), os.path.join(work, "dataset")
    for stale in (split_dir, dataset_dir):  # an unfinished earlier preparation
        shutil.rmtree(stale, ignore_errors=True)
    train_root, heldout_root = os.path.join(split_dir, "train"), os.path.join(split_dir, "heldout")
    train_ids, heldout_ids = split_identities(images, train_root, heldout_root,
                                              params["heldout_identities"], params["seed"])
    pairs_path = os.path.join(work, "heldout_pairs.txt")
    pairs = pairs_lib.generate_pairs(heldout_root, num_folds=params["num_folds"],
                                     pairs_per_fold=params["pairs_per_fold"], seed=params["seed"])
    pairs_lib.write_pairs(pairs_path, pairs, num_folds=params["num_folds"])
    stage(f"ingest {len(train_ids)} training identities (build_dataset Beam job)")
    dataset = build_dataset(train_root, dataset_dir)
    protocol = {
        "params": params, "images_root": images, "num_no_face": no_face,
        "num_unreadable": unreadable, "train_images_root": train_root,
        "heldout_images_root": heldout_root, "pairs_path": pairs_path, "dataset": dataset_dir,
        "num_train_identities": dataset["num_identities"],
        "num_train_identities_2plus": sum(int(n) >= 2 for n in
                                          dataset["images_per_identity"].values()),
        "num_train_images": dataset["num_images"], "num_train_skipped": dataset["num_skipped"],
        "heldout_identities": heldout_ids, "num_heldout_images": len(list_images(heldout_root)),
        "num_pairs": len(pairs), "num_matched_pairs": sum(p.issame for p in pairs),
        "prepare_seconds": round(time.time() - started, 1)}
    io_utils.write_json_atomic(path, protocol)
    return protocol


def identity_subset(work: str, protocol: dict, fraction: float, seed: int) -> dict:
    """The training dataset made of a seeded `fraction` of the protocol's training identities
    (data.splits.subset_identities: the same share of those with 2+ images and of the others;
    nested for one seed), ingested by the build_dataset Beam job under WORK/subsets and reused;
    returns its path and counts."""
    root = os.path.join(work, "subsets", f"identities-{fraction:g}-seed{seed}")
    dataset_dir = os.path.join(root, "dataset")
    if not io_utils.is_complete(dataset_dir):
        shutil.rmtree(root, ignore_errors=True)  # an unfinished earlier attempt
        images = os.path.join(root, "images")
        subset_identities(protocol["train_images_root"], images, fraction, seed)
        stage(f"ingest {fraction:.0%} of the training identities (seed {seed}, build_dataset)")
        build_dataset(images, dataset_dir)
    return {"fraction": fraction, "seed": seed, **dataset_counts(dataset_dir)}


def dataset_counts(dataset_dir: str) -> dict:
    """A build_dataset output's path, identities and images (and those with 2+ images, which
    give anchor-positive pairs), from its manifest."""
    manifest = io_utils.read_manifest(dataset_dir)
    counts = [int(n) for n in manifest["images_per_identity"].values()]
    return {"dataset": dataset_dir, "num_identities": manifest["num_identities"],
            "num_identities_2plus": sum(n >= 2 for n in counts),
            "num_images": manifest["num_images"],
            "num_images_of_2plus": sum(n for n in counts if n >= 2)}
