"""A closed-loop load test of the service: N clients, each on its own keep-alive connection,
send one request after another for a fixed time; every latency and every non-2xx answer is
recorded, and the server's resident memory is sampled and its CPU time read from /proc.
Standard library and NumPy only.

    result = run_load("127.0.0.1", port, [("POST", "/v1/identify", body, headers)],
                      clients=8, duration_s=60, server_pid=pid)
    result.summary()   # requests/s, p50/p99 latency, errors, RSS first/last/max
"""

import dataclasses
import http.client
import itertools
import os
import threading
import time

import numpy as np

RSS_EVERY_S = 1.0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process `pid` has used (/proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int | None:
    """Resident memory of process `pid` in KiB (VmRSS of /proc/PID/status), None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclasses.dataclass
class LoadResult:
    clients: int
    duration_s: float                      # from the first request sent to the last answer
    latencies_s: np.ndarray                # every answered request's latency
    statuses: dict                         # HTTP status -> count
    errors: list                           # (status or exception name, detail), the first 20
    rss_kib: list                          # (seconds since start, KiB) samples of the server
    server_cpu_s: float | None = None      # CPU seconds the server used during the run

    @property
    def requests(self) -> int:
        return int(len(self.latencies_s))

    @property
    def error_count(self) -> int:
        return sum(n for status, n in self.statuses.items()
                   if not (isinstance(status, int) and 200 <= status < 300))

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.requests else \
            float("nan")

    @property
    def server_cpu_ms_per_request(self) -> float | None:
        """The server's CPU time per answered request: what a request costs whatever share
        of the cores the machine gives the server."""
        if self.server_cpu_s is None or not self.requests:
            return None
        return 1000 * self.server_cpu_s / self.requests

    def rss_growth_mib(self) -> float | None:
        """RSS of the last sample minus that of the sample at 1/4 of the run (after warm-up
        allocations), in MiB."""
        if len(self.rss_kib) < 2:
            return None
        start = self.rss_kib[len(self.rss_kib) // 4][1]
        return (self.rss_kib[-1][1] - start) / 1024

    def summary(self) -> dict:
        rss = [kib for _, kib in self.rss_kib]
        return {"clients": self.clients, "requests": self.requests,
                "errors": self.error_count, "duration_s": round(self.duration_s, 2),
                "requests_per_s": round(self.requests_per_s, 2),
                "p50_ms": round(self.percentile_ms(50), 1),
                "p99_ms": round(self.percentile_ms(99), 1),
                "server_cpu_ms_per_request": None if self.server_cpu_ms_per_request is None
                else round(self.server_cpu_ms_per_request, 1),
                "rss_mib_first_last_max": [round(rss[0] / 1024), round(rss[-1] / 1024),
                                           round(max(rss) / 1024)] if rss else None,
                "rss_growth_mib": None if self.rss_growth_mib() is None
                else round(self.rss_growth_mib(), 1)}


def run_load(host: str, port: int, requests: list, clients: int, duration_s: float,
             server_pid: int | None = None, timeout_s: float = 60.0) -> LoadResult:
    """`clients` threads, each sending the (method, path, body, headers) of `requests` in
    turn (client i starts at request i) on its own connection until duration_s has passed
    (a request in flight then is still waited for, up to timeout_s). A connection that
    fails is counted as an error and opened again."""
    if clients < 1 or not requests:
        raise ValueError("run_load needs at least one client and one request")
    lock = threading.Lock()
    latencies, statuses, errors, rss = [], {}, [], []
    cpu_before = cpu_seconds(server_pid) if server_pid is not None else None
    start = time.monotonic()
    deadline = start + duration_s
    last_answer = [start]

    def record(status, latency, detail=""):
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if latency is not None:
                latencies.append(latency)
                last_answer[0] = max(last_answer[0], time.monotonic())
            if not (isinstance(status, int) and 200 <= status < 300) and len(errors) < 20:
                errors.append((status, detail))

    def client(i):
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        for method, path, body, headers in itertools.islice(
                itertools.cycle(requests), i % len(requests), None):
            if time.monotonic() >= deadline:
                break
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                record(response.status, time.perf_counter() - t0,
                       "" if response.status < 300 else data[:200].decode("utf-8", "replace"))
            except (OSError, http.client.HTTPException) as e:
                record(type(e).__name__, None, str(e))
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        conn.close()

    def sample_rss():
        while time.monotonic() < deadline:
            kib = rss_kib(server_pid)
            if kib is not None:
                rss.append((round(time.monotonic() - start, 2), kib))
            time.sleep(RSS_EVERY_S)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    if server_pid is not None:
        threads.append(threading.Thread(target=sample_rss, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + timeout_s + 5)
    cpu_after = cpu_seconds(server_pid) if server_pid is not None else None
    return LoadResult(clients, last_answer[0] - start, np.array(latencies), statuses, errors,
                      rss, None if cpu_before is None or cpu_after is None
                      else cpu_after - cpu_before)
