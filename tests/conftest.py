"""Shared fixtures: where the real data is, tiny image folders, tiny embedding models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The commands the tests start run each op on one thread too (see below).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import numpy as np
import pytest
import tensorflow as tf

# Test processes, and the commands they start, run each TensorFlow op on one thread, as the
# Beam jobs' worker processes do (beam_utils.one_thread_per_op): on some CPUs (AVX2 AMD EPYC)
# an op's last float bits depend on its thread count, and the tests compare jobs run here,
# in-process, with the same jobs in other processes byte for byte. (Two pytest-xdist workers
# keep the 2 cores busy anyway.)
tf.config.threading.set_intra_op_parallelism_threads(1)

# Resolve symlinks so the path is right under Bazel's runfiles tree too.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
SHARED_DATA = os.environ.get("FACENET_TF_SHARED_DATA",
                             os.path.join(os.path.dirname(REPO_ROOT), "shared", "data"))


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data (ORL and part of LFW); integration tests skip if it is absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real face data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def orl_dir(shared_data):
    return os.path.join(shared_data, "orl_faces", "images")


@pytest.fixture(scope="session")
def lfw_dir(shared_data):
    return os.path.join(shared_data, "lfw_dev")


def make_image_folder(root, num_identities=4, images_per_identity=3, size=(24, 20), seed=0):
    """Writes an identity-per-folder dataset of small random PNGs; returns its root.

    Each identity has its own base colour pattern so that a model can separate them.
    """
    import tensorflow as tf
    rng = np.random.RandomState(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(num_identities):
        ident = os.path.join(root, f"person_{i:02d}")
        os.makedirs(ident, exist_ok=True)
        base = rng.randint(0, 256, size=(size[0], size[1], 3))
        for j in range(images_per_identity):
            noise = rng.randint(-20, 21, size=base.shape)
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            png = tf.io.encode_png(pixels).numpy()
            with open(os.path.join(ident, f"img_{j:03d}.png"), "wb") as f:
                f.write(png)
    return str(root)


@pytest.fixture
def tiny_image_folder(tmp_path):
    return make_image_folder(tmp_path / "faces")


def make_tiny_embedding_model(input_shape=(32, 32, 3), embedding_dim=8, seed=0):
    """A few-thousand-parameter conv net ending in an L2-normalised embedding."""
    import keras
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(embedding_dim)(x)
    outputs = keras.layers.UnitNormalization(axis=-1)(x)
    return keras.Model(inputs, outputs, name="tiny_embedder")


def litert_one_image_at_a_time(model_path, pixels):
    """Embeddings from a bare LiteRT interpreter invoked once per image: the oracle for the
    project's TFLite runner (which batches, resizes and locks)."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    rows = []
    for x in pixels:
        interpreter.set_tensor(inp, np.asarray(x[None], np.float32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out)[0].copy())
    return np.stack(rows)


def old_main_face_rule(detections, height, width):
    """The main face by davidsandberg/facenet's align_dataset_mtcnn rule (largest box area -
    2 x squared distance of its centre from the image centre), which main_face replaced."""
    b = detections.boxes.astype(np.float64)
    dx = (b[:, 0] + b[:, 2]) / 2 - width / 2
    dy = (b[:, 1] + b[:, 3]) / 2 - height / 2
    return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - 2 * (dx * dx + dy * dy)))


def pillow_jpeg(image, quality):
    """An image (float or uint8, rounded to 0..255) saved by Pillow as a JPEG at `quality`
    and read back: float32 [H, W, 3]. The oracle of `--degrade jpeg:Q`."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(
        buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)


@pytest.fixture
def tiny_embedding_model():
    return make_tiny_embedding_model()


@pytest.fixture(scope="module")
def dask_cluster():
    """A dask.distributed cluster of 2 worker processes (1 thread each) for Beam's DaskRunner,
    whose workers import this checkout (they unpickle the jobs' DoFns by module name).

    Yields a Client of it (its scheduler records the task stream from the start); the jobs
    connect with --dask_client_address=dask_address(client). Skips if dask is not installed.
    """
    distributed = pytest.importorskip("dask.distributed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", REPO_ROOT)
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=":0") as cluster:
            with distributed.Client(cluster) as client:
                client.get_task_stream()  # starts recording
                yield client


def dask_address(client) -> str:
    """HOST:PORT of the client's scheduler, as --dask_client_address takes it."""
    return client.scheduler.address.removeprefix("tcp://")



# The longest modules, longest first (make test's --durations on 2 cores): they start before
# the other slow modules.
LONGEST_MODULES = ("tests/test_demo.py", "tests/test_experiments_lfw_dev.py",
                   "tests/test_pretrained.py")


def pytest_collection_modifyitems(config, items):
    """The longest modules run first, then the others holding a slow test, then the rest (each
    group in its usual order): under `pytest -n 2 --dist loadfile --no-loadscope-reorder`
    (make test) the long modules then start early instead of leaving one worker alone with
    them at the end."""
    def module(item):
        return item.nodeid.split("::")[0]
    slow = {module(item) for item in items if item.get_closest_marker("slow")}

    def rank(item):
        name = module(item)
        if name in LONGEST_MODULES:
            return LONGEST_MODULES.index(name)
        return len(LONGEST_MODULES) + (name not in slow)
    items.sort(key=rank)
