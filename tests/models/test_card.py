"""model_card: a hand-computed case, and the paper's parameter and FLOP figures."""

import keras
import pytest

from facenet_tf.models import build_model, model_card

# The paper's figures (section 3.3, Tables 1 and 2; NN4's parameters are NN2's).
PAPER = {"nn1": (140e6, 1.6e9), "nn2": (7.5e6, 1.6e9), "nn4": (None, 285e6),
         "nns1": (26e6, 220e6), "nns2": (4.3e6, 20e6)}


def test_counts_a_hand_computed_model():
    inputs = keras.Input((8, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)             # 8*6 * 3*3*2*4
    x = keras.layers.Conv2D(5, (1, 3), strides=2, padding="valid")(x)  # 4*2 * 1*3*4*5
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)  # 4*2*3*3*5*2
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(7)(x)                                # 80 * 7
    card = model_card(keras.Model(inputs, outputs))
    assert card["flops"] == 8 * 6 * 3 * 3 * 2 * 4 + 4 * 2 * 3 * 4 * 5 + 4 * 2 * 9 * 5 * 2 + 80 * 7
    params = (3 * 3 * 2 * 4 + 4) + (3 * 4 * 5 + 5) + 4 * 5 + (9 * 5 * 2 + 10) + (80 * 7 + 7)
    assert card["params"] == params
    assert card["trainable_params"] == params - 2 * 5   # moving mean and variance


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_models_match_the_papers_figures(name):
    card = model_card(build_model(name))
    params, flops = PAPER[name]
    if params is not None:
        assert abs(card["params"] / params - 1) <= 0.25, card
    assert abs(card["flops"] / flops - 1) <= 0.25, card


def test_nn3_is_nn2_at_a_smaller_input():
    nn2, nn3 = model_card(build_model("nn2")), model_card(build_model("nn3"))
    assert nn3["params"] == nn2["params"]
    assert nn3["flops"] < nn2["flops"]


def test_inception_resnet_v1_matches_the_profiled_frozen_graph():
    # TF's profiler counts 2.84 GFLOP (a multiply-add is 2 FLOPs) for the 512-D FaceNet graph.
    card = model_card(build_model("inception_resnet_v1", embedding_dim=512))
    assert abs(2 * card["flops"] / 2.84e9 - 1) <= 0.02, card
