"""Exporting a trainer checkpoint rebuilds the run's network with the checkpoint's weights."""

import os
import subprocess
import sys

import numpy as np
import pytest

from facenet_tf.training import loop
from facenet_tf.training.config import TrainConfig
from tests.training import _helpers


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restore")
    dataset = _helpers.tiny_dataset(tmp)
    config = TrainConfig(train_data=dataset, model_dir=str(tmp / "run"), architecture="nns2",
                         embedding_dim=16, steps=4, remine_every_steps=100,
                         checkpoint_every_steps=2, batch_size=4, identities_per_subset=4,
                         images_per_identity=4, num_subsets=1, optimizer="adam",
                         learning_rate=0.01, export_dir=str(tmp / "final_export"), verbose=0)
    loop.train(config)
    return config


def test_checkpoint_export_equals_the_trainers_final_export(trained_run, tmp_path):
    from facenet_tf.inference.embedders import load_embedder
    out = tmp_path / "from_checkpoint"
    cmd = [sys.executable, "-m", "facenet_tf.export",
           f"--checkpoint={os.path.join(trained_run.model_dir, 'checkpoints')}",
           f"--export_dir={out}"]
    proc = subprocess.run(cmd, cwd=_helpers.REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = load_embedder(str(out))
    final = load_embedder(trained_run.export_dir)
    assert ours.preprocess == final.preprocess
    assert ours.metadata["step"] == 4
    pixels = np.random.RandomState(0).uniform(-1, 1, (3, 140, 116, 3)).astype("float32")
    np.testing.assert_allclose(ours.embed_pixels(pixels), final.embed_pixels(pixels), atol=1e-6)


def test_a_path_outside_a_run_is_refused(tmp_path):
    from facenet_tf.training.restore import restore_network
    with pytest.raises(FileNotFoundError, match="not a .keras file"):
        restore_network(str(tmp_path / "nothing"))
