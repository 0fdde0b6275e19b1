"""Keras model that embeds a batch of triplets [B, 3, H, W, 3] -> [B, 3, D] with one network."""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="facenet_tf")
class TripletEmbeddingModel(keras.Model):
    """Applies `network` to all 3B images of a triplet batch in one call (shared weights)."""

    def __init__(self, network: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.network = network

    def call(self, triplets, training=False):
        image_shape = tuple(triplets.shape[2:])
        flat = ops.reshape(triplets, (-1,) + image_shape)
        embeddings = self.network(flat, training=training)
        return ops.reshape(embeddings, (-1, 3, embeddings.shape[-1]))

    def build(self, input_shape):
        self.network.build((None,) + tuple(input_shape[2:]))
        super().build(input_shape)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 builds from the first distributed batch via strategy.reduce(), which
        # MultiWorkerMirroredStrategy cannot run eagerly (keras-team/keras#20585): build from
        # this worker's local slice instead.
        strategy = self.distribute_strategy
        if iterator is not None and isinstance(strategy,
                                               tf.distribute.MultiWorkerMirroredStrategy):
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda x: strategy.experimental_local_results(x)[0], next(it))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        logs = super().train_step(data)
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15 reduces per-replica logs with reduce("MEAN", axis=0) across workers,
            # which needs a batch axis: give each scalar one (the reduction removes it again).
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs
