"""Builds what a training run trains from its TrainConfig: the embedding network, its input
preprocessing, the optimizer, and the compiled Keras model (offline triplets or online mining)."""

import keras

from facenet_tf import models
from facenet_tf.data.preprocess import PreprocessConfig
from facenet_tf.models import frozen_graph
from facenet_tf.training.config import TrainConfig
from facenet_tf.training.model_wrapper import TripletEmbeddingModel
from facenet_tf.triplets import losses


def preprocess_config(config: TrainConfig, input_shape) -> PreprocessConfig:
    """The run's input preprocessing: the network's input size and the configured crop."""
    if config.architecture == models.PRETRAINED:
        # The pretrained weights' own standardisation; the crop depends on the data (0.52 for
        # LFW's 250x250 thumbnails, 1.0 for tight face crops such as ORL).
        return PreprocessConfig(image_size=frozen_graph.PRETRAINED_PREPROCESS.image_size,
                                crop_fraction=config.crop_fraction,
                                standardization=frozen_graph.PRETRAINED_PREPROCESS.standardization)
    return PreprocessConfig(image_size=tuple(input_shape[:2]), crop_fraction=config.crop_fraction)


def build_network(config: TrainConfig, network_fn=None) -> keras.Model:
    """The embedding network: `network_fn()` if given, else facenet_tf.models by name."""
    if network_fn is not None:
        return network_fn()
    if config.architecture == models.PRETRAINED:
        return models.build_model(models.PRETRAINED)
    return models.build_model(config.architecture, embedding_dim=config.embedding_dim,
                              input_shape=config.input_shape, seed=config.seed)


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """The paper's AdaGrad (lr 0.05), Adam or SGD with momentum, under the chosen schedule."""
    lr = config.learning_rate
    schedules = keras.optimizers.schedules
    if config.lr_schedule == "exponential":
        lr = schedules.ExponentialDecay(lr, config.lr_decay_steps, config.lr_decay_rate,
                                        staircase=True)
    elif config.lr_schedule == "cosine":
        lr = schedules.CosineDecay(lr, max(1, config.steps))
    elif config.lr_schedule == "piecewise":
        # Lower by lr_decay_rate every lr_decay_steps ("lowered to finalise", the paper).
        bounds = list(range(config.lr_decay_steps, max(config.steps, 1), config.lr_decay_steps))
        values = [config.learning_rate * config.lr_decay_rate ** i for i in range(len(bounds) + 1)]
        lr = schedules.PiecewiseConstantDecay(bounds, values) if bounds else config.learning_rate
    if config.optimizer == "adagrad":
        return keras.optimizers.Adagrad(learning_rate=lr)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.SGD(learning_rate=lr, momentum=config.momentum)


def compile_model(config: TrainConfig, distribute_strategy, network_fn=None):
    """(training model, embedding network, optimizer), built and compiled in the tf.distribute scope."""
    with distribute_strategy.scope():
        network = build_network(config, network_fn)
        optimizer = make_optimizer(config)
        input_shape = tuple(network.input_shape[1:])
        if config.mining == "offline":
            model = TripletEmbeddingModel(network, name="triplet_trainer")
            model.build((None, 3) + input_shape)
            model.compile(optimizer=optimizer, loss=losses.OfflineTripletLoss(config.alpha),
                          metrics=losses.offline_triplet_metrics(config.alpha),
                          jit_compile=False)
        else:
            model = network
            mining_args = dict(strategy=config.strategy, alpha=config.alpha, seed=config.seed)
            model.compile(optimizer=optimizer, loss=losses.OnlineTripletLoss(**mining_args),
                          metrics=losses.triplet_metrics(**mining_args), jit_compile=False)
        optimizer.build(network.trainable_variables)
    return model, network, optimizer
