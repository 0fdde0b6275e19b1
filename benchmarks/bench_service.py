"""The HTTP service under load (python -m facenet_tf.serve on uvicorn, 127.0.0.1): 8 concurrent
clients for RUN_S seconds (requests/s, p50 and p99 latency, errors, the server's resident
memory); then, in alternating rounds so that the shared machine's load drifts reach all alike,
requests/s with 1 client and with 8, and with 8 against a second server whose micro-batcher is
off (--max_batch 1).

The gallery: the pretrained model, ENROLLED people of lfw_dev that have at least three photos
(seeded choice), each enrolled with two photos by `python -m facenet_tf.enroll`. The queries:
their other photos and as many photos of people with one photo (strangers), LFW 250x250
JPEGs, sent as raw image/jpeg bodies; every client goes through them in turn (closed loop:
each client sends its next request when the answer to the last has come). Each server is
first warmed by WARM_UP_S of 8 clients (not measured). Latency is the client's, end to end
on loopback (facenet_tf.service.loadtest: one keep-alive http.client connection a client).
Memory: VmRSS of the server from /proc every second; "growth" is the last sample minus the
one at a quarter of the run.

    nice python -m benchmarks.bench_service [--quick]     # --quick: 10 s, rounds of 5 s

FACENET_TF_BENCH_SERVICE_WORK=DIR keeps the enrolled gallery in DIR for the next run.

The server's CPU time per request (from /proc) is reported beside requests/s: on a shared
machine the wall-clock rates depend on the share of the cores the server gets, its CPU time
per request much less.

The machine's 2 cores are shared: run it with `nice`; the notes give the load average.
"""

import concurrent.futures
import contextlib
import glob
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common
from facenet_tf.service.loadtest import run_load
from facenet_tf.service.process import ServiceProcess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
LFW_IMAGES = os.path.join(os.environ.get("FACENET_TF_SHARED_DATA") or os.path.join(
    REPO_ROOT, os.pardir, "shared", "data"), "lfw_dev", "images")
ENROLLED = 100
SEED = 0
RUN_S, QUICK_RUN_S = 60.0, 10.0
ROUND_S, QUICK_ROUND_S = 15.0, 5.0
ROUNDS, QUICK_ROUNDS = 4, 1
WARM_UP_S, QUICK_WARM_UP_S = 10.0, 5.0
CLIENTS = 8
TARGET_RATIO = 2.0
KEY = "bench-user-key-0123456789"
# A folder to keep the enrolled gallery in between runs (enrolling again embeds nothing).
WORK_ENV = "FACENET_TF_BENCH_SERVICE_WORK"


def lfw_people(root: str = LFW_IMAGES) -> dict:
    people = {}
    for path in sorted(glob.glob(os.path.join(root, "*", "*.jpg"))):
        people.setdefault(os.path.basename(os.path.dirname(path)), []).append(path)
    if not people:
        raise FileNotFoundError(f"{root}: no LFW photos (set FACENET_TF_SHARED_DATA)")
    return people


def prepare(work: str, seed: int = SEED) -> tuple:
    """(known folder: ENROLLED people x 2 photos as symlinks, query photo paths)."""
    people = lfw_people()
    rng = random.Random(seed)
    several = sorted(p for p, photos in people.items() if len(photos) >= 3)
    single = sorted(p for p, photos in people.items() if len(photos) == 1)
    enrolled = rng.sample(several, ENROLLED)
    known = os.path.join(work, "known")
    queries = []
    for person in enrolled:
        os.makedirs(os.path.join(known, person), exist_ok=True)
        for path in people[person][:2]:
            link = os.path.join(known, person, os.path.basename(path))
            if not os.path.lexists(link):
                os.symlink(path, link)
        queries += people[person][2:]
    queries += [people[p][0] for p in rng.sample(single, len(queries))]
    rng.shuffle(queries)
    return known, queries


def _load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def _health(server) -> dict:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("GET", "/healthz")
    return json.loads(conn.getresponse().read())


def _measure(server, requests, clients, seconds, label) -> dict:
    """One run: its LoadResult and what the server says it did meanwhile (healthz counts):
    requests per model call, and ms a model call."""
    before = _health(server)
    result = run_load(server.host, server.port, requests, clients, seconds,
                      server_pid=server.pid)
    after = _health(server)
    batches = max(1, after["batches"] - before["batches"])
    run_ = {"result": result, "load": _load_note(),
            "mean_batch": (after["requests_batched"] - before["requests_batched"]) / batches,
            "ms_per_batch": 1000 * (after["model_busy_s"] - before["model_busy_s"]) / batches}
    print(f"{label}: {json.dumps(result.summary())}, mean batch {run_['mean_batch']:.2f}, "
          f"{run_['ms_per_batch']:.0f} ms a model call, {run_['load']}", flush=True)
    return run_


def _pooled(runs: list) -> dict:
    """Requests/s, p50 and p99 over several runs of one configuration."""
    latencies = np.concatenate([r["result"].latencies_s for r in runs])
    seconds = sum(r["result"].duration_s for r in runs)
    cpu = sum(r["result"].server_cpu_s for r in runs)
    return {"rps": len(latencies) / seconds, "p50": float(np.percentile(latencies, 50) * 1e3),
            "cpu_ms": 1000 * cpu / len(latencies),
            "p99": float(np.percentile(latencies, 99) * 1e3),
            "errors": sum(r["result"].error_count for r in runs),
            "mean_batch": float(np.mean([r["mean_batch"] for r in runs])),
            "ms_per_batch": float(np.mean([r["ms_per_batch"] for r in runs]))}


def _start_servers(gallery, key_file) -> dict:
    """The two servers, started together: default batching, and --max_batch 1."""
    servers = {"on": ServiceProcess(["--gallery", gallery, "--key_file", key_file,
                                     "--log_level", "warning"]),
               "off": ServiceProcess(["--gallery", gallery, "--key_file", key_file,
                                      "--log_level", "warning", "--max_batch", "1"])}
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(s.start) for s in servers.values()]:
            f.result()
    print(f"servers up in {time.perf_counter() - t0:.0f} s", flush=True)
    return servers


def run(quick: bool) -> list:
    main_s = QUICK_RUN_S if quick else RUN_S
    round_s = QUICK_ROUND_S if quick else ROUND_S
    rounds = QUICK_ROUNDS if quick else ROUNDS
    warm_up = QUICK_WARM_UP_S if quick else WARM_UP_S
    keep = os.environ.get(WORK_ENV)
    with (contextlib.nullcontext(keep) if keep else
          tempfile.TemporaryDirectory(prefix="bench_service_")) as work:
        known, queries = prepare(work)
        gallery, key_file = os.path.join(work, "gallery"), os.path.join(work, "keys.json")
        with open(key_file, "w") as f:
            json.dump({"keys": [{"name": "bench", "role": "user", "key": KEY}]}, f)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "facenet_tf.enroll", "--model", "pretrained",
                        "--gallery", gallery, "--input", known], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"enrolled {ENROLLED} people in {time.perf_counter() - t0:.0f} s; "
              f"{len(queries)} query photos", flush=True)
        requests = []
        for path in queries:
            with open(path, "rb") as f:
                requests.append(("POST", "/v1/identify", f.read(),
                                 {"X-API-Key": KEY, "Content-Type": "image/jpeg"}))
        servers = _start_servers(gallery, key_file)
        try:
            for name, server in servers.items():
                _measure(server, requests, CLIENTS, warm_up, f"warm-up, batching {name}")
            main = _measure(servers["on"], requests, CLIENTS, main_s,
                            f"{CLIENTS} clients for {main_s:.0f} s")
            compared = {"one": [], "many": [], "off": []}
            for i in range(rounds):
                for key, server, clients in (("one", servers["on"], 1),
                                             ("many", servers["on"], CLIENTS),
                                             ("off", servers["off"], CLIENTS)):
                    compared[key].append(_measure(server, requests, clients, round_s,
                                                  f"round {i + 1}: {key}"))
        finally:
            for server in servers.values():
                server.stop()
    return _rows(main, {k: _pooled(v) for k, v in compared.items()}, len(queries), main_s,
                 round_s, rounds, warm_up)


def _rows(main, pooled, num_queries, main_s, round_s, rounds, warm_up) -> list:
    result = main["result"]
    setup = (f"POST /v1/identify, pretrained model, {ENROLLED} people x 2 photos enrolled, "
             f"{num_queries} LFW 250x250 JPEG queries (half strangers), closed loop on "
             f"127.0.0.1, each server warmed {warm_up:.0f} s")
    one, many, off = pooled["one"], pooled["many"], pooled["off"]
    rounds_note = (f"{rounds} alternating rounds of {round_s:.0f} s per configuration (1 "
                   f"client; {CLIENTS} clients; {CLIENTS} clients with --max_batch 1, a "
                   "second server)")
    rss = result.summary()["rss_mib_first_last_max"]
    return [
        {"benchmark": "service", "metric": f"requests/s, {CLIENTS} clients for {main_s:.0f} s",
         "value": round(result.requests_per_s, 2), "baseline": None, "ratio": None,
         "target": None,
         "notes": f"{setup}; p50 {result.percentile_ms(50):.0f} ms, p99 "
                  f"{result.percentile_ms(99):.0f} ms, {result.requests} requests, "
                  f"{result.error_count} errors; {main['mean_batch']:.2f} requests a model "
                  f"call, {main['ms_per_batch']:.0f} ms a call; {main['load']}"},
        {"benchmark": "service", "metric": f"errors, {CLIENTS} clients for {main_s:.0f} s",
         "value": result.error_count, "baseline": None, "ratio": None, "target": "0",
         "notes": f"statuses {result.statuses}; first errors {result.errors[:3]}"},
        {"benchmark": "service", "metric": f"server RSS growth MiB, {CLIENTS} clients for "
         f"{main_s:.0f} s", "value": round(result.rss_growth_mib(), 1), "baseline": None,
         "ratio": None, "target": "flat",
         "notes": f"RSS first / last / max {rss} MiB, {len(result.rss_kib)} samples (VmRSS "
                  "from /proc every 1 s); growth = last sample - the one at 1/4 of the run"},
        {"benchmark": "service", "metric": f"requests/s, {CLIENTS} clients (baseline: 1 client)",
         "value": round(many["rps"], 2), "baseline": round(one["rps"], 2),
         "ratio": round(many["rps"] / one["rps"], 2), "target": f">= {TARGET_RATIO:g}x",
         "notes": f"{rounds_note}; p50 / p99 ms: {CLIENTS} clients {many['p50']:.0f} / "
                  f"{many['p99']:.0f}, 1 client {one['p50']:.0f} / {one['p99']:.0f}; requests a "
                  f"model call {many['mean_batch']:.2f} vs {one['mean_batch']:.2f}, ms a call "
                  f"{many['ms_per_batch']:.0f} vs {one['ms_per_batch']:.0f}; errors "
                  f"{many['errors'] + one['errors']}"},
        {"benchmark": "service", "metric": f"server CPU ms a request, {CLIENTS} clients "
         "(baseline: 1 client)", "value": round(many["cpu_ms"], 1),
         "baseline": round(one["cpu_ms"], 1), "ratio": round(one["cpu_ms"] / many["cpu_ms"], 2),
         "target": None,
         "notes": "the same rounds; the server process's user + system CPU time (/proc) over "
                  "its answered requests: what batching saves whatever share of the cores "
                  f"the machine gives the server; batching off {off['cpu_ms']:.0f} ms"},
        {"benchmark": "service", "metric": f"requests/s, {CLIENTS} clients, batching on "
         "(baseline: off, --max_batch 1)", "value": round(many["rps"], 2),
         "baseline": round(off["rps"], 2), "ratio": round(many["rps"] / off["rps"], 2),
         "target": None,
         "notes": f"the same rounds; batching off: p50 {off['p50']:.0f} ms, p99 "
                  f"{off['p99']:.0f} ms, {off['ms_per_batch']:.0f} ms a call, errors "
                  f"{off['errors']}"},
    ]


if __name__ == "__main__":
    raise SystemExit(common.bench_main(run, __doc__, "shorter runs (10 s, rounds of 5 s)"))
