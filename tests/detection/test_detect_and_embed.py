"""Proof that detection, alignment and embedding compose into one SavedModel signature over
encoded image bytes of any size (the `detect_and_embed` the export will serve)."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facenet_tf.data import preprocess
from facenet_tf.detection import AlignConfig, FaceDetector, align_faces, main_face
from tests.conftest import make_tiny_embedding_model

MAX_FACES = 4


class DetectAndEmbed(tf.Module):
    def __init__(self, detector, model, config):
        super().__init__()
        self.detector, self.model, self.config = detector, model, config

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="encoded")])
    def detect_and_embed(self, encoded):
        image = preprocess.decode_image(encoded)
        found = self.detector.detect_batch(image[None])
        boxes = found["boxes"][:MAX_FACES]
        landmarks = found["landmarks"][:MAX_FACES]
        crops = align_faces(image, boxes, landmarks, self.config)
        embeddings = self.model(preprocess.standardize(crops, "fixed"), training=False)
        return {"boxes": boxes, "scores": found["scores"][:MAX_FACES], "landmarks": landmarks,
                "embeddings": embeddings}


def _png(pixels):
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.integration
def test_detect_and_embed_saves_and_serves_any_image_size(orl_dir, tmp_path):
    config = AlignConfig(image_size=32, method="similarity")
    detector = FaceDetector()
    module = DetectAndEmbed(detector, make_tiny_embedding_model((32, 32, 3)), config)
    path = str(tmp_path / "detect_and_embed")
    tf.saved_model.save(module, path,
                        signatures={"detect_and_embed": module.detect_and_embed})
    served = tf.saved_model.load(path).signatures["detect_and_embed"]

    face = np.asarray(Image.open(os.path.join(orl_dir, "s5", "2.pgm")).convert("RGB"))
    canvas = np.full((300, 420, 3), 90, np.uint8)
    canvas[150:262, 300:392] = face
    for image in (face, canvas, np.full((50, 60, 3), 128, np.uint8)):
        out = served(encoded=tf.constant(_png(image)))
        found = detector.detect([image])[0]
        assert out["boxes"].shape[0] == min(len(found), MAX_FACES)
        assert out["embeddings"].shape == (out["boxes"].shape[0], 8)
        if len(found):
            i = main_face(found, *image.shape[:2])
            np.testing.assert_allclose(out["boxes"][i], found.boxes[i], atol=1e-3)
            direct = module.model(preprocess.standardize(align_faces(
                image, found.boxes[i:i + 1], found.landmarks[i:i + 1], config), "fixed"))
            np.testing.assert_allclose(out["embeddings"][i], direct[0], atol=1e-4)
