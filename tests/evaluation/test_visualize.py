"""The projector log opens as TensorBoard reads it; sprites and contact sheets put each
thumbnail where it belongs."""

import os

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins import projector

from facenet_tf.data import images
from facenet_tf.evaluation import visualize


def _thumbs(n, size, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_projector_log_holds_the_embeddings_labels_and_sprite(tmp_path):
    emb = np.random.RandomState(1).randn(5, 8).astype(np.float32)
    thumbs = _thumbs(5, 16)
    log_dir = str(tmp_path / "projector")
    visualize.write_projector(log_dir, emb, {"identity": list("aabbc"),
                                             "image": [f"{i}.png" for i in range(5)]}, thumbs)
    with open(os.path.join(log_dir, "projector_config.pbtxt")) as f:
        config = text_format.Parse(f.read(), projector.ProjectorConfig())
    entry = config.embeddings[0]
    # TensorBoard finds the tensor by this name in the log dir's latest checkpoint.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(log_dir))
    np.testing.assert_array_equal(reader.get_tensor(entry.tensor_name), emb)
    lines = open(os.path.join(log_dir, entry.metadata_path)).read().splitlines()
    assert lines == ["identity\timage"] + [f"{c}\t{i}.png" for i, c in enumerate("aabbc")]
    sheet = np.asarray(Image.open(os.path.join(log_dir, entry.sprite.image_path)))
    assert list(entry.sprite.single_image_dim) == [16, 16]
    # 5 thumbnails in rows of ceil(sqrt(5)) = 3: thumbnail 4 sits at row 1, column 1.
    assert sheet.shape == (2 * 16, 3 * 16, 3)
    np.testing.assert_array_equal(sheet[16:32, 16:32], thumbs[4])
    assert not sheet[16:32, 32:48].any()


def test_sprite_thumbnails_shrink_to_fit_the_projector_limit():
    assert visualize.sprite_thumbnail_size(100) == 64
    side = visualize.sprite_thumbnail_size(200_000)
    assert side * int(np.ceil(np.sqrt(200_000))) <= visualize.MAX_SPRITE_SIDE
    assert (side + 1) * int(np.ceil(np.sqrt(200_000))) > visualize.MAX_SPRITE_SIDE


def test_contact_sheet_has_one_row_per_cluster(tmp_path):
    rows = [("cluster 0", list(_thumbs(3, 64, 1))), ("cluster 1", list(_thumbs(15, 64, 2)))]
    path = visualize.contact_sheet(str(tmp_path / "sheet.png"), rows, thumbnail_size=64,
                                   per_row=12)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    assert sheet.shape[0] == 2 * (64 + 4)
    left = visualize.CONTACT_LABEL_WIDTH
    # Row 1, third thumbnail: x = left + 2 * (64 + 4).
    np.testing.assert_array_equal(sheet[68:68 + 64, left + 136:left + 136 + 64], rows[1][1][2])
    # Only 12 of cluster 1's 15 faces are drawn: the sheet is 12 slots wide, the last filled.
    assert sheet.shape[1] == left + 12 * 68
    np.testing.assert_array_equal(sheet[68:132, left + 11 * 68:left + 11 * 68 + 64],
                                  rows[1][1][11])
    # Row 0 has 3 faces: white after its third slot.
    assert not (sheet[0:64, left + 3 * 68:] != 255).any()


def test_thumbnail_keeps_the_aspect_ratio_on_black():
    wide = np.full((10, 40, 3), 200, np.uint8)
    t = images.thumbnail(wide, 16)
    assert t.shape == (16, 16, 3)
    assert (t[8, :] == 200).all() and (t[0, :] == 0).all()
