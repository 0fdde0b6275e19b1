"""Keras model that embeds a batch of triplets [B, 3, H, W, 3] -> [B, 3, D] with one network."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="facenet_tf")
class TripletEmbeddingModel(keras.Model):
    """Applies `embedder` to all 3B images of a triplet batch in one call (shared weights)."""

    def __init__(self, embedder: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.embedder = embedder

    def call(self, triplets, training=False):
        image_shape = tuple(triplets.shape[2:])
        flat = ops.reshape(triplets, (-1,) + image_shape)
        embeddings = self.embedder(flat, training=training)
        return ops.reshape(embeddings, (-1, 3, embeddings.shape[-1]))

    def build(self, input_shape):
        self.embedder.build((None,) + tuple(input_shape[2:]))
        super().build(input_shape)
