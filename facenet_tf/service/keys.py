"""API keys of the service, read from a key file (JSON):

    {"keys": [{"name": "web-frontend", "role": "user", "key": "<at least 16 characters>"},
              {"name": "ops", "role": "admin", "sha256": "<hex sha256 of the key>"}]}

Each entry names a client (for the logs), its role, and either the key itself or the hex
SHA-256 of the key (so that the file need not hold the secret). A "user" key may identify,
verify and list people; an "admin" key may also enrol and delete. The file is read again when
it changes (its modification time or size), so keys can be added or revoked without a restart;
a change that does not parse is logged and the previous keys stay in force.
"""

import dataclasses
import hashlib
import hmac
import logging
import os
import re
import threading

from facenet_tf.common import io_utils

logger = logging.getLogger(__name__)

USER = "user"
ADMIN = "admin"
ROLES = (USER, ADMIN)
MIN_KEY_LENGTH = 16
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class Client:
    """Who a key belongs to: its name in the key file and its role."""
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_keys(data, source: str) -> list:
    """[(sha256 digest, Client)] of a key file's JSON; ValueError naming `source` and the
    entry otherwise."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{source}: expected a JSON object with a \"keys\" list")
    if not data["keys"]:
        raise ValueError(f"{source}: the \"keys\" list is empty; the service would refuse "
                         "every request")
    entries, names, digests = [], set(), set()
    for i, entry in enumerate(data["keys"]):
        where = f"{source}: keys[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {entry!r}")
        unknown = set(entry) - {"name", "role", "key", "sha256"}
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        name, role = entry.get("name"), entry.get("role")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: \"name\" must be a non-empty string")
        if name in names:
            raise ValueError(f"{where}: the name {name!r} is used twice")
        if role not in ROLES:
            raise ValueError(f"{where} ({name}): \"role\" must be one of {ROLES}, got {role!r}")
        if ("key" in entry) == ("sha256" in entry):
            raise ValueError(f"{where} ({name}): give exactly one of \"key\" and \"sha256\"")
        if "key" in entry:
            key = entry["key"]
            if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
                raise ValueError(f"{where} ({name}): \"key\" must be a string of at least "
                                 f"{MIN_KEY_LENGTH} characters")
            digest = key_digest(key)
        else:
            digest = entry["sha256"]
            if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                raise ValueError(f"{where} ({name}): \"sha256\" must be 64 lowercase hex "
                                 "digits (the SHA-256 of the key)")
        if digest in digests:
            raise ValueError(f"{where} ({name}): the same key is listed twice")
        names.add(name)
        digests.add(digest)
        entries.append((digest, Client(name, role)))
    return entries


class KeyFile:
    """The keys of a key file; `client(key)` is who a presented key belongs to (or None)."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._stamp = None
        self._entries = self._read()

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such key file") from None
        return (st.st_mtime_ns, st.st_size)

    def _read(self) -> list:
        stamp = self._file_stamp()
        entries = parse_keys(io_utils.read_json(self.path), self.path)
        self._stamp = stamp
        return entries

    def _current(self) -> list:
        with self._lock:
            try:
                if self._file_stamp() != self._stamp:
                    self._entries = self._read()
                    logger.info("%s: re-read, %d keys", self.path, len(self._entries))
            except (ValueError, FileNotFoundError) as e:
                logger.error("%s; keeping the %d keys read before", e, len(self._entries))
            return self._entries

    def __len__(self) -> int:
        return len(self._current())

    def client(self, key: str | None) -> Client | None:
        """The client whose key this is, or None (no key, or not a listed one). Every entry
        is compared, in constant time each."""
        if not key:
            return None
        digest = key_digest(key)
        found = None
        for known, client in self._current():
            if hmac.compare_digest(known, digest):
                found = client
        return found
