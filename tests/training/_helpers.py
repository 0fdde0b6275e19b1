"""Shared pieces of the trainer tests: tiny datasets, hand-written generations, subprocess runs."""

import os
import subprocess
import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.realpath(__file__)), "_train_script.py")
TINY_SHAPE = (32, 32, 3)


def tiny_dataset(tmp_path, num_identities=4, images_per_identity=4, seed=0) -> str:
    """A build_dataset output over a small random identity folder (32x32 PNGs)."""
    from facenet_tf.pipelines.build_dataset import build_dataset
    from tests.conftest import make_image_folder
    folder = make_image_folder(os.path.join(tmp_path, "faces"), num_identities,
                               images_per_identity, size=TINY_SHAPE[:2], seed=seed)
    out = os.path.join(tmp_path, "dataset")
    build_dataset(folder, out, num_shards=2)
    return out


def write_generation(directory, triplet_pixels, extra_shards=()):
    """Writes a generation of triplets (uint8 [T, 3, H, W, 3]) in 2 listed triplet shards and
    one image shard (every image once, under its own id).

    extra_shards: names of additional triplet shard files written but NOT listed in the
    manifest (their records refer to image "x/x.png", which the image shard also holds).
    """
    import tensorflow as tf

    from facenet_tf.common import io_utils
    from facenet_tf.data import records
    os.makedirs(directory, exist_ok=True)
    names = [records.shard_name(records.TRIPLET_SHARD_PREFIX, i, 2) for i in range(2)]
    image_names = [records.shard_name(records.IMAGE_SHARD_PREFIX, 0, 1)]
    info = records.MiningInfo("test", "semi_hard", 0.2, 0, 0.0, 0.0)
    writers = [tf.io.TFRecordWriter(os.path.join(directory, n)) for n in names]
    with tf.io.TFRecordWriter(os.path.join(directory, image_names[0])) as image_writer:
        for t, triplet in enumerate(triplet_pixels):
            recs = [records.ImageRecord(tf.io.encode_png(img).numpy(), "png", t * 3 + r,
                                        f"id{t}_{r}", f"id{t}_{r}/x.png", img.shape[0],
                                        img.shape[1])
                    for r, img in enumerate(triplet)]
            for rec in recs:
                image_writer.write(records.image_example(rec).SerializeToString())
            writers[t % 2].write(records.triplet_example(*recs, info).SerializeToString())
        if extra_shards:
            odd = records.ImageRecord(tf.io.encode_png(triplet_pixels[0][0]).numpy(), "png", 0,
                                      "x", "x/x.png", 1, 1)
            image_writer.write(records.image_example(odd).SerializeToString())
    for w in writers:
        w.close()
    for name in extra_shards:
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as w:
            w.write(records.triplet_example(odd, odd, odd, info).SerializeToString())
    io_utils.write_json_atomic(os.path.join(directory, io_utils.MANIFEST_NAME),
                               {"shards": names, "image_shards": image_names,
                                "num_triplets": len(triplet_pixels)})
    return directory


def random_triplets(n, shape=TINY_SHAPE, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n, 3) + shape).astype(np.uint8)


def run_script(args, env_extra=None, timeout=240, **popen):
    """Runs tests/training/_train_script.py in a fresh interpreter (its own TF runtime)."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    env.update(env_extra or {})
    cmd = [sys.executable, TRAIN_SCRIPT] + list(args)
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, **popen)
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)
