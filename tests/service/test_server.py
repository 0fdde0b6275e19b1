"""The service as a real uvicorn process on 127.0.0.1 (python -m facenet_tf.serve, tiny model,
face crops): oversized and broken uploads over real sockets, a few seconds of concurrent load
with no error and shared model calls, enrolments racing identifications with every answer
consistent with one gallery version, and kill -9 in the middle of an enrolment. Every loop is
bounded in time. The server publishes each gallery change FACENET_TF_GALLERY_PUBLISH_DELAY_S
after writing its data (the gallery's test hook), so that a change is caught half-done."""

import concurrent.futures
import http.client
import json
import os
import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient

from facenet_tf.recognition import gallery as gallery_lib
from facenet_tf.service.app import create_app
from facenet_tf.service.config import ServiceConfig
from facenet_tf.service.loadtest import run_load
from facenet_tf.service.process import ServiceProcess
from tests.conftest import REPO_ROOT
from tests.service.conftest import ADMIN, PEOPLE, USER, copy_gallery, read

PUBLISH_DELAY_S = 1.0
LOAD_S = 3.0


def _start(world, gallery, delay_s: float):
    env = {"PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3", gallery_lib.PUBLISH_DELAY_ENV: str(delay_s)}
    return ServiceProcess(["--gallery", gallery, "--key_file", world["key_file"],
                           "--nodetect_faces", "--max_wait_ms", "5"], env=env).start()


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    gallery = copy_gallery(world, tmp_path_factory.mktemp("server") / "g")
    process = _start(world, gallery, PUBLISH_DELAY_S)
    yield process, gallery
    process.stop()


def _call(server, method, path, body=None, headers=None, timeout=60):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _multipart(fields: dict) -> tuple:
    """(body, headers) of a multipart/form-data request: {name: str or (filename, bytes)}."""
    boundary = "serve-test-boundary"
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{value[0]}"\r\n'
                    "Content-Type: application/octet-stream")
            data = value[1]
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"', value.encode()
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _identify(server, path, top_k=3):
    return _call(server, "POST", f"/v1/identify?top_k={top_k}", read(path),
                 {**USER, "Content-Type": "image/png"})


def _enroll(server, name, path):
    body, headers = _multipart({"name": name, "photo": ("p.png", read(path))})
    return _call(server, "POST", "/v1/enroll", body, {**ADMIN, **headers})


def test_oversized_and_broken_uploads_over_real_sockets(server, world):
    process, _ = server
    good = read(world["probes"]["person_00"])
    conn = http.client.HTTPConnection(process.host, process.port, timeout=60)
    # 50 MB announced by Content-Length: 413 at once; the connection then serves again.
    conn.request("POST", "/v1/identify", body=b"\0" * (50 << 20),
                 headers={**USER, "Content-Type": "image/jpeg"})
    response = conn.getresponse()
    assert response.status == 413 and b"Content Too Large" in response.read()
    # 50 MB in chunks (no Content-Length): cut off at the limit.
    conn.request("POST", "/v1/identify", body=iter([b"\0" * (1 << 20)] * 50),
                 headers={**USER, "Content-Type": "image/jpeg"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and b"Content Too Large" in response.read()
    conn.request("POST", "/v1/identify", body=good, headers={**USER,
                                                            "Content-Type": "image/png"})
    response = conn.getresponse()
    assert response.status == 200 and len(json.loads(response.read())["faces"]) == 1
    conn.close()
    # A client that announces 1 MB, sends 10 bytes and goes away.
    with socket.create_connection((process.host, process.port), timeout=10) as s:
        s.sendall(b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"X-API-Key: " + USER["X-API-Key"].encode() + b"\r\n"
                  b"Content-Length: 1000000\r\n\r\n0123456789")
    # Not HTTP at all.
    with socket.create_connection((process.host, process.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    for name, status in (("not an image", 422), ("truncated", 422)):
        data = b"GIF89a nothing more" if name == "truncated" else b"plain text"
        assert _call(process, "POST", "/v1/identify", data,
                     {**USER, "Content-Type": "image/gif"})[0] == status
    assert _call(process, "GET", "/healthz")[0] == 200
    assert _identify(process, world["probes"]["person_01"])[0] == 200


def test_a_few_seconds_of_concurrent_load_give_no_error_and_share_model_calls(server, world):
    process, _ = server
    before = _call(process, "GET", "/healthz")[1]
    requests = [("POST", "/v1/identify", read(p), {**USER, "Content-Type": "image/png"})
                for p in world["probes"].values()]
    result = run_load(process.host, process.port, requests, clients=4, duration_s=LOAD_S,
                      server_pid=process.pid)
    after = _call(process, "GET", "/healthz")[1]
    assert result.error_count == 0, result.errors
    assert result.requests > 4 and result.statuses == {200: result.requests}
    assert result.rss_kib, "no memory samples of the server"
    batches = after["batches"] - before["batches"]
    assert after["requests_batched"] - before["requests_batched"] == result.requests
    assert batches < result.requests and after["largest_batch"] > 1  # calls were shared


def test_enrolments_racing_identifications_stay_consistent(server, world, tmp_path):
    """Enrol four new people one by one while three clients identify their photos: every
    answer must be that of one whole gallery version (a person is named exactly when the
    answer's version is at or after the one that enrolled them), versions never go back
    for a client, and the gallery on disk ends as the service says."""
    process, gallery_path = server
    newcomers = {f"new_{i}": world["stranger"] if i == 0 else world["known"][PEOPLE[i - 1]][0]
                 for i in range(4)}
    enrolled_at = {}
    stop = threading.Event()
    answers = []

    def identify_loop(name, path):
        last = -1
        while not stop.is_set():
            status, body = _identify(process, path, top_k=10)
            assert status == 200, body
            assert body["gallery_version"] >= last
            last = body["gallery_version"]
            answers.append((name, body))

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        loops = [pool.submit(identify_loop, n, p) for n, p in list(newcomers.items())[:3]]
        deadline = time.monotonic() + 60
        for name, path in newcomers.items():
            status, body = _enroll(process, name, path)
            assert status == 200, body
            enrolled_at[name] = body["gallery_version"]
            assert time.monotonic() < deadline
        stop.set()
        for loop in loops:
            loop.result(timeout=60)
    assert len(answers) > 10
    for name, body in answers:
        (face,) = body["faces"]
        v = body["gallery_version"]
        present = {n for n, at in enrolled_at.items() if at <= v}
        listed = {c["identity"] for c in face["candidates"]}
        assert listed == set(PEOPLE) | present, (v, listed)
        if name in present:
            assert face["identity"] == name and face["distance"] < 1e-6
    status, people = _call(process, "GET", "/v1/people", headers=USER)
    on_disk = gallery_lib.open_gallery(gallery_path)
    assert people["people"] == on_disk.people() == {**{p: 2 for p in PEOPLE},
                                                    **{n: 1 for n in newcomers}}
    assert people["gallery_version"] == on_disk.version == max(enrolled_at.values())


def _unlisted_segments(gallery_path):
    listed = set(json.load(open(os.path.join(gallery_path, gallery_lib.POINTER)))["segments"])
    return {n for n in os.listdir(gallery_path) if n.startswith("segment-") and ".tmp-" not in n
            and n not in listed}


def test_kill_9_during_an_enrolment_leaves_the_person_whole_or_absent(server, world):
    """Runs last in this module: it kills the module's server. An acknowledged enrolment
    survives whole; the one in flight when the process dies (its data written, the gallery
    not yet switched to it) is absent after a restart, and the restarted service enrols
    again normally and clears what the dead one left."""
    process, gallery_path = server
    assert _enroll(process, "ann", world["probes"]["person_00"])[0] == 200
    assert _enroll(process, "ann", world["probes"]["person_01"])[0] == 200
    before = gallery_lib.open_gallery(gallery_path)
    in_flight = concurrent.futures.ThreadPoolExecutor(1).submit(
        _enroll, process, "bob", world["probes"]["person_02"])
    deadline = time.monotonic() + 30
    while not _unlisted_segments(gallery_path):  # bob's data is on disk, not yet published
        assert time.monotonic() < deadline and not in_flight.done()
        time.sleep(0.01)
    process.kill()
    with pytest.raises((OSError, http.client.HTTPException)):
        in_flight.result(timeout=30)
    after = gallery_lib.open_gallery(gallery_path)
    assert after.version == before.version and after.people() == before.people()
    assert after.people()["ann"] == 2 and "bob" not in after.people()
    # The service started again on the gallery (in this process: the same app and code,
    # without a second TensorFlow start-up).
    config = ServiceConfig(gallery=gallery_path, key_file=world["key_file"],
                           detect_faces=False)
    with TestClient(create_app(config)) as restarted:
        assert restarted.get("/v1/people", headers=USER).json()["people"] == before.people()
        (face,) = restarted.post("/v1/identify", headers={**USER, "Content-Type": "image/png"},
                                 content=read(world["probes"]["person_02"])).json()["faces"]
        assert face["identity"] != "bob"
        response = restarted.post("/v1/enroll", headers=ADMIN, data={"name": "bob"}, files={
            "photo": ("p.png", read(world["probes"]["person_02"]))})
        assert response.status_code == 200, response.text
        assert not _unlisted_segments(gallery_path)  # the dead write's file is gone
    assert gallery_lib.open_gallery(gallery_path).people()["bob"] == 1
