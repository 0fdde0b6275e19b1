"""Images/s embedded by beam_jobs.mine_triplets end to end (DirectRunner, in-process) vs a bare
`model(batch)` loop over the same preprocessed images in one process (the limit).

    python -m benchmarks.bench_mine_embed [--quick]

The job's time is the whole mine_triplets call: dataset/model checks, pipeline start, record
reading, decoding, embedding, mining and writing. Data: ORL ingested with build_dataset if
../shared/data is present, else seeded synthetic faces of the same size.
"""

import argparse
import os
import tempfile
import time

import numpy as np

TARGET = 0.7
ORL = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), os.pardir,
                   "shared", "data", "orl_faces", "images")


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


def _preprocessed(dataset_dir, config):
    """Every image of the dataset decoded and standardised as the job does, [N, H, W, 3]."""
    import tensorflow as tf
    from facenet_tf import io_utils
    from facenet_tf.data import preprocess, records
    paths = [os.path.join(dataset_dir, n) for n in io_utils.read_manifest(dataset_dir)["shards"]]
    ds = (tf.data.TFRecordDataset(paths).map(records.parse_image_example)
          .map(lambda r: preprocess.preprocess_encoded(r[records.ENCODED], config)))
    return np.stack(list(ds.as_numpy_iterator()))


def run(quick: bool) -> list[dict]:
    import keras
    from beam_jobs.build_dataset import build_dataset
    from beam_jobs.mine_triplets import MiningConfig, mine_triplets
    from facenet_tf.data.preprocess import PreprocessConfig
    from facenet_tf.models import build_model

    arch, size = ("nns2", (64, 64)) if quick else ("nn4", (96, 96))
    batch_size = 64
    with tempfile.TemporaryDirectory() as tmp:
        if os.path.isdir(ORL) and not quick:
            source, images_dir = "ORL", ORL
        else:
            source = "synthetic"
            images_dir = _synthetic_faces(os.path.join(tmp, "faces"), 10 if quick else 40,
                                          6 if quick else 10)
        dataset = os.path.join(tmp, "dataset")
        build_dataset(images_dir, dataset, num_shards=4)
        model_path = os.path.join(tmp, "model.keras")
        build_model(arch, embedding_dim=128, input_shape=(*size, 3), seed=0).save(model_path)
        preprocess = PreprocessConfig(image_size=size)

        config = MiningConfig(dataset=dataset, model=model_path,
                              output_dir=os.path.join(tmp, "gen"), strategy="semi_hard",
                              identities_per_subset=1000, images_per_identity=1000,
                              num_subsets=1, batch_size=batch_size, preprocess=preprocess)
        start = time.perf_counter()
        manifest = mine_triplets(config)
        job_seconds = time.perf_counter() - start
        num_images = manifest["num_images"]

        pixels = _preprocessed(dataset, preprocess)
        model = keras.models.load_model(model_path, compile=False)
        model(pixels[:batch_size], training=False)  # trace once, as the job's loader does
        start = time.perf_counter()
        for i in range(0, len(pixels), batch_size):
            np.asarray(model(pixels[i:i + batch_size], training=False))
        bare_seconds = time.perf_counter() - start

    job_rate = num_images / job_seconds
    bare_rate = len(pixels) / bare_seconds
    return [{
        "benchmark": "beam_embed",
        "metric": "images/s embedded, mine_triplets end to end (DirectRunner, in-process)",
        "value": round(job_rate, 1), "baseline": round(bare_rate, 1),
        "ratio": round(job_rate / bare_rate, 3), "target": TARGET,
        "notes": (f"{source}, {num_images} images, {arch} at {size[0]}x{size[1]}, batch "
                  f"{batch_size}; job {job_seconds:.1f} s incl. start-up and mining/writing "
                  f"({manifest['num_triplets']} triplets) vs bare model(batch) loop "
                  f"{bare_seconds:.1f} s"),
    }]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and data")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        print(f"{row['metric']}: job {row['value']} vs bare loop {row['baseline']} "
              f"-> ratio {row['ratio']} (target >= {row['target']})\n  {row['notes']}")


if __name__ == "__main__":
    main()
