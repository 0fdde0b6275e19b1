"""The public Python API: `import facenet_tf as fn` gives every documented name, lazily."""

import subprocess
import sys

import numpy as np
import pytest

import facenet_tf as fn
from tests.conftest import REPO_ROOT, make_image_folder, make_tiny_embedding_model
from tests.recognition._person_oracle import person_distance_by_loop


@pytest.mark.parametrize("name", fn.__all__)
def test_every_public_name_resolves_to_a_documented_object(name):
    value = getattr(fn, name)
    assert value is not None
    if callable(value):
        assert (value.__doc__ or "").strip(), f"facenet_tf.{name} has no docstring"
    assert name in dir(fn)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        fn.no_such_thing  # noqa: B018


def test_import_is_light_and_names_load_on_first_use():
    code = ("import sys, facenet_tf as fn; assert 'tensorflow' not in sys.modules; "
            "fn.select_triplets; assert 'tensorflow' in sys.modules; "
            "assert 'apache_beam' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_two_people_enrolled_and_faces_named_through_the_api_as_a_loop_names_them(tmp_path):
    folder = make_image_folder(tmp_path / "faces", num_identities=3, images_per_identity=4,
                               size=(32, 32))
    embedder = fn.network_embedder(make_tiny_embedding_model((32, 32, 3)))
    people = fn.people_in_folder(folder)
    known = {name: people[name][:2] for name in ("person_00", "person_01")}
    probes = [path for name in people for path in people[name][2:]]  # with a stranger's
    gallery = fn.open_gallery(str(tmp_path / "g"), embedder, create=True)
    gallery.enroll_photos(embedder, None, known)  # no detector: each photo is a face crop
    assert gallery.people() == {"person_00": 2, "person_01": 2}

    def embed(path):
        with open(path, "rb") as f:
            return embedder.embed_encoded([f.read()])[0].astype(np.float64)

    enrolled = {name: np.stack([embed(p) for p in paths]) for name, paths in known.items()}
    rule = gallery.calibration.rule
    expected = []
    for path in probes:
        q = embed(path)
        expected.append(sorted((person_distance_by_loop(q, faces, rule), name)
                               for name, faces in enrolled.items()))
    nearest = sorted(e[0][0] for e in expected)
    threshold = (nearest[2] + nearest[3]) / 2  # some faces named, some unknown
    found = fn.identify_photos(gallery, embedder, None, probes, top_k=2, threshold=threshold)
    assert found["skipped"] == [] and len(found["faces"]) == len(probes)
    for path, face, scores in zip(probes, found["faces"], expected):
        assert face["photo"] == path
        assert face["candidates"] == [{"identity": n, "distance": pytest.approx(d, abs=1e-4)}
                                      for d, n in scores]
        assert face["identity"] == (scores[0][1] if scores[0][0] <= threshold else None)
    assert sum(f["identity"] is None for f in found["faces"]) == 3
    # The index for large galleries finds the nearest enrolled face as a loop over faces does.
    faces = np.stack([embed(f["photo"]) for f in gallery.faces()])
    np.testing.assert_allclose(gallery.embeddings, faces, atol=1e-5)
    queries = np.stack([embed(p) for p in probes]).astype(np.float32)
    for kind in ("flat", "hnsw"):
        _, rows = fn.FaceIndex.build(gallery.embeddings, kind).search(queries, 1)
        for q, row in zip(queries, rows[:, 0]):
            assert row == int(np.argmin([np.sum((q - f) ** 2) for f in faces]))
    with pytest.raises(fn.GalleryError, match="model"):
        fn.open_gallery(str(tmp_path / "g"),
                        fn.network_embedder(make_tiny_embedding_model((32, 32, 3), seed=1)))
