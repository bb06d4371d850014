"""Many reads in flight: objects fetched ahead of the decoders, in input order.

Small objects in a store are latency-bound (tens of milliseconds a GET, whatever the
size), so one read at a time per decode thread starves the decoders. `fetch_ahead`
lists the inputs on a thread of its own and keeps up to `threads` reads in flight,
handing the items on in their order with their bytes. What it holds ahead is bounded:
at most 2 x `threads` items and `FETCH_BUDGET_BYTES` of listed object sizes (at least
one item, whatever its size), so memory stays flat whatever the prefix size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from cnnbench.infer.sources import stores
from cnnbench.infer.sources.items import Item

FETCH_BUDGET_BYTES = 256 << 20
UNKNOWN_SIZE = 1 << 20  # what an object of unlisted size is counted as
_END = object()


def read_source(path: str) -> bytes:
    """The bytes of a local file or of an object by URL (retried when transient)."""
    if stores.is_url(path):
        return stores.read_bytes(path)
    with open(path, "rb") as f:
        return f.read()


def read_item(item: Item) -> bytes:
    """An item's bytes: those the listing read (a shard member), else the member's
    range of its shard, else its file's."""
    if item.data is not None:
        return item.data
    if item.offset is not None and item.size is not None:
        return read_range(item.path, item.offset, item.size)
    return read_source(item.path)


def read_range(path: str, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` of a local file or an object by URL (a member of a tar
    shard, read alone)."""
    if stores.is_url(path):
        data = stores.read_range(path, offset, size)
    else:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    if len(data) != size:
        raise OSError(f"the shard ends early: {len(data)} of {size} bytes at byte {offset}")
    return data


def _fetch(item: Item) -> Item:
    """The item with its bytes, or with the reason they could not be read."""
    try:
        return dataclasses.replace(item, data=read_item(item))
    except OSError as e:
        return dataclasses.replace(item, error=str(e))


def _done(item: Item) -> Future:
    f: Future = Future()
    f.set_result(item)
    return f


class _Budget:
    """Bytes held ahead, waited on by the lister and freed by the consumer."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self.cond = threading.Condition()

    def take(self, n: int, stop: threading.Event) -> bool:
        with self.cond:
            self.cond.wait_for(
                lambda: self.used + n <= self.total or not self.used or stop.is_set()
            )
            self.used += n
            return not stop.is_set()

    def give(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


def fetch_ahead(
    items: Iterable[Item], threads: int, budget_bytes: int = FETCH_BUDGET_BYTES
) -> Generator[Item, None, None]:
    """`items` in order; those named by URL come with their bytes (or their error),
    read by `threads` reads in flight. The listing itself runs ahead on a thread, so a
    slow listing page overlaps the work; its errors are raised here, in order.
    `threads` 0: the items as they come, read later by the decode threads."""
    if threads == 0:
        yield from items
        return
    ahead: queue.Queue = queue.Queue(maxsize=2 * threads)
    budget = _Budget(budget_bytes)
    stop = threading.Event()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="cnnbench-fetch")

    def lister() -> None:
        try:
            for item in items:
                if item.data is not None or item.error is not None or not stores.is_url(item.path):
                    cost, future = 0, _done(item)
                else:
                    cost = item.size if item.size is not None else UNKNOWN_SIZE
                    if not budget.take(cost, stop):
                        return
                    future = pool.submit(_fetch, item)
                if not _put(ahead, (future, cost), stop):
                    return
            _put(ahead, (_END, 0), stop)
        except BaseException as e:  # handed to the consumer, raised there in order
            _put(ahead, (e, 0), stop)

    thread = threading.Thread(target=lister, name="cnnbench-lister", daemon=True)
    thread.start()
    try:
        while True:
            got, cost = ahead.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            item = got.result()
            budget.give(cost)
            yield item
    finally:
        stop.set()
        budget.give(0)
        while thread.is_alive():  # unblock a lister waiting to put
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.05)
        pool.shutdown(wait=True, cancel_futures=True)


def _put(q: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    """Put, unless the consumer has gone; False then."""
    while not stop.is_set():
        try:
            q.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
