"""A micro-batcher: requests that arrive while the model is busy, or within max_wait_s of each
other, are handed to one call of a batch function, on one worker thread that owns the model.

    batcher = MicroBatcher(lambda items: [f(x) for x in items], max_batch=16, max_wait_s=0.005)
    batcher.start()
    result = await batcher.submit(item)     # from any asyncio event loop
    batcher.stop()

The worker takes the oldest waiting item, then keeps collecting until max_batch items or until
max_wait_s has passed since it took the first one, and calls the batch function with the items
in arrival order. The function returns one result per item; a result that is an exception is
raised to that item's caller only, and an exception raised by the function itself goes to
every caller of the batch. At most max_queue items wait; submit raises Overloaded beyond that.
"""

import asyncio
import dataclasses
import logging
import queue
import threading
import time

logger = logging.getLogger(__name__)

_STOP = object()


class Overloaded(RuntimeError):
    """The queue is full: the caller should retry later."""


@dataclasses.dataclass
class _Pending:
    item: object
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclasses.dataclass
class BatchStats:
    """Counts since start: batches run, items in them, the largest batch, and the seconds
    spent in the batch function (busy_s / elapsed time is the model's utilisation)."""
    batches: int = 0
    items: int = 0
    largest: int = 0
    busy_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0


def _resolve(pending: _Pending, result) -> None:
    if pending.future.done():  # the caller went away (cancelled)
        return
    if isinstance(result, BaseException):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)


class MicroBatcher:
    """See the module doc. batch_fn: list of items -> list of results (same length)."""

    def __init__(self, batch_fn, max_batch: int = 16, max_wait_s: float = 0.005,
                 max_queue: int = 256, name: str = "micro-batcher"):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self._fn = batch_fn
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self._queue = queue.Queue(maxsize=int(max_queue))
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.stats = BatchStats()

    def start(self) -> "MicroBatcher":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Lets the worker finish the items already queued, then ends it."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def submit(self, item):
        """The batch function's result for `item` (its exception raised here)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(item, loop.create_future(), loop)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise Overloaded(f"{self._queue.maxsize} requests already waiting") from None
        return await pending.future

    def _collect(self, first: _Pending) -> tuple:
        """(the batch starting with `first`, whether a stop was requested)."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                # Whatever is waiting already joins without a wait; then up to the deadline.
                timeout = deadline - time.monotonic()
                nxt = self._queue.get(timeout=timeout) if timeout > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._collect(first)
            started = time.perf_counter()
            try:
                results = self._fn([p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for "
                                       f"{len(batch)} items")
            except Exception as e:  # noqa: BLE001 - every caller of the batch gets it
                logger.exception("batch of %d failed", len(batch))
                results = [e] * len(batch)
            self.stats.busy_s += time.perf_counter() - started
            self.stats.batches += 1
            self.stats.items += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            for pending, result in zip(batch, results):
                try:
                    pending.loop.call_soon_threadsafe(_resolve, pending, result)
                except RuntimeError:  # the caller's event loop is closed
                    pass
