"""experiments.image_quality's pieces on a tiny model and folder (the recipe itself runs the
pretrained model on lfw_dev's 3,000 held-out pairs, tens of minutes): one row per setting,
equal to evaluate_pairs_file with that degradation, reused from its cache by the same model
only, and the table and pictures written."""

import os

import pytest

from experiments import image_quality
from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data import preprocess as pp
from facenet_tf.evaluation import protocols
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.serving.saved_model import export_saved_model
from tests.conftest import make_image_folder, make_tiny_embedding_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    faces = make_image_folder(str(root / "faces"), num_identities=6, images_per_identity=3,
                              size=(40, 40), seed=4)
    pairs_path = str(root / "pairs.txt")
    pairs = pairs_lib.generate_pairs(faces, num_folds=2, pairs_per_fold=6, seed=0)
    pairs_lib.write_pairs(pairs_path, pairs, num_folds=2)
    models = [load_embedder(export_saved_model(make_tiny_embedding_model(seed=s),
                                               str(root / f"model{s}"),
                                               pp.PreprocessConfig((32, 32))))
              for s in (0, 1)]
    protocol = {"pairs_path": pairs_path, "heldout_images_root": faces,
                "num_pairs": len(pairs), "num_matched_pairs": sum(p.issame for p in pairs),
                "params": {"num_folds": 2}, "heldout_identities": sorted(os.listdir(faces))}
    return models, protocol, root


def test_rows_table_and_plot(tiny, capsys):
    (model, other), protocol, root = tiny
    wanted = image_quality.settings(["20"], ["16"])
    assert [str(d) for d in wanted] == ["None", "jpeg:20", "pixels:16"]
    cache = str(root / "cache")
    os.makedirs(cache)
    rows = [image_quality.run_setting(model, d, protocol, cache, batch_size=8) for d in wanted]
    for degrade, row in zip(wanted, rows):
        direct = protocols.evaluate_pairs_file(
            model.with_preprocess(protocols.override_preprocess(model.preprocess,
                                                                degrade=degrade)),
            protocol["pairs_path"], protocol["heldout_images_root"])
        assert row["roc_auc"] == pytest.approx(direct["roc_auc"])
        assert row["val_at_far_1e-3"] == pytest.approx(direct["val_at_far_1e-3"])
        assert row["preprocess"].get("degrade") == (str(degrade) if degrade else None)
    # The same model reuses the cached rows; another model does not.
    capsys.readouterr()
    image_quality.run_setting(model, wanted[1], protocol, cache, batch_size=8)
    assert "jpeg:20: done before" in capsys.readouterr().out
    again = image_quality.run_setting(other, wanted[1], protocol, cache, batch_size=8)
    assert again["model_fingerprint"] == other.fingerprint != model.fingerprint

    report = {"model": "tiny", "protocol": protocol, "rows": rows,
              "paper": {"jpeg:20": 0.814}, "wall_minutes": 0.1, "command": "python -m ...",
              "run_info": {"git_revision": "abc"}}
    text = image_quality.markdown(report)
    assert "| JPEG quality 20 |" in text and "| 16x16 pixels |" in text and "| none |" in text
    assert "81.4%" in text
    for png in (image_quality.plot(report, str(root / "quality.png")),
                image_quality.faces_sheet(protocol, model.preprocess, wanted,
                                          str(root / "faces.png"))):
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="'jpeg:ten'"):
        image_quality.settings(["ten"], [])
    with pytest.raises(ValueError, match="pixels:0: out of range"):
        image_quality.settings([], ["0"])
