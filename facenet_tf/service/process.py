"""The service as a child process: started with the serve command's flags, waited for until it
listens, stopped (SIGTERM, then SIGKILL) or killed. What the service's tests and its benchmark
use to run a real uvicorn server on 127.0.0.1.

    with ServiceProcess(["--gallery", G, "--key_file", K]) as server:
        server.url            # http://127.0.0.1:PORT (a free port, chosen by the server)
"""

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time

SERVE_MODULE = "facenet_tf.serve"
_LISTENING = re.compile(r"Uvicorn running on http://([0-9.]+):(\d+)")


class ServiceProcess:
    """`python -m facenet_tf.serve ARGS --host 127.0.0.1 --port 0` as a child process.
    start() returns once it listens (RuntimeError with its last output if it exits or does
    not listen within start_timeout_s). env: extra environment variables; nice: added to the
    child's niceness."""

    def __init__(self, args, env: dict | None = None, start_timeout_s: float = 300.0,
                 nice: int = 0, python: str = sys.executable):
        self.args = [python, "-m", SERVE_MODULE, *args, "--host", "127.0.0.1", "--port", "0"]
        self.env = dict(os.environ, **(env or {}))
        self.start_timeout_s = start_timeout_s
        self.nice = nice
        self.output = collections.deque(maxlen=200)
        self.host, self.port, self._proc = None, None, None
        self._listening = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def start(self) -> "ServiceProcess":
        preexec = (lambda: os.nice(self.nice)) if self.nice else None
        self._proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True,
                                      preexec_fn=preexec)
        threading.Thread(target=self._read_output, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._listening.wait(0.1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the service did not start (exit {self._proc.returncode}):"
                                   "\n" + "\n".join(self.output))
        return self

    def _read_output(self) -> None:
        for line in self._proc.stdout:
            self.output.append(line.rstrip())
            found = _LISTENING.search(line)
            if found and not self._listening.is_set():
                self.host, self.port = found.group(1), int(found.group(2))
                self._listening.set()

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
