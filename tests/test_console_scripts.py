"""Every command is installed as a console script (setup.py entry points) and answers --help.

Each script is the venv's bin file, run with this checkout first on PYTHONPATH, so it is this
checkout's run() that answers, even in a venv whose editable install points elsewhere; the
scripts run as forks of one process that imported TensorFlow once (tests/_forked_commands).
`python -m MODULE --help` must answer the same way: checked for two commands in fresh
interpreters (every command's `main` goes through the same facenet_tf._cli.run).
"""

import importlib.metadata
import os
import re
import subprocess
import sys

import pytest

from tests._forked_commands import ForkedCommand, run_forked
from tests.conftest import REPO_ROOT

# command -> (entry point, a flag of that command its --help must list)
COMMANDS = {
    "facenet-train": ("facenet_tf.train:run", "train_data"),
    "facenet-mine": ("beam_jobs.mine_triplets:run", "identities_per_subset"),
    "facenet-build-dataset": ("beam_jobs.build_dataset:run", "input_dir"),
    "facenet-evaluate": ("facenet_tf.evaluate:run", "pairs"),
    "facenet-export": ("facenet_tf.export:run", "checkpoint"),
    "facenet-embed": ("facenet_tf.embed:run", "flip"),
    "facenet-compare": ("facenet_tf.compare:run", "threshold"),
    "facenet-cluster": ("facenet_tf.cluster:run", "linkage"),
    "facenet-pretrained": ("facenet_tf.pretrained:run", "graph_path"),
    "facenet-demo": ("facenet_tf.demo:run", "heldout_identities"),
    "facenet-make-pairs": ("facenet_tf.make_pairs:run", "pairs_per_fold"),
    "facenet-align": ("beam_jobs.align_faces:run", "margin"),
    "facenet-index": ("beam_jobs.index_faces:run", "full_rebuild"),
    "facenet-search": ("facenet_tf.search:run", "top_k"),
    "facenet-enroll": ("facenet_tf.enroll:run", "remove"),
    "facenet-identify": ("facenet_tf.identify:run", "annotate"),
    "facenet-serve": ("facenet_tf.serve:run", "key_file"),
}
BIN_DIR = os.path.dirname(sys.executable)
HELP_TIMEOUT_S = 300
MODULE_FORM_CHECKED = ("facenet-train", "facenet-mine")


def _installed_entry_points() -> dict:
    try:
        dist = importlib.metadata.distribution("facenet_tf")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("facenet_tf is not installed in this interpreter (pip install -e .)")
    return {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}


def _help_command(command: str, form: str) -> list:
    """The command line after the interpreter (a script is a Python file too)."""
    if form == "script":
        return [os.path.join(BIN_DIR, command), "--help"]
    module = COMMANDS[command][0].split(":")[0]
    return ["-m", module, "--help"]


@pytest.fixture(scope="module")
def help_runs():
    """(command, form) -> CompletedProcess of its --help (None if the script is not
    installed). The scripts run as forks of one process that imported TensorFlow once
    (tests/_forked_commands); the `python -m` forms run as fresh interpreters, which also shows
    that a fresh process answers --help as the forks do."""
    _installed_entry_points()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    scripts = [(command, "script") for command in COMMANDS
               if os.path.exists(_help_command(command, "script")[0])]
    forked = run_forked([ForkedCommand(_help_command(*key)) for key in scripts], env=env,
                        timeout_s=HELP_TIMEOUT_S)
    runs = dict.fromkeys([(command, "script") for command in COMMANDS])
    runs.update(zip(scripts, forked))
    for key in [(command, "module") for command in MODULE_FORM_CHECKED]:
        runs[key] = subprocess.run([sys.executable, *_help_command(*key)], cwd=REPO_ROOT, env=env,
                                   capture_output=True, text=True, timeout=HELP_TIMEOUT_S)
    return runs


def test_every_command_is_a_declared_console_script():
    assert _installed_entry_points() == {name: ep for name, (ep, _) in COMMANDS.items()}


@pytest.mark.slow  # one TensorFlow import for the scripts, two fresh interpreters
@pytest.mark.parametrize("command, form", [(c, "script") for c in sorted(COMMANDS)] + [
    (c, "module") for c in MODULE_FORM_CHECKED])
def test_help_lists_the_command_flags_and_exits_0(help_runs, command, form):
    result = help_runs[(command, form)]
    assert result is not None, (f"{command} is not in {BIN_DIR}: reinstall the package "
                                f"(pip install --no-deps -e .)")
    shown = " ".join(_help_command(command, form))
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{shown} exited {result.returncode}:\n{output[-3000:]}"
    flag = COMMANDS[command][1]
    assert re.search(rf"--(\[no\])?{flag}\b", result.stdout), (
        f"{shown} does not list --{flag}:\n{result.stdout[-3000:]}")
