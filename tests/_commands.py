"""The project's commands as setup.py declares them, for tests that must cover every one."""

import ast
import os

from tests.conftest import REPO_ROOT

SETUP_PY = os.path.join(REPO_ROOT, "setup.py")


def checkout_env(**extra) -> dict:
    """os.environ with this checkout first on PYTHONPATH (so that `python -m MODULE` runs this
    checkout's code, also from a worktree) and `extra` set."""
    path = [REPO_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **extra)


def console_scripts() -> dict:
    """{script name: module} of setup.py's CONSOLE_SCRIPTS, e.g. {"facenet-compare":
    "facenet_tf.compare"}. Read from the file's source (setup.py cannot be imported: importing
    it runs setup())."""
    with open(SETUP_PY) as f:
        tree = ast.parse(f.read(), SETUP_PY)
    for node in tree.body:
        if (isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "CONSOLE_SCRIPTS" for t in node.targets)):
            entries = ast.literal_eval(node.value)
            break
    else:
        raise AssertionError(f"{SETUP_PY}: no CONSOLE_SCRIPTS list")
    scripts = {}
    for entry in entries:
        name, target = (part.strip() for part in entry.split("=", 1))
        scripts[name] = target.split(":")[0]
    return scripts
