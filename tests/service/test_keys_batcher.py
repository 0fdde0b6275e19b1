"""The service's parts without a model: the key file (formats, every refusal names the entry,
re-read on change) and the micro-batcher (concurrent submits share calls, results go to the
right caller, a bad item fails only its caller, a full queue refuses)."""

import asyncio
import hashlib
import json
import os
import threading
import time

import pytest

from facenet_tf.service import keys as keys_lib
from facenet_tf.service.batcher import MicroBatcher, Overloaded

USER_KEY = "u" * 20
ADMIN_KEY = "a" * 20


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def test_key_file_gives_each_key_its_client_and_role(tmp_path):
    path = _write(tmp_path / "keys.json", {"keys": [
        {"name": "app", "role": "user", "key": USER_KEY},
        {"name": "ops", "role": "admin",
         "sha256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}]})
    keys = keys_lib.KeyFile(path)
    assert keys.client(USER_KEY) == keys_lib.Client("app", "user")
    assert keys.client(ADMIN_KEY) == keys_lib.Client("ops", "admin")
    assert keys.client(ADMIN_KEY).is_admin and not keys.client(USER_KEY).is_admin
    assert keys.client("x" * 20) is None and keys.client("") is None
    assert keys.client(None) is None and len(keys) == 2


@pytest.mark.parametrize("entries, says", [
    ([], "empty"),
    ([{"name": "a", "role": "root", "key": USER_KEY}], "keys[0] (a): \"role\""),
    ([{"name": "a", "role": "user", "key": "short"}], "at least 16"),
    ([{"name": "a", "role": "user"}], "exactly one of"),
    ([{"name": "a", "role": "user", "sha256": "XYZ"}], "64 lowercase hex"),
    ([{"name": "a", "role": "user", "key": USER_KEY},
      {"name": "b", "role": "admin", "key": USER_KEY}], "keys[1] (b): the same key"),
    ([{"name": "a", "role": "user", "key": USER_KEY},
      {"name": "a", "role": "admin", "key": ADMIN_KEY}], "used twice"),
    ([{"name": "a", "role": "user", "key": USER_KEY, "expires": 1}], "unknown fields"),
])
def test_a_bad_key_file_is_refused_naming_the_entry(tmp_path, entries, says):
    path = _write(tmp_path / "keys.json", {"keys": entries})
    with pytest.raises(ValueError, match="keys.json") as e:
        keys_lib.KeyFile(path)
    assert says in str(e.value)


def test_a_missing_or_non_json_key_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nokeys.json"):
        keys_lib.KeyFile(str(tmp_path / "nokeys.json"))
    (tmp_path / "k.json").write_text("{not json")
    with pytest.raises(ValueError, match="k.json: not valid JSON"):
        keys_lib.KeyFile(str(tmp_path / "k.json"))


def test_keys_are_read_again_when_the_file_changes_and_a_bad_change_keeps_the_old(tmp_path):
    path = tmp_path / "keys.json"
    _write(path, {"keys": [{"name": "app", "role": "user", "key": USER_KEY}]})
    keys = keys_lib.KeyFile(str(path))
    assert keys.client(USER_KEY) is not None
    _write(path, {"keys": [{"name": "ops", "role": "admin", "key": ADMIN_KEY}]})
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a later mtime for sure
    assert keys.client(USER_KEY) is None and keys.client(ADMIN_KEY).name == "ops"
    path.write_text("{broken")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert keys.client(ADMIN_KEY).name == "ops"  # the broken edit is not in force


class _Recording:
    """A batch function: squares numbers, raises ValueError for negative ones (as a result),
    takes `delay_s` per call, and records each call's items."""

    def __init__(self, delay_s=0.0):
        self.calls, self.delay_s = [], delay_s
        self.entered = threading.Event()

    def __call__(self, items):
        self.calls.append(list(items))
        self.entered.set()
        time.sleep(self.delay_s)
        return [ValueError(f"negative {x}") if x < 0 else x * x for x in items]


async def _submit_all(batcher, items):
    return await asyncio.gather(*(batcher.submit(x) for x in items), return_exceptions=True)


def test_concurrent_submits_share_calls_and_each_caller_gets_its_own_answer():
    fn = _Recording(delay_s=0.02)
    batcher = MicroBatcher(fn, max_batch=4, max_wait_s=0.05).start()
    try:
        items = list(range(10)) + [-3]
        results = asyncio.run(_submit_all(batcher, items))
    finally:
        batcher.stop()
    assert results[:10] == [x * x for x in range(10)]
    assert isinstance(results[10], ValueError) and "negative -3" in str(results[10])
    # Every item was in exactly one call, no call above max_batch, and they were shared.
    assert sorted(x for call in fn.calls for x in call) == sorted(items)
    assert max(len(call) for call in fn.calls) <= 4
    assert len(fn.calls) <= 4  # 11 items, at most 4 a call: 3 calls if perfectly packed
    assert batcher.stats.items == 11 and batcher.stats.batches == len(fn.calls)


def test_without_a_wait_a_lone_request_runs_at_once_and_a_failing_call_fails_its_batch():
    def broken(items):
        raise RuntimeError("model exploded")

    batcher = MicroBatcher(broken, max_batch=8, max_wait_s=0.0).start()
    try:
        results = asyncio.run(_submit_all(batcher, [1, 2]))
    finally:
        batcher.stop()
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
    fn = _Recording()
    batcher = MicroBatcher(fn, max_batch=8, max_wait_s=0.0).start()
    try:
        t0 = time.monotonic()
        assert asyncio.run(_submit_all(batcher, [3])) == [9]
        assert time.monotonic() - t0 < 5.0
    finally:
        batcher.stop()


def test_a_full_queue_refuses_with_overloaded():
    fn = _Recording(delay_s=0.3)
    batcher = MicroBatcher(fn, max_batch=1, max_wait_s=0.0, max_queue=2).start()

    async def flood():
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.to_thread(fn.entered.wait, 5)  # the worker holds item 1
        rest = [asyncio.ensure_future(batcher.submit(x)) for x in (2, 3, 4)]
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        results = asyncio.run(flood())
    finally:
        batcher.stop()
    assert results[:3] == [1, 4, 9]  # two waited in the queue
    assert isinstance(results[3], Overloaded)
