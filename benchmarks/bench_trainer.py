"""Trainer throughput: offline triplets from TFRecords vs model.fit on in-memory tensors.

Both train the same model (NNS2, 140x116 input) with the same loss, optimizer and batch; the
in-memory run is the input-pipeline-free limit. The generation holds 300 ORL-sized PNGs and 512
triplets drawn from them (a mined generation reuses each image many times).

    python -m benchmarks.bench_trainer [--quick]
"""

import os
import sys
import tempfile
import time

import numpy as np

from benchmarks import common


def _write_generation(directory, num_triplets, num_images, size=(112, 92), seed=0):
    """A generation of ORL-sized (112x92) PNG images and triplets drawn from them at random
    (as in a mined generation, each image serves several triplets), plus its manifest."""
    import tensorflow as tf

    from facenet_tf.common import io_utils
    from facenet_tf.data import records
    rng = np.random.RandomState(seed)
    os.makedirs(directory, exist_ok=True)
    names = [records.shard_name(records.TRIPLET_SHARD_PREFIX, i, 2) for i in range(2)]
    image_names = [records.shard_name(records.IMAGE_SHARD_PREFIX, 0, 1)]
    info = records.MiningInfo("bench", "semi_hard", 0.2, 0, 0.0, 0.0)
    pool = []
    with tf.io.TFRecordWriter(os.path.join(directory, image_names[0])) as image_writer:
        for i in range(num_images):
            small = rng.randint(0, 256, (size[0] // 8, size[1] // 8, 3)).astype(np.float32)
            img = tf.image.resize(small, size).numpy().astype(np.uint8)
            pool.append(records.ImageRecord(tf.io.encode_png(img).numpy(), "png", i, "x",
                                            f"x/{i}", size[0], size[1]))
            image_writer.write(records.image_example(pool[-1]).SerializeToString())
    writers = [tf.io.TFRecordWriter(os.path.join(directory, n)) for n in names]
    for t in range(num_triplets):
        picks = rng.choice(num_images, 3, replace=False)
        writers[t % 2].write(records.triplet_example(*(pool[i] for i in picks),
                                                     info).SerializeToString())
    for w in writers:
        w.close()
    io_utils.write_json_atomic(os.path.join(directory, io_utils.MANIFEST_NAME),
                               {"shards": names, "image_shards": image_names,
                                "num_triplets": num_triplets})


def _step_seconds(model, data, steps, **fit_kw):
    """Per-step wall times of one model.fit call (steady state: the first 3 steps dropped)."""
    import keras
    marks = []

    class Marks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append(time.perf_counter())

    model.fit(data, epochs=1, steps_per_epoch=steps + 3, verbose=0, callbacks=[Marks()],
              **fit_kw)
    return list(np.diff(marks[2:]))


def run(quick: bool) -> list[dict]:
    import tensorflow as tf

    from facenet_tf.training import builders, distribution, triplet_data
    from facenet_tf.training.config import TrainConfig

    batch, steps, rounds = (16, 8, 1) if quick else (16, 20, 4)
    with tempfile.TemporaryDirectory() as tmp:
        gen = os.path.join(tmp, "gen")
        num_images = 100 if quick else 300
        _write_generation(gen, num_triplets=128 if quick else 512, num_images=num_images)
        config = TrainConfig(train_data=tmp, model_dir=tmp, architecture="nns2", embedding_dim=64,
                             batch_size=batch, optimizer="adam", learning_rate=1e-3)
        distribute_strategy = distribution.make_distribute_strategy("mirrored", 0)
        model, embedder, _ = builders.compile_model(config, distribute_strategy)
        preprocess = builders.preprocess_config(config, embedder.input_shape[1:])
        started = time.perf_counter()
        ds = triplet_data.triplet_dataset(gen, preprocess, batch, seed=0)
        build_seconds = time.perf_counter() - started

        # Baseline: the same kind of compiled model, fed from in-memory tensors of the same shape.
        base_model, base_embedder, _ = builders.compile_model(config, distribute_strategy)
        shape = (batch * 4,) + tuple(base_embedder.input_shape[1:])
        x = np.random.RandomState(0).uniform(-1, 1, (shape[0], 3) + shape[1:]).astype("float32")
        mem = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x), "float32")))
        mem = mem.repeat().batch(batch).prefetch(2)

        _step_seconds(model, ds, 2)  # trace and warm up both
        _step_seconds(base_model, mem, 2)
        t_records, t_memory = [], []
        for _ in range(rounds):  # alternating, so that load drifts hit both alike
            t_records += _step_seconds(model, ds, steps)
            t_memory += _step_seconds(base_model, mem, steps)

    images = batch * 3
    # Medians of the per-step times: steady-state throughput, robust to one-off stalls.
    rate = images / float(np.median(t_records))
    base = images / float(np.median(t_memory))
    return [{"benchmark": "trainer", "metric": "images/s (nns2 140x116, TFRecord triplets)",
             "value": round(rate, 1), "baseline": round(base, 1),
             "ratio": round(rate / base, 3), "target": 0.9,
             "notes": f"baseline: model.fit on in-memory tensors; batch {batch} triplets, "
                      f"median step of {rounds} alternating rounds of {steps} steps, "
                      f"{os.cpu_count()} CPUs; generation of {num_images} 112x92 PNGs, "
                      f"decoded once into memory when the dataset is built "
                      f"({build_seconds:.2f} s, not in the steps)"}]


def main(argv=None):
    return common.bench_main(run, __doc__, "fewer steps", argv)


if __name__ == "__main__":
    sys.exit(main())
