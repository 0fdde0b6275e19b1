"""The app side of a TFLite export (facenet_tf.serving.tflite_runtime): it needs no TensorFlow,
preprocesses as TensorFlow does, and embeds as the TFLiteEmbedder; the runner is thread-safe;
docs/serving.md's app snippet runs without TensorFlow and gives the loader's distance."""

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from facenet_tf.data import preprocess as pp
from facenet_tf.inference.embedders import load_tflite_embedder
from facenet_tf.serving import tflite, tflite_runtime
from tests.conftest import (
    REPO_ROOT,
    litert_one_image_at_a_time,
    make_image_folder,
    make_tiny_embedding_model,
)

CFG = pp.PreprocessConfig(image_size=(32, 32), crop_fraction=0.8, standardization="fixed")

# Prepended to code run in a subprocess: any import of TensorFlow or Keras fails.
BLOCK_TENSORFLOW = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


def _run_without_tensorflow(code: str, cwd) -> str:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    done = subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW + code], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _png(seed, size, channels=3):
    rng = np.random.RandomState(seed)
    return tf.io.encode_png(rng.randint(0, 256, (*size, channels)).astype(np.uint8)).numpy()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfl_runtime")
    folder = make_image_folder(str(root / "faces"), size=(40, 36))
    out = str(root / "runs" / "orl" / "tflite")
    tflite.export_tflite(make_tiny_embedding_model(), out, CFG, calibration_images=folder,
                         num_calibration=10, threshold=0.9, seed=3)
    return root, out


@pytest.mark.parametrize("standardization", ["fixed", "prewhiten"])
def test_preprocess_equals_tensorflows(standardization):
    """The numpy preprocessing against facenet_tf.data.preprocess (TensorFlow): images larger
    and smaller than the input, other aspects, greyscale and RGBA, several crop fractions."""
    images = [_png(0, (57, 41)), _png(1, (30, 90)), _png(2, (20, 17)), _png(3, (250, 250)),
              _png(4, (45, 61), channels=1), _png(5, (33, 40), channels=4)]
    for crop_fraction in (1.0, 0.8, 0.52):
        for size in ((32, 32), (40, 28)):
            cfg = pp.PreprocessConfig(size, crop_fraction, standardization)
            for data in images:
                expected = pp.preprocess_encoded(tf.constant(data), cfg).numpy()
                got = tflite_runtime.preprocess(data, cfg.to_dict())
                assert got.dtype == np.float32 and got.shape == expected.shape
                np.testing.assert_allclose(got, expected, atol=2e-5)


def test_embeds_without_tensorflow_as_the_tflite_embedder(tiny_export):
    """A subprocess in which TensorFlow cannot be imported embeds image files, bytes and PIL
    images with LiteRTEmbedder; the TFLiteEmbedder (TensorFlow preprocessing) is the oracle."""
    root, out = tiny_export
    names = []
    for seed, size in enumerate([(57, 41), (30, 90), (32, 32), (100, 80)]):
        names.append(str(root / f"face_{seed}.png"))
        with open(names[-1], "wb") as f:
            f.write(_png(seed, size))
    code = f"""
import json, sys
from PIL import Image
from facenet_tf.serving.tflite_runtime import LiteRTEmbedder
names = {names!r}
result = {{}}
for variant in ("model_float32.tflite", "model_int8.tflite"):
    lite = LiteRTEmbedder({out!r} + "/" + variant, num_threads=2)
    images = [names[0], open(names[1], "rb").read(), Image.open(names[2]), names[3]]
    result[variant] = {{"embeddings": lite.embed_images(images).tolist(),
                        "threshold": lite.threshold, "fingerprint": lite.fingerprint}}
result["modules"] = sorted(m for m in sys.modules
                           if m.split(".")[0] in ("tensorflow", "keras", "facenet_tf"))
print(json.dumps(result))
"""
    result = json.loads(_run_without_tensorflow(code, root))
    assert result["modules"] == ["facenet_tf", "facenet_tf.serving",
                                 "facenet_tf.serving.tflite_runtime"]
    encoded = [open(n, "rb").read() for n in names]
    for variant in (tflite.FLOAT32_FILE, tflite.INT8_FILE):
        embedder = load_tflite_embedder(os.path.join(out, variant))
        got = result[variant]
        np.testing.assert_allclose(got["embeddings"], embedder.embed_encoded(encoded), atol=1e-4)
        assert got["threshold"] == embedder.threshold == 0.9
        assert got["fingerprint"] == embedder.fingerprint


def test_int8_embeddings_are_the_graphs_outputs_at_unit_length(tiny_export):
    """The int8 graph's quantized L2 normalisation leaves norms off 1; the embedders return
    its outputs re-normalised (float32 ones as they are)."""
    _, out = tiny_export
    pixels = np.random.RandomState(1).uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    for variant in (tflite.INT8_FILE, tflite.FLOAT32_FILE):
        raw = litert_one_image_at_a_time(os.path.join(out, variant), pixels)
        if variant == tflite.INT8_FILE:
            raw = np.stack([row / np.sqrt(sum(float(v) ** 2 for v in row)) for row in raw])
        for embedder in (tflite_runtime.LiteRTEmbedder(os.path.join(out, variant)),
                         load_tflite_embedder(os.path.join(out, variant))):
            np.testing.assert_allclose(embedder.embed_pixels(pixels), raw, atol=1e-6)


@pytest.mark.parametrize("num_threads, max_interpreters", [(1, 1), (2, 2), (1, 3)])
def test_runner_resizes_and_is_thread_safe(tiny_export, num_threads, max_interpreters):
    """Batches of changing size from 4 threads at once through one runner: every caller gets
    its own images' embeddings (no two calls share an interpreter), and no more interpreters
    are made than allowed."""
    _, out = tiny_export
    path = os.path.join(out, tflite.FLOAT32_FILE)
    pixels = np.random.RandomState(0).uniform(-1, 1, (9, 32, 32, 3)).astype(np.float32)
    expected = litert_one_image_at_a_time(path, pixels)
    runner = tflite_runtime.InterpreterRunner(path, num_threads=num_threads,
                                              max_interpreters=max_interpreters)
    batches = [(start, stop) for start in range(9) for stop in range(start + 1, 10)] * 3

    def run(bounds):
        start, stop = bounds
        return bounds, runner(pixels[start:stop]).copy()

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for (start, stop), got in pool.map(run, batches):
            np.testing.assert_allclose(got, expected[start:stop], atol=1e-5)
    assert 1 <= runner.num_interpreters <= max_interpreters


def test_a_call_does_not_wait_for_another_in_progress(tiny_export):
    """While one call holds the runner's interpreter, another call runs on a second one
    instead of waiting (the parallelism a job that embeds on two threads relies on)."""
    _, out = tiny_export
    path = os.path.join(out, tflite.FLOAT32_FILE)
    runner = tflite_runtime.InterpreterRunner(path, max_interpreters=2)
    pixels = np.random.RandomState(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    got = []
    with runner.hold():  # as a call in progress holds it
        second = threading.Thread(target=lambda: got.append(runner(pixels).copy()), daemon=True)
        second.start()
        second.join(timeout=60)
        waited = second.is_alive()  # checked while the interpreter is still held
    second.join(timeout=60)
    assert not waited, "the second call waited for the first call's interpreter"
    np.testing.assert_allclose(got[0], litert_one_image_at_a_time(path, pixels), atol=1e-5)
    assert runner.num_interpreters == 2


def test_bad_inputs_name_the_problem(tiny_export, tmp_path):
    _, out = tiny_export
    lite = tflite_runtime.LiteRTEmbedder(os.path.join(out, tflite.INT8_FILE))
    assert lite.variant == "int8" and lite.embed_images([]).shape == (0, 8)
    with pytest.raises(ValueError, match=r"expected pixels \[batch, 32, 32, 3\], got \[2, 30"):
        lite.embed_pixels(np.zeros((2, 30, 32, 3)))
    with pytest.raises(ValueError, match="num_threads should >= 1"):
        tflite_runtime.InterpreterRunner(os.path.join(out, tflite.INT8_FILE), num_threads=0)
    with pytest.raises(ValueError, match="max_interpreters must be >= 1, got 0"):
        tflite_runtime.InterpreterRunner(os.path.join(out, tflite.INT8_FILE),
                                         max_interpreters=0)
    (tmp_path / "m.tflite").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=f"m.tflite: no {tflite.METADATA_FILE} beside"):
        tflite_runtime.LiteRTEmbedder(tmp_path / "m.tflite")
    meta = json.load(open(os.path.join(out, tflite.METADATA_FILE)))
    (tmp_path / tflite.METADATA_FILE).write_text(json.dumps({**meta, "format_version": 9}))
    with pytest.raises(ValueError, match="format_version 9 is not supported"):
        tflite_runtime.LiteRTEmbedder(tmp_path / "m.tflite")
    (tmp_path / tflite.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"m.tflite: not one of the files"):
        tflite_runtime.LiteRTEmbedder(tmp_path / "m.tflite")


def _docs_app_section():
    with open(os.path.join(REPO_ROOT, "docs", "serving.md")) as f:
        doc = f.read()
    return doc[doc.index("## Running a .tflite model in an app"):]


def _pins(path):
    with open(path) as f:
        return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", f.read(), re.M))


def test_docs_app_install_pins_the_projects_versions():
    """The app's `pip install` line names the versions requirements/base.txt pins."""
    line = re.search(r"^pip install (.*)$", _docs_app_section(), re.M).group(1)
    wanted = dict(p.split("==") for p in line.split())
    assert set(wanted) == {"ai-edge-litert", "numpy", "pillow"}
    base = _pins(os.path.join(REPO_ROOT, "requirements", "base.txt"))
    assert wanted == {name: base[name] for name in wanted}


def test_docs_app_snippet_runs_without_tensorflow_and_matches_the_loader(tiny_export):
    """docs/serving.md's snippet, run where TensorFlow cannot be imported, on an export at the
    path it names (a 0.8 centre crop, images of other sizes than the input): its distance
    equals the one from load_tflite_embedder on the same two images."""
    root, out = tiny_export
    faces = {"face_a.png": _png(20, (57, 41)), "face_b.png": _png(21, (64, 48))}
    for name, data in faces.items():
        (root / name).write_bytes(data)
    snippet = re.search(r"```python\n(.*?)```", _docs_app_section(), re.S).group(1)
    verdict, printed = _run_without_tensorflow(snippet, root).split()
    emb = load_tflite_embedder(os.path.join(out, tflite.INT8_FILE)).embed_encoded(
        list(faces.values()))
    expected = float(np.sum((emb[0] - emb[1]) ** 2))
    assert float(printed) == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert verdict == ("same" if expected <= 0.9 else "different")
