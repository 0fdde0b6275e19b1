"""evaluate_pairs_file / identity-folder evaluation / embed / compare / cluster on tiny data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facenet_tf.data import pairs as pairs_lib
from facenet_tf.data import preprocess as pp
from facenet_tf.data.degrade import Degradation
from facenet_tf.evaluation import protocols, verification
from facenet_tf.inference import batch_embed
from facenet_tf.inference.embedders import load_embedder
from facenet_tf.recognition import workflows
from facenet_tf.serving import saved_model
from tests.conftest import make_image_folder, make_tiny_embedding_model, pillow_jpeg

CFG = pp.PreprocessConfig(image_size=(32, 32), crop_fraction=0.9)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    faces = make_image_folder(str(root / "faces"), num_identities=8, images_per_identity=4,
                              size=(40, 36), seed=1)
    model = make_tiny_embedding_model()
    path = saved_model.export_saved_model(model, str(root / "model"), CFG, threshold=0.5)
    return model, path, faces, root


def _oracle_embedding(model, path, cfg, flip=False):
    img = tf.io.decode_image(open(path, "rb").read(), channels=3)
    x = pp.preprocess_image(img, cfg)[None]
    e = model(x).numpy()[0]
    if flip:
        e = e + model(x[:, :, ::-1, :]).numpy()[0]
        e = e / np.linalg.norm(e)
    return e


def test_evaluate_model_matches_direct_computation(setup, tmp_path):
    model, path, faces, _ = setup
    pairs = pairs_lib.generate_pairs(faces, num_folds=2, pairs_per_fold=8, seed=0)
    pf = str(tmp_path / "pairs.txt")
    pairs_lib.write_pairs(pf, pairs, num_folds=2)
    out_json = str(tmp_path / "m.json")
    r = protocols.evaluate_pairs_file(load_embedder(path), pf, faces,
                                      plots_dir=str(tmp_path / "plots"), output_json=out_json, flip=True)
    d = []
    for p in pairs:
        a, b = pairs_lib.pair_image_paths(faces, p)
        ea, eb = _oracle_embedding(model, a, CFG, True), _oracle_embedding(model, b, CFG, True)
        d.append(float(np.sum((ea - eb) ** 2)))
    expect = verification.evaluate_pairs(np.array(d), [p.issame for p in pairs],
                                         folds=np.repeat([0, 1], 8))
    assert r["accuracy_mean"] == pytest.approx(expect["accuracy_mean"])
    assert r["roc_auc"] == pytest.approx(expect["roc_auc"], abs=1e-6)
    assert r["num_pairs"] == 16 and r["folds"] == "from file"
    assert r["num_images"] == len({x for p in pairs for x in pairs_lib.pair_image_paths(faces, p)})
    for key in ("accuracy_std", "val_at_far_1e-3", "val_at_far_1e-2", "eer", "threshold_mean",
                "int8_accuracy_mean"):
        assert key in r
    assert json.load(open(out_json))["accuracy_mean"] == r["accuracy_mean"]
    for name in ("roc.png", "distance_histogram.png"):
        with open(tmp_path / "plots" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_degrades_every_face_before_embedding(setup, tmp_path):
    """--degrade jpeg:Q on pre-cropped files: each file centre-cropped and resized as the model
    takes it, saved by Pillow as a JPEG at quality Q, read back, standardised, embedded."""
    model, path, faces, _ = setup
    pairs = pairs_lib.generate_pairs(faces, num_folds=2, pairs_per_fold=8, seed=3)
    pf = str(tmp_path / "pairs.txt")
    pairs_lib.write_pairs(pf, pairs, num_folds=2)
    degraded = protocols.override_preprocess(CFG, degrade=Degradation.parse("jpeg:5"))
    r = protocols.evaluate_pairs_file(load_embedder(path).with_preprocess(degraded), pf, faces)

    def oracle(image_path):
        image = np.asarray(Image.open(image_path).convert("RGB"))
        face = pp.center_crop_and_resize(image, CFG).numpy()
        return model(((pillow_jpeg(face, 5) - 127.5) / 128.0)[None]).numpy()[0]

    d = [float(np.sum((oracle(a) - oracle(b)) ** 2))
         for a, b in (pairs_lib.pair_image_paths(faces, p) for p in pairs)]
    expect = verification.evaluate_pairs(np.array(d), [p.issame for p in pairs],
                                         folds=np.repeat([0, 1], 8))
    # The thresholds are distances of the pairs: they check the distances themselves.
    for key in ("fold_thresholds", "val_at_far_1e-3_threshold", "accuracy_mean", "roc_auc"):
        assert r[key] == pytest.approx(expect[key], abs=1e-5), key
    assert r["preprocess"]["degrade"] == "jpeg:5"
    plain = protocols.evaluate_pairs_file(load_embedder(path), pf, faces)
    assert plain["fold_thresholds"] != pytest.approx(r["fold_thresholds"], abs=1e-3)


def test_aligned_crops_are_degraded_at_the_model_input_size(setup):
    """The --align path (embed_faces): crops resized to the model's input, then degraded."""
    model, path, _, _ = setup
    crops = np.random.RandomState(0).randint(0, 256, (3, 48, 48, 3)).astype(np.uint8)
    whole = pp.PreprocessConfig((32, 32))  # embed_faces takes each crop whole
    for spec in ("jpeg:30", "pixels:12"):
        degrade = Degradation.parse(spec)
        embedder = load_embedder(path).with_preprocess(
            protocols.override_preprocess(CFG, degrade=degrade))
        got = embedder.embed_faces(crops)
        faces = [pp.center_crop_and_resize(c, whole).numpy() for c in crops]
        if degrade.kind == "jpeg":
            faces = [pillow_jpeg(f, 30) for f in faces]
        else:  # tested against its plain-loop oracle in tests/data/test_degrade.py
            faces = [degrade.apply(f).numpy() for f in faces]
        expected = model((np.stack(faces) - 127.5) / 128.0).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_missing_images_listed_or_skipped(setup, tmp_path):
    _, path, faces, _ = setup
    pf = str(tmp_path / "p.txt")
    good = [pairs_lib.Pair("person_00", 1, "person_00", 2, True),
            pairs_lib.Pair("person_01", 1, "person_02", 1, False),
            pairs_lib.Pair("person_03", 1, "person_03", 3, True),
            pairs_lib.Pair("person_04", 2, "person_05", 1, False)]
    bad = [pairs_lib.Pair("nobody", 1, "nobody", 2, True),
           pairs_lib.Pair("person_01", 9, "person_02", 1, False)]
    pairs_lib.write_pairs(pf, good + bad)
    with pytest.raises(FileNotFoundError) as e:
        protocols.evaluate_pairs_file(load_embedder(path), pf, faces, num_folds=2)
    assert "3 images" in str(e.value) and "nobody" in str(e.value)
    r = protocols.evaluate_pairs_file(load_embedder(path), pf, faces, skip_missing=True,
                                      num_folds=2)
    assert r["num_pairs"] == 4 and r["num_skipped_pairs"] == 2 and r["num_missing_images"] == 3


def test_pgm_folder_and_preprocess_override(setup, tmp_path):
    model, path, _, _ = setup
    rng = np.random.RandomState(0)
    root = tmp_path / "orl"
    for s in range(1, 5):
        (root / f"s{s}").mkdir(parents=True)
        base = rng.randint(0, 256, (28, 23))
        for i in range(1, 4):
            px = np.clip(base + rng.randint(-10, 11, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(px, "L").save(root / f"s{s}" / f"{i}.pgm")
    pairs = pairs_lib.generate_pairs(str(root), num_folds=2, pairs_per_fold=4, seed=1)
    pf = str(tmp_path / "orl_pairs.txt")
    pairs_lib.write_pairs(pf, pairs, num_folds=2)
    other = pp.PreprocessConfig(image_size=(32, 32), crop_fraction=0.6, standardization="prewhiten")
    r = protocols.evaluate_pairs_file(load_embedder(path, other), pf, str(root))
    assert r["preprocess"] == other.to_dict()
    p = pairs[0]
    a, b = pairs_lib.pair_image_paths(str(root), p)
    grey = lambda f: np.repeat(np.array(Image.open(f))[..., None], 3, -1)
    ea = model(pp.preprocess_image(grey(a), other)[None]).numpy()[0]
    eb = model(pp.preprocess_image(grey(b), other)[None]).numpy()[0]
    embedder = load_embedder(path).with_preprocess(other)
    got = batch_embed.embed_files(embedder, [a, b])
    np.testing.assert_allclose(got, np.stack([ea, eb]), atol=1e-5)


def test_undecodable_image_is_named_with_the_reason(setup):
    from facenet_tf.data.images import BadImageError
    _, path, faces, _ = setup
    embedder = load_embedder(path)
    good = open(os.path.join(faces, "person_00", "img_000.png"), "rb").read()
    with pytest.raises(BadImageError) as e:
        batch_embed.embed_encoded_images(embedder, [good, b"\x89PNG not really"],
                                                names=["good.png", "broken.png"])
    assert str(e.value).startswith("broken.png: cannot decode (Unknown image file format")
    assert "Graph execution" not in str(e.value)


def test_identity_folder_embed_compare_cluster(setup, tmp_path):
    model, path, faces, _ = setup
    embedder = load_embedder(path)
    r = protocols.evaluate_identity_folder(embedder, faces)
    for key in ("precision_at_1", "map_at_r", "r_precision", "nmi", "ami"):
        assert 0.0 <= r[key] <= 1.0
    assert r["num_images"] == 32 and r["cluster_threshold"] == 0.5

    arrays = workflows.embed_folder(embedder, faces)
    ids = list(arrays["image_ids"])
    assert ids[0] == os.path.join("person_00", "img_000.png") and len(ids) == 32
    np.testing.assert_allclose(arrays["embeddings"][0],
                               _oracle_embedding(model, os.path.join(faces, ids[0]), CFG),
                               atol=1e-5)
    out = str(tmp_path / "e.npz")
    workflows.write_npz(out, arrays, embedder.fingerprint)
    assert str(np.load(out)["model_fingerprint"]) == embedder.fingerprint

    a, b = (os.path.join(faces, ids[0]), os.path.join(faces, ids[5]))
    c = workflows.verify(embedder, a, b)
    expect = float(np.sum((_oracle_embedding(model, a, CFG) - _oracle_embedding(model, b, CFG)) ** 2))
    assert c["distance"] == pytest.approx(expect, abs=1e-5)
    assert c["same"] == (expect <= 0.5)

    listing = workflows.cluster_folder(embedder, faces, threshold=4.1)  # above any distance
    assert len(listing["clusters"]) == 1 and len(listing["clusters"][0]["images"]) == 32
    listing = workflows.cluster_folder(embedder, faces, threshold=0.0)
    # 32 singletons vs 8 identities of 4: MI = H(T) = ln 8, H(P) = ln 32,
    # NMI = 2 ln 8 / (ln 8 + ln 32) = 6 / 8.
    assert len(listing["clusters"]) == 32 and listing["nmi"] == pytest.approx(0.75)


@pytest.mark.integration
def test_evaluate_cli(setup, tmp_path):
    _, path, faces, _ = setup
    pf = str(tmp_path / "p.txt")
    pairs_lib.write_pairs(pf, pairs_lib.generate_pairs(faces, num_folds=2, pairs_per_fold=4),
                          num_folds=2)
    out = str(tmp_path / "r.json")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    command = [sys.executable, "-m", "facenet_tf.evaluate", "--model", path, "--pairs", pf,
               "--images", faces, "--output_json", out, "--crop_fraction", "0.7"]
    subprocess.run(command + ["--degrade", "pixels:16"], check=True, capture_output=True,
                   timeout=180, cwd=repo)
    r = json.load(open(out))
    assert r["num_pairs"] == 8 and r["preprocess"]["crop_fraction"] == 0.7
    assert r["preprocess"]["degrade"] == "pixels:16"
    bad = subprocess.run(command + ["--degrade", "jpeg:0"], capture_output=True, text=True,
                         timeout=180, cwd=repo)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == (
        "evaluate.py: error: degradation jpeg:0: out of range (JPEG quality Q, 1-100)")
    assert "Traceback" not in bad.stderr


def test_identity_folder_projector_log_lists_every_face(setup, tmp_path):
    _, path, faces, _ = setup
    log_dir = str(tmp_path / "projector")
    r = protocols.evaluate_identity_folder(load_embedder(path), faces, projector_dir=log_dir)
    lines = open(r["projector"]["metadata"]).read().splitlines()
    assert lines[0] == "identity\tcluster\timage"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == r["num_images"] == 32
    for identity, _, image in rows:
        assert image.split(os.sep)[0] == identity
        assert os.path.isfile(os.path.join(faces, image))
    assert os.path.isfile(r["projector"]["sprite"])
