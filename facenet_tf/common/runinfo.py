"""Records what produced a run: git revision, command line, flags and package versions."""

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys

import tensorflow as tf
from absl import flags as absl_flags

from facenet_tf.common import io_utils

PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "apache-beam", "tensorflow-datasets",
            "absl-py", "numpy", "protobuf", "scikit-learn", "matplotlib", "pillow")


def git_revision(directory: str | None = None) -> str:
    """The checkout's commit (with '-dirty' for uncommitted changes), or 'unknown'."""
    directory = directory or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=directory, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def collect(flags: dict | None = None) -> dict:
    """The run record: when, where, what code, which flags, which packages."""
    return {
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "git_revision": git_revision(),
        "argv": list(sys.argv),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "flags": dict(flags or {}),
    }


def absl_flag_values() -> dict:
    """The values of every absl flag defined by the running program's own modules."""
    values = {}
    for module_flags in absl_flags.FLAGS.flags_by_module_dict().values():
        for flag in module_flags:
            values[flag.name] = flag.value
    return {k: v for k, v in values.items() if _is_jsonable(v)}


def write(path: str, flags: dict | None = None) -> dict:
    """Writes the run record to the JSON file `path` (its folder is made) and returns it."""
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    info = collect(flags)
    io_utils.write_json_atomic(path, info)
    return info


def _is_jsonable(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, tuple))
