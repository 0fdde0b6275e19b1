"""Small file helpers over tf.io.gfile, so every path may be local or gs://."""

import contextlib
import json
import os
import uuid

import tensorflow as tf

MANIFEST_NAME = "manifest.json"


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to a temporary sibling and renames it over `path`.

    A reader never sees a half-written file: it sees the old file, no file, or the new one.
    """
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


@contextlib.contextmanager
def staged_dir(directory: str):
    """Yields a temporary sibling path to write a whole directory at (not yet created); when
    the block ends without error it replaces `directory` by rename (an older one is renamed
    aside first, then deleted), so a reader never sees a half-written directory. The
    temporary path is removed on error."""
    directory = os.fspath(directory).rstrip("/")
    parent = os.path.dirname(directory)
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{directory}.tmp-{uuid.uuid4().hex}"
    try:
        yield tmp
        old = None
        if tf.io.gfile.exists(directory):
            old = f"{directory}.old-{uuid.uuid4().hex}"
            tf.io.gfile.rename(directory, old)
        tf.io.gfile.rename(tmp, directory)
        if old:
            tf.io.gfile.rmtree(old)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)


def write_json_atomic(path: str, obj) -> None:
    """Writes `obj` as indented, key-sorted JSON, atomically (see write_bytes_atomic)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def read_bytes(path: str) -> bytes:
    """A file's bytes; a missing path, a directory or an unreadable file is an error naming it
    (FileNotFoundError, IsADirectoryError, PermissionError), not a TensorFlow OpError."""
    path = require_file(path)
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except tf.errors.PermissionDeniedError:
        raise PermissionError(f"{path}: permission denied") from None


def require_file(path: str, what: str = "") -> str:
    """`path` if it is a file; else FileNotFoundError (nothing there) or IsADirectoryError,
    naming it (after `what`, e.g. "--pairs", when given). For checking a command's inputs
    before slow work."""
    path = os.fspath(path)
    name = f"{what} {path}" if what else path
    if tf.io.gfile.isdir(path):
        raise IsADirectoryError(f"{name}: a directory, not a file")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{name}: no such file")
    return path


def require_dir(path: str, what: str = "") -> str:
    """`path` if it is a directory; else FileNotFoundError (nothing there) or NotADirectoryError
    (a file), naming it (after `what`, e.g. "input_dir", when given)."""
    path = os.fspath(path)
    name = f"{what} {path}" if what else path
    if tf.io.gfile.isdir(path):
        return path
    if tf.io.gfile.exists(path):
        raise NotADirectoryError(f"{name}: a file, not a directory")
    raise FileNotFoundError(f"{name}: no such directory")


def read_json(path: str):
    """Reads a JSON file; the error names the file."""
    try:
        return json.loads(read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def is_complete(directory: str) -> bool:
    """A dataset or triplet-generation directory is complete once its manifest exists."""
    return tf.io.gfile.exists(os.path.join(directory, MANIFEST_NAME))


def read_manifest(directory: str) -> dict:
    """Reads a complete directory's manifest; a clear error if the directory is incomplete."""
    require_dir(directory)
    path = os.path.join(directory, MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{directory}: no {MANIFEST_NAME}; not a finished output of a facenet_tf job "
            "(the job may still be running or may have been interrupted)")
    return read_json(path)


def listed_shards(directory: str, manifest: dict, key: str = "shards") -> list:
    """Full paths of the shard files a manifest lists under `key` (only those), each checked to
    exist.

    Readers go through this so that stray files from an interrupted run are never read.
    """
    paths = []
    for name in manifest.get(key, []):
        path = os.path.join(directory, name)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{directory}/{MANIFEST_NAME} lists shard {name!r}, "
                                    "which does not exist")
        paths.append(path)
    return paths


def _json_default(value):
    # NumPy scalars and arrays show up in metrics and counts.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
