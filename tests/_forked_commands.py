"""Runs many short command lines (`--help`, bad input) as forks of one process that has already
imported TensorFlow, Beam and the library, instead of one fresh interpreter each: a fresh
`python -m facenet_tf.X` spends about 5 CPU-seconds importing before it reads its first flag.

Each command line still runs as `python -m MODULE ARGS` (or the installed console script)
would: its module runs as __main__ via runpy in a child process with its own argv, cwd,
environment, stdout, stderr and exit status. Only the imports are shared, so only the command
modules themselves (which define their flags when run) are left out of the preload.

    results = run_forked([ForkedCommand(["-m", "facenet_tf.embed", "--help"], cwd=...)])

Used by the tests; python -m tests._forked_commands is the forking server itself.
"""

import dataclasses
import importlib
import json
import os
import pkgutil
import runpy
import shutil
import subprocess
import sys
import tempfile
import traceback

from tests.conftest import REPO_ROOT

# Library packages imported before forking (their modules, recursively). The command modules
# (facenet_tf/*.py at the top, beam_jobs/*.py) are not: they define flags when they run.
PRELOAD_PACKAGES = ("facenet_tf.common", "facenet_tf.data", "facenet_tf.datasets",
                    "facenet_tf.detection", "facenet_tf.evaluation", "facenet_tf.inference",
                    "facenet_tf.models", "facenet_tf.pipelines", "facenet_tf.recognition",
                    "facenet_tf.service", "facenet_tf.serving", "facenet_tf.training",
                    "facenet_tf.triplets")
PRELOAD_MODULES = ("facenet_tf._cli", "apache_beam", "tensorflow", "keras")


@dataclasses.dataclass
class ForkedCommand:
    """One command line: argv after the interpreter ("-m MODULE ARGS..." or "SCRIPT ARGS...")."""
    argv: list
    cwd: str = REPO_ROOT
    env: dict = dataclasses.field(default_factory=dict)  # set on top of the server's


def run_forked(commands, env=None, parallel: int = 2, timeout_s: float = 600) -> list:
    """subprocess.CompletedProcess for each command, in order. env: the server's environment
    (TensorFlow reads its logging level at import, so set TF_CPP_MIN_LOG_LEVEL here)."""
    request = json.dumps({"parallel": parallel, "commands": [dataclasses.asdict(c)
                                                             for c in commands]})
    server = subprocess.run([sys.executable, "-m", "tests._forked_commands"], input=request,
                            capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                            timeout=timeout_s)
    if server.returncode != 0:
        raise RuntimeError(f"the forking server failed ({server.returncode}):\n"
                           f"{server.stderr[-3000:]}")
    answers = json.loads(server.stdout.splitlines()[-1])
    return [subprocess.CompletedProcess([sys.executable, *c.argv], a["returncode"], a["stdout"],
                                        a["stderr"]) for c, a in zip(commands, answers)]


def _preload():
    for name in PRELOAD_MODULES:
        importlib.import_module(name)
    for package_name in PRELOAD_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            importlib.import_module(info.name)


def _child(command: dict, out_path: str, err_path: str):
    """In the forked child: run one command line as its own program, then exit with its
    status (never returning into the server's loop)."""
    status = 0
    try:
        for fd, path in ((1, out_path), (2, err_path)):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        os.chdir(command["cwd"])
        os.environ.update(command["env"])
        argv = command["argv"]
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 (reported like an uncaught exception would be)
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _serve():
    request = json.loads(sys.stdin.read())
    _preload()
    scratch = tempfile.mkdtemp(prefix="forked_commands_")
    commands = request["commands"]
    answers = [None] * len(commands)
    running = {}  # pid -> index
    next_index = 0
    while next_index < len(commands) or running:
        while next_index < len(commands) and len(running) < request["parallel"]:
            i = next_index
            next_index += 1
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(commands[i], os.path.join(scratch, f"{i}.out"),
                       os.path.join(scratch, f"{i}.err"))
            running[pid] = i
        pid, status = os.wait()
        i = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        with open(os.path.join(scratch, f"{i}.out")) as out, \
                open(os.path.join(scratch, f"{i}.err")) as err:
            answers[i] = {"returncode": code, "stdout": out.read(), "stderr": err.read()}
    shutil.rmtree(scratch)
    print(json.dumps(answers))


if __name__ == "__main__":
    _serve()
