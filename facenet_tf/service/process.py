"""The service as a child process: started with the serve command's flags, waited for until
/healthz answers, stopped (SIGTERM, then SIGKILL) or killed. What the service's tests and its
benchmark use to run a real uvicorn server on 127.0.0.1.

    with ServiceProcess(["--gallery", G, "--key_file", K]) as server:
        server.url            # http://127.0.0.1:PORT (a port that was free)
"""

import collections
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

SERVE_MODULE = "facenet_tf.serve"
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now (the kernel's choice for port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServiceProcess:
    """`python -m facenet_tf.serve ARGS --host 127.0.0.1 --port PORT` (a free port) as a child
    process. start() returns once GET /healthz answers 200 (RuntimeError with its last output
    if it exits first or does not answer within start_timeout_s). env: extra environment
    variables."""

    def __init__(self, args, env: dict | None = None, start_timeout_s: float = 600.0,
                 python: str = sys.executable):
        self.host, self.port = HOST, free_port()
        self.args = [python, "-m", SERVE_MODULE, *args, "--host", self.host,
                     "--port", str(self.port)]
        self.env = dict(os.environ, **(env or {}))
        self.start_timeout_s = start_timeout_s
        self.output = collections.deque(maxlen=200)
        self._proc = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def start(self) -> "ServiceProcess":
        self._proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read_output, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._healthy():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the service did not start (exit {self._proc.returncode}):"
                                   "\n" + "\n".join(self.output))
            time.sleep(0.2)
        return self

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _read_output(self) -> None:
        for line in self._proc.stdout:
            self.output.append(line.rstrip())

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (as in a crash)."""
        if self.alive():
            self._proc.send_signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(30)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (uvicorn's graceful shutdown), SIGKILL after timeout_s; the exit code."""
        if self.alive():
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return None if self._proc is None else self._proc.returncode

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
