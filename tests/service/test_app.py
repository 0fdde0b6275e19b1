"""The service's endpoints in-process (FastAPI's TestClient, lifespan included), on face crops
with a tiny model: answers against a plain loop over the enrolled faces, identify's JSON, every
endpoint's key check, and malformed requests each refused with a 4xx while the service keeps
answering. The detector path on real photos is one integration test."""

import base64
import io
import json
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facenet_tf.detection.detector import FaceDetector
from facenet_tf.inference import batch_embed
from facenet_tf.recognition import gallery as gallery_lib
from facenet_tf.service.app import create_app
from facenet_tf.service.config import ServiceConfig
from facenet_tf.service.recognizer import IDENTIFY, Job
from facenet_tf.service.uploads import ImageLimits, validate_photo
from tests.recognition._person_oracle import person_distance_by_loop
from tests.service.conftest import ADMIN, PEOPLE, THRESHOLD, USER, copy_gallery, read


@pytest.fixture(scope="module")
def service(world, tmp_path_factory):
    gallery = copy_gallery(world, tmp_path_factory.mktemp("app") / "g")
    config = ServiceConfig(gallery=gallery, key_file=world["key_file"], detect_faces=False,
                           max_wait_ms=1.0)
    with TestClient(create_app(config)) as client:
        yield client, gallery


def _oracle(world, probe_path, rule, threshold=THRESHOLD):
    """(identity or None, [(person, distance)] nearest first) by a plain loop over every
    enrolled face, each embedded on its own."""
    embed = world["embed"]
    q = embed(probe_path)
    faces = {person: np.array([embed(p) for p in paths])
             for person, paths in world["known"].items()}
    scores = sorted(((person, person_distance_by_loop(q, f, rule)) for person, f in faces.items()),
                    key=lambda s: s[1])
    return (scores[0][0] if scores[0][1] <= threshold else None), scores


def _as_multipart(path):
    return {"files": {"photo": (os.path.basename(path), read(path), "image/png")}}


def _as_raw(path):
    return {"content": read(path), "headers": {"Content-Type": "image/png"}}


def _as_json(path):
    return {"json": {"photo": base64.b64encode(read(path)).decode()}}


@pytest.mark.parametrize("encode", [_as_multipart, _as_raw, _as_json])
def test_identify_answers_as_a_loop_over_the_enrolled_faces(service, world, encode):
    client, _ = service
    for probe in [*world["probes"].values(), world["stranger"]]:
        kwargs = encode(probe)
        headers = {**USER, **kwargs.pop("headers", {})}
        response = client.post("/v1/identify?top_k=2", headers=headers, **kwargs)
        assert response.status_code == 200, response.text
        (face,) = response.json()["faces"]
        identity, scores = _oracle(world, probe, response.json()["rule"])
        assert face["identity"] == identity
        assert [c["identity"] for c in face["candidates"]] == [p for p, _ in scores[:2]]
        np.testing.assert_allclose([c["distance"] for c in face["candidates"]],
                                   [d for _, d in scores[:2]], atol=2e-6)
        assert face["distance"] == face["candidates"][0]["distance"]
        assert face["box"] == [0.0, 0.0, 32.0, 32.0]
    # A threshold under every distance: the nearest person is only a candidate.
    probe = world["probes"]["person_01"]
    response = client.post("/v1/identify?threshold=0.0000001", headers=USER,
                           **_as_multipart(probe))
    (face,) = response.json()["faces"]
    assert face["identity"] is None and face["candidates"][0]["identity"] == \
        _oracle(world, probe, response.json()["rule"])[1][0][0]


def test_identify_gives_the_identify_commands_json(service, world):
    client, gallery_path = service
    probe = world["probes"]["person_02"]
    got = client.post("/v1/identify", headers=USER, **_as_multipart(probe)).json()["faces"]
    gallery = gallery_lib.open_gallery(gallery_path)
    expected = gallery_lib.identify_photos(gallery, world["embedder"], None, [probe])["faces"]
    assert [dict(f, photo=os.path.basename(f["photo"])) for f in expected] == got


def test_verify_is_the_squared_distance_of_the_two_faces(service, world):
    client, _ = service
    a, b = world["known"]["person_00"][0], world["probes"]["person_00"]
    response = client.post("/v1/verify", headers=USER, files={
        "photo1": ("a.png", read(a)), "photo2": ("b.png", read(b))})
    assert response.status_code == 200, response.text
    expected = float(np.sum((world["embed"](a) - world["embed"](b)) ** 2))
    body = response.json()
    assert body["distance"] == pytest.approx(expected, abs=2e-6)
    assert body["same"] == (expected <= THRESHOLD) and body["threshold"] == THRESHOLD
    strict = client.post(f"/v1/verify?threshold={expected / 2}", headers=USER, json={
        "photo1": base64.b64encode(read(a)).decode(),
        "photo2": base64.b64encode(read(b)).decode()}).json()
    assert strict["same"] is False


def test_enroll_list_and_delete_change_the_gallery_on_disk(service, world):
    client, gallery_path = service
    before = client.get("/v1/people", headers=USER).json()
    assert before["people"] == {p: 2 for p in PEOPLE}
    response = client.post("/v1/enroll", headers=ADMIN, data={"name": "zoe"},
                           files={"photo": ("s.png", read(world["stranger"]))})
    assert response.status_code == 200, response.text
    assert response.json()["faces_of_person"] == 1
    response = client.post("/v1/enroll", headers=ADMIN, json={
        "name": "zoe", "photo": base64.b64encode(read(world["stranger"])).decode()})
    assert response.json()["faces_of_person"] == 2
    version = response.json()["gallery_version"]
    assert client.get("/v1/people", headers=USER).json() == {
        "people": {**before["people"], "zoe": 2}, "faces": 8, "gallery_version": version}
    on_disk = gallery_lib.open_gallery(gallery_path)
    assert on_disk.people() == {**before["people"], "zoe": 2} and on_disk.version == version
    (face,) = client.post("/v1/identify", headers={**USER, "Content-Type": "image/png"},
                          content=read(world["stranger"])).json()["faces"]
    assert face["identity"] == "zoe" and face["distance"] < 1e-6
    response = client.delete("/v1/people/zoe", headers=ADMIN)
    assert response.status_code == 200 and response.json()["faces_removed"] == 2
    assert gallery_lib.open_gallery(gallery_path).people() == before["people"]
    assert client.delete("/v1/people/zoe", headers=ADMIN).status_code == 404


def test_every_endpoint_wants_a_key_and_enroll_and_delete_an_admin_key(service, world):
    client, _ = service
    photo = read(world["probes"]["person_00"])
    calls = {
        "identify": lambda h: client.post("/v1/identify", headers=h,
                                          files={"photo": ("p.png", photo)}),
        "verify": lambda h: client.post("/v1/verify", headers=h, files={
            "photo1": ("p.png", photo), "photo2": ("q.png", photo)}),
        "people": lambda h: client.get("/v1/people", headers=h),
        "enroll": lambda h: client.post("/v1/enroll", headers=h, data={"name": "x"},
                                        files={"photo": ("p.png", photo)}),
        "delete": lambda h: client.delete("/v1/people/person_00", headers=h),
    }
    for name, call in calls.items():
        for headers in ({}, {"X-API-Key": "not-a-key-of-the-file"}, {"X-API-Key": ""}):
            response = call(headers)
            assert response.status_code == 401, (name, headers, response.text)
            assert response.headers["WWW-Authenticate"] == "APIKey"
        expected = 403 if name in ("enroll", "delete") else 200
        assert call(USER).status_code == expected, name
    assert client.get("/v1/people", headers=USER).json()["people"] == {p: 2 for p in PEOPLE}
    assert client.get("/healthz").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/identify", "/v1/verify", "/v1/enroll", "/v1/people",
            "/v1/people/{name}", "/healthz"} <= set(paths)
    assert set(paths["/v1/identify"]["post"]["requestBody"]["content"]) >= {
        "multipart/form-data", "application/json", "image/jpeg"}


def _png(width, height):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_half(seed=0):
    pixels = np.random.RandomState(seed).randint(0, 256, (64, 64, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    data = buf.getvalue()
    return data[:len(data) // 2]


def _tiff():
    buf = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buf, format="TIFF")
    return buf.getvalue()


def test_malformed_requests_get_a_4xx_and_the_service_keeps_serving(service, world):
    client, _ = service
    good = read(world["probes"]["person_01"])

    def identify(**kwargs):
        return client.post("/v1/identify", **{"headers": USER, **kwargs})

    cases = {
        "not an image": (identify(files={"photo": ("a.jpg", b"hello, not a photo")}), 422,
                         "photo: not an image"),
        "empty file": (identify(files={"photo": ("a.jpg", b"")}), 422, "empty"),
        "truncated JPEG": (identify(files={"photo": ("t.jpg", _jpeg_half())}), 422,
                           "truncated"),
        "50 MB body": (identify(content=b"\xff" * (50 << 20),
                                headers={**USER, "Content-Type": "image/jpeg"}), 413,
                       "Content Too Large"),
        "wrong content type": (identify(content=good, headers={**USER,
                                                                 "Content-Type": "text/plain"}),
                               415, "text/plain"),
        "no content type": (identify(content=good, headers=USER), 415, "missing"),
        "bad JSON": (identify(content=b'{"photo": ', headers={
            **USER, "Content-Type": "application/json"}), 400, "not valid JSON"),
        "JSON not an object": (identify(json=["photo"]), 400, "expected a JSON object"),
        "bad base64": (identify(json={"photo": "***"}), 400, "not valid base64"),
        "missing field": (identify(json={}), 400, "photo: missing"),
        "unknown field": (identify(json={"photo": "", "extra": 1}), 400, "unknown fields"),
        "text instead of a file": (identify(files={"photo": (None, b"abc")}), 400,
                                   "expected a file"),
        "too many pixels": (identify(files={"photo": ("big.png", _png(5000, 4000))}), 422,
                            "5000x4000"),
        "too small": (identify(files={"photo": ("s.png", _png(8, 40))}), 422, "at least 16"),
        "format not accepted": (identify(files={"photo": ("x.tif", _tiff())}), 422,
                                "TIFF images are not accepted"),
        "top_k too large": (client.post("/v1/identify?top_k=1000", headers=USER,
                                        files={"photo": ("p.png", good)}), 422, "top_k"),
        "negative threshold": (client.post("/v1/identify?threshold=-1", headers=USER,
                                           files={"photo": ("p.png", good)}), 422, ""),
        "verify with one photo": (client.post("/v1/verify", headers=USER,
                                              files={"photo1": ("p.png", good)}), 400,
                                  "photo2: missing"),
        "enroll without a name": (client.post("/v1/enroll", headers=ADMIN,
                                              files={"photo": ("p.png", good)}), 400,
                                  "name: missing"),
        "enroll a bad name": (client.post("/v1/enroll", headers=ADMIN, data={"name": " x/y"},
                                          files={"photo": ("p.png", good)}), 400,
                              "not accepted"),
        "unknown person": (client.delete("/v1/people/nobody", headers=ADMIN), 404,
                           "no person named 'nobody'"),
    }
    for name, (response, status, says) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert says in response.text, (name, response.text)
    assert identify(files={"photo": ("p.png", good)}).status_code == 200
    assert client.get("/v1/people", headers=USER).json()["people"] == {p: 2 for p in PEOPLE}


@pytest.mark.integration
def test_photos_with_several_faces_and_none_through_the_detector(world, tmp_path, lfw_dir):
    """Real photos through MTCNN: identify equals the identify command's faces, verify takes
    the best pair, enroll and verify refuse a photo without a face."""
    photo = os.path.join(lfw_dir, "images", "Colin_Powell", "Colin_Powell_0001.jpg")
    gallery = copy_gallery(world, tmp_path / "g")
    config = ServiceConfig(gallery=gallery, key_file=world["key_file"], max_wait_ms=1.0)
    # Two photos side by side: one photo with two faces.
    other = os.path.join(lfw_dir, "images", "Colin_Powell", "Colin_Powell_0002.jpg")
    pair = np.concatenate([np.asarray(Image.open(photo).convert("RGB")),
                           np.asarray(Image.open(other).convert("RGB"))], axis=1)
    pair_path = str(tmp_path / "pair.png")
    Image.fromarray(pair).save(pair_path)
    blank = _png(200, 200)
    with TestClient(create_app(config)) as client:
        got = client.post("/v1/identify", headers=USER,
                          files={"photo": ("pair.png", read(pair_path))}).json()["faces"]
        detector = FaceDetector()
        expected = gallery_lib.identify_photos(
            gallery_lib.open_gallery(gallery), world["embedder"], detector,
            [pair_path])["faces"]
        assert len(got) == len(expected) >= 2
        for g, e in zip(got, expected):
            assert (g["face"], g["identity"]) == (e["face"], e["identity"])
            np.testing.assert_allclose(g["box"], e["box"], atol=0.11)
            np.testing.assert_allclose(g["distance"], e["distance"], atol=1e-5)
        response = client.post("/v1/verify", headers=USER, files={
            "photo1": ("pair.png", read(pair_path)), "photo2": ("one.jpg", read(photo))})
        body = response.json()
        tables = [batch_embed.embed_photo_faces(world["embedder"], detector, [p])
                  for p in (pair_path, photo)]
        pairs = [(float(np.sum((a.astype(np.float64) - b) ** 2)), int(i), int(k))
                 for a, i in zip(tables[0].embeddings, tables[0].face_index)
                 for b, k in zip(tables[1].embeddings, tables[1].face_index)]
        best = min(pairs)
        assert (body["faces_in_photo1"], body["faces_in_photo2"]) == \
            (len(tables[0].embeddings), len(tables[1].embeddings))
        assert (body["face1"]["face"], body["face2"]["face"]) == best[1:]
        assert body["distance"] == pytest.approx(best[0], abs=1e-5)
        for endpoint, files, data in (
                ("/v1/verify", {"photo1": ("p.jpg", read(photo)), "photo2": ("b.png", blank)},
                 None),
                ("/v1/enroll", {"photo": ("b.png", blank)}, {"name": "nobody"})):
            response = client.post(endpoint, headers=ADMIN, files=files, data=data)
            assert response.status_code == 422 and "no face found" in response.text
        response = client.post("/v1/identify", headers=USER, files={"photo": ("b.png", blank)})
        assert response.status_code == 200 and response.json()["faces"] == []
        # One batch of a photo without a face and one with faces: each gets its own.
        recognizer = client.app.state.recognizer
        jobs = [Job(IDENTIFY, (validate_photo(data, "photo", ImageLimits()),))
                for data in (blank, read(pair_path))]
        empty, full = recognizer.run_batch(jobs)
        assert empty["faces"] == [] and [f["identity"] for f in full["faces"]] == \
            [f["identity"] for f in got]
        response = client.post("/v1/enroll", headers=ADMIN, data={"name": "colin"},
                               files={"photo": ("pair.png", read(pair_path))})
        assert response.status_code == 200, response.text
        assert response.json()["faces_in_photo"] == len(got)
        assert response.json()["note"].startswith(f"{len(got)} faces; enrolled the main one")
    assert json.loads(json.dumps(got))  # plain JSON types
