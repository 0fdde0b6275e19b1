"""Images/s embedded by beam_jobs.mine_triplets end to end (in-process FnApiRunner) vs a bare
loop over as many preprocessed images in one process (the limit).

The limit is the job's own embedding function in a bare loop: the model's serving function
(facenet_tf.models.inference.inference_function, batch norm folded, weights frozen), which is
what the job runs on a .keras model. A bare compiled `model(batch)` loop (the unfolded Keras
model) is timed and printed too.

    python -m benchmarks.bench_mine_embed [--quick]

Full: the 6,968 LFW images of identities with >= 2 images (../shared/data/lfw_dev), ingested
once with beam_jobs.build_dataset into a cache folder that later runs reuse, with NN4 at 96x96
and with Inception-ResNet-v1 at 160x160 (the pretrained FaceNet's network); the job runs with
its defaults (45 identities x 40 images per subset, subsets covering every identity,
semi-hard). Quick: ORL (400 images), NN4 only; without ../shared/data, seeded synthetic faces.
The job's time is the whole mine_triplets call: checks, model load, pipeline start, reading,
decoding, embedding, mining and writing the triplets; its per-stage times come from the job's
*_ms counters.
"""

import os
import sys
import tempfile
import time

import numpy as np

from benchmarks import common

TARGET = 0.7
BATCH_SIZE = 64
SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), os.pardir,
                      "shared", "data")
ORL = os.path.join(SHARED, "orl_faces", "images")
LFW = os.path.join(SHARED, "lfw_dev", "images")
CACHE = os.path.join(tempfile.gettempdir(), "facenet_tf-bench-cache", "bench_mine_embed")


def _synthetic_faces(root, identities, per_identity, size=(112, 92), seed=0):
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    for i in range(identities):
        folder = os.path.join(root, f"s{i + 1}")
        os.makedirs(folder, exist_ok=True)
        base = rng.integers(0, 256, size=(*size, 1))
        for j in range(per_identity):
            pixels = np.clip(base + rng.integers(-30, 31, size=base.shape), 0, 255)
            with open(os.path.join(folder, f"{j + 1}.png"), "wb") as f:
                f.write(tf.io.encode_png(pixels.astype(np.uint8)).numpy())
    return root


def _lfw_multi_image_dataset(cache_dir: str) -> str:
    """LFW identities with >= 2 images as a build_dataset output, built once into cache_dir."""
    from facenet_tf.common import io_utils
    from facenet_tf.pipelines.build_dataset import build_dataset
    dataset = os.path.join(cache_dir, "lfw_min2_dataset")
    if io_utils.is_complete(dataset):
        return dataset
    # build_dataset does not follow symlinked folders, so link the files into real folders.
    links = os.path.join(cache_dir, "lfw_min2_images")
    for name in sorted(os.listdir(LFW)):
        files = sorted(os.listdir(os.path.join(LFW, name)))
        if len(files) < 2:
            continue
        os.makedirs(os.path.join(links, name), exist_ok=True)
        for f in files:
            link = os.path.join(links, name, f)
            if not os.path.lexists(link):
                os.symlink(os.path.join(LFW, name, f), link)
    build_dataset(links, dataset, num_shards=8)
    return dataset


def _preprocessed(dataset_dir, config, limit):
    """The dataset's first `limit` images decoded and standardised as the job does."""
    import tensorflow as tf

    from facenet_tf.common import io_utils
    from facenet_tf.data import preprocess, records
    paths = [os.path.join(dataset_dir, n) for n in io_utils.read_manifest(dataset_dir)["shards"]]
    ds = (tf.data.TFRecordDataset(paths).map(records.parse_image_example).take(limit)
          .map(lambda r: preprocess.preprocess_encoded(r[records.ENCODED], config)))
    return np.stack(list(ds.as_numpy_iterator()))


def _loop_seconds(call, pixels) -> float:
    call(pixels[:BATCH_SIZE])  # trace / warm up once, outside the timing
    start = time.perf_counter()
    for i in range(0, len(pixels), BATCH_SIZE):
        np.asarray(call(pixels[i:i + BATCH_SIZE]))
    return time.perf_counter() - start


# (architecture, input size): the paper's smallest Inception (overhead-bound: JPEG decoding and
# Beam cost as much per image as embedding it) and the size of the pretrained FaceNet, which is
# what a user fine-tuning it mines with.
MODELS = (("nn4", (96, 96)), ("inception_resnet_v1", (160, 160)))


def _measure(arch, size, dataset, source, tmp) -> dict:
    import keras
    import tensorflow as tf

    from facenet_tf.data.preprocess import PreprocessConfig
    from facenet_tf.models import build_model
    from facenet_tf.models.inference import inference_function
    from facenet_tf.pipelines import beam_utils
    from facenet_tf.pipelines import mining_transforms as mt
    from facenet_tf.pipelines.mine_triplets import MiningConfig, mine_triplets

    model_path = os.path.join(tmp, f"{arch}.keras")
    build_model(arch, embedding_dim=128, input_shape=(*size, 3), seed=0).save(model_path)
    preprocess = PreprocessConfig(image_size=size)
    config = MiningConfig(dataset=dataset, model=model_path,
                          output_dir=os.path.join(tmp, f"gen-{arch}"), strategy="semi_hard",
                          subset_fraction=1.0, batch_size=BATCH_SIZE, preprocess=preprocess)
    start = time.perf_counter()
    manifest = mine_triplets(config)
    job_seconds = time.perf_counter() - start
    counters = manifest["counters"]
    num_images = int(counters.get("images_embedded", manifest["num_images"]))

    pixels = _preprocessed(dataset, preprocess, num_images)
    model = keras.models.load_model(model_path, compile=False)
    bare_seconds = _loop_seconds(inference_function(model), pixels)
    compiled = tf.function(lambda x: model(x, training=False))
    keras_seconds = _loop_seconds(compiled, pixels)

    job_rate = num_images / job_seconds
    bare_rate = len(pixels) / bare_seconds
    keras_rate = len(pixels) / keras_seconds
    phases = {name: counters.get(name, 0) / 1000 for name in (mt.EMBED_MS, mt.MINE_MS,
                                                              beam_utils.WRITE_MS)}
    other = job_seconds - sum(phases.values())
    phase_text = ", ".join(f"{k[:-3]} {v:.1f} s" for k, v in phases.items())
    phase_text = phase_text.replace("embed", "decode + embed", 1)
    return {
        "benchmark": "beam_embed",
        "metric": f"images/s embedded, mine_triplets end to end (in-process FnApiRunner), "
                  f"{arch} at {size[0]}x{size[1]}",
        "value": round(job_rate, 1), "baseline": round(bare_rate, 1),
        "ratio": round(job_rate / bare_rate, 3), "target": TARGET,
        "notes": (f"{source}, {num_images} images embedded, batch {BATCH_SIZE}, "
                  f"{manifest['num_subsets_mined']} subsets, {manifest['num_triplets']} "
                  f"semi-hard triplets written; job {job_seconds:.1f} s ({phase_text}; start-up, "
                  f"model load, Beam and shuffles {other:.1f} s) vs bare loop of the same "
                  f"embedding function {bare_seconds:.1f} s (compiled Keras model(batch) loop "
                  f"{keras_rate:.1f} images/s: job / that = {job_rate / keras_rate:.2f})"),
    }


def run(quick: bool) -> list[dict]:
    from facenet_tf.pipelines.build_dataset import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        if not quick and os.path.isdir(LFW):
            source = "LFW identities with >= 2 images"
            os.makedirs(CACHE, exist_ok=True)
            dataset = _lfw_multi_image_dataset(CACHE)
        else:
            if os.path.isdir(ORL):
                source, images_dir = "ORL", ORL
            else:
                source = "synthetic"
                images_dir = _synthetic_faces(os.path.join(tmp, "faces"), 40, 10)
            dataset = os.path.join(tmp, "dataset")
            build_dataset(images_dir, dataset, num_shards=4)
        models = MODELS[:1] if quick else MODELS
        return [_measure(arch, size, dataset, source, tmp) for arch, size in models]


def main(argv=None):
    return common.bench_main(run, __doc__, "ORL and a small model", argv)


if __name__ == "__main__":
    sys.exit(main())
