"""TripletEmbeddingModel applies one shared network to each of the three roles."""

import numpy as np

from facenet_tf.training.model_wrapper import TripletEmbeddingModel
from tests.conftest import make_tiny_embedding_model


def test_each_role_is_the_embedder_of_that_image():
    embedder = make_tiny_embedding_model((16, 12, 3), embedding_dim=5, seed=2)
    model = TripletEmbeddingModel(embedder)
    x = np.random.RandomState(0).normal(size=(4, 3, 16, 12, 3)).astype("float32")
    out = np.asarray(model(x))
    assert out.shape == (4, 3, 5)
    for role in range(3):
        np.testing.assert_allclose(out[:, role], np.asarray(embedder(x[:, role])), atol=1e-6)
    assert len(model.trainable_weights) == len(embedder.trainable_weights)
