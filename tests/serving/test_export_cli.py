"""`python -m facenet_tf.export --tflite_dir`: both TFLite files from the command line, a bad
calibration path as one error line, and `evaluate --model x.tflite` on the same protocol."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from facenet_tf.data.pairs import generate_pairs, write_pairs
from facenet_tf.serving import tflite
from tests.conftest import REPO_ROOT, make_image_folder, make_tiny_embedding_model


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    make_tiny_embedding_model(input_shape=(24, 20, 3)).save(str(path))
    return str(path)


def test_a_bad_calibration_path_is_one_error_line_naming_it(tiny_keras, tmp_path):
    missing = str(tmp_path / "no_such_images")
    result = _run("facenet_tf.export", f"--checkpoint={tiny_keras}",
                  f"--tflite_dir={tmp_path / 'out'}", f"--calibration_data={missing}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and missing in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_export_writes_both_files_and_evaluate_reads_a_tflite_model(tiny_keras, tmp_path):
    faces = make_image_folder(tmp_path / "faces", num_identities=6, images_per_identity=4)
    out = str(tmp_path / "tflite")
    result = _run("facenet_tf.export", f"--checkpoint={tiny_keras}", f"--tflite_dir={out}",
                  f"--calibration_data={faces}", "--num_calibration=10")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == sorted([tflite.FLOAT32_FILE, tflite.INT8_FILE,
                                              tflite.METADATA_FILE])
    pairs = str(tmp_path / "pairs.txt")
    write_pairs(pairs, generate_pairs(faces, num_folds=2, seed=0), num_folds=2)
    reports = {}
    for name in (tflite.FLOAT32_FILE, tflite.INT8_FILE):
        r = _run("facenet_tf.evaluate", f"--model={os.path.join(out, name)}",
                 f"--pairs={pairs}", f"--images={faces}")
        assert r.returncode == 0, r.stderr[-3000:]
        reports[name] = json.loads(r.stdout)
    keras_report = json.loads(_run("facenet_tf.evaluate", f"--model={tiny_keras}",
                                   f"--pairs={pairs}", f"--images={faces}").stdout)
    assert reports[tflite.FLOAT32_FILE]["num_pairs"] == keras_report["num_pairs"] > 0
    # Float32 TFLite is the same function as the Keras model: same verdict on every pair.
    np.testing.assert_allclose(reports[tflite.FLOAT32_FILE]["accuracy_mean"],
                               keras_report["accuracy_mean"], atol=1e-9)
    assert reports[tflite.INT8_FILE]["model"].endswith(tflite.INT8_FILE)
