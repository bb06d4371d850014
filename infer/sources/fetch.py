"""Many reads in flight: objects fetched ahead of the decoders, in input order.

Small objects in a store are latency-bound (tens of milliseconds a GET, whatever the
size), so one read at a time per decode thread starves the decoders. `fetch_ahead`
lists the inputs on a thread of its own and keeps up to `threads` reads in flight,
handing the items on in their order with their bytes. Items that need no read (shard
members carrying their bytes, local files) go on in lists of up to READY_CHUNK: one
queue entry for many, not a Future and a put/get each. Items to read go to the threads
in tasks of up to READ_CHUNK, read one after another (a Future and a queue entry per
item cost about a tenth of an S3 GET's client CPU), or one by one while fewer than
`threads` entries wait, so that a short list still has its reads in flight together.
S3 objects with plain keys are read by one `S3Multi` (libcurl's multi interface on a
thread of its own) instead of the threads, which read what it cannot (its `fallback`).
The store settings are read once per call (`stores.store_settings`). What it holds
ahead is bounded: at most 2 x `threads` tasks or lists, and `FETCH_BUDGET_BYTES` of
listed object sizes and carried bytes (at least one entry, whatever its size), so
memory stays flat whatever the prefix size.

A read that gets no answer from its store (no connection, none in time, a 5xx after the
retries) is held back with the items after it (`_Held`) until a read asked later is
answered; STOP_AFTER of them in a row stop the job (`stores.StoreDown`) instead of
making every object after a store went away an error row, which --resume would skip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import stat
import threading
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from cnnbench.infer.decode.probe import file_limit, oversize
from cnnbench.infer.sources import prefixes, s3_multi, stores
from cnnbench.infer.sources.items import Item
from cnnbench.infer.sources.s3_multi import S3Multi

FETCH_BUDGET_BYTES = 256 << 20
UNKNOWN_SIZE = 1 << 20  # what an object of unlisted size is counted as
READY_CHUNK = 32  # items that need no read (shard members, local files) go on in lists
READY_CHUNK_BYTES = 8 << 20  # ... of at most this many bytes (or one item)
READ_CHUNK = 8  # items to read go to the threads in tasks of up to this many
FILES_BESIDE_READS = 256  # files a job opens besides its connections (model, outputs, ...)
_END = object()


def room_for_reads(threads: int) -> int | None:
    """Makes room for `threads` reads in flight among the files this process may open
    (each holds a connection): the soft limit (`ulimit -n`) is raised as far as the hard
    one allows, as servers do. None when there is room; else the most reads in flight
    that fit (a read past the limit fails to connect, and its file would be an error
    row that blames the endpoint)."""
    import resource

    need = threads + FILES_BESIDE_READS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    except (ValueError, OSError):
        raised = soft
    return None if raised >= need else max(raised - FILES_BESIDE_READS, 1)


def read_ahead(threads: int) -> int:
    """The most items `fetch_ahead` holds ahead of the consumer with `threads` reads in
    flight (2 x `threads` tasks of up to READ_CHUNK, budget permitting)."""
    return 2 * threads * READ_CHUNK


def read_source(path: str, settings: tuple | None = None, max_bytes: int | None = None) -> bytes:
    """The bytes of a local file or of an object by URL (retried when transient), read
    with the store `settings` (None: those of now, `stores.store_settings`). A local
    file or object over `max_bytes` (None: `max_file_bytes()`) is refused unread."""
    if stores.is_url(path):
        try:
            return stores.read_bytes(path, settings, file_limit(max_bytes))
        except stores.StoreError as e:
            raise prefixes.missing_object(path, e) from e.__cause__
    with open_regular(path) as f:
        stores.check_size(os.fstat(f.fileno()).st_size, file_limit(max_bytes))
        return f.read()


def open_regular(path: str, buffering: int = -1) -> BinaryIO:
    """A local file opened for reading; anything else refused (OSError). Opened without
    waiting (a named pipe with no writer would block the reader for good), then checked:
    a pipe or a device may never end, and a folder is no file's bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(f"not a regular file but {_file_type(mode)}")
    return open(fd, "rb", buffering)


def _file_type(mode: int) -> str:
    for test, what in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return what
    return "a special file"


def read_item(item: Item, settings: tuple | None = None, max_bytes: int | None = None) -> bytes:
    """An item's bytes: those the listing read (a shard member), else the member's
    range of its shard, else its file's. One that the listing sized over `max_bytes`
    (None: `max_file_bytes()`), or a local file over it, is refused unread."""
    if item.data is not None:
        return item.data
    stores.check_size(item.size, file_limit(max_bytes))
    if item.offset is not None and item.size is not None:
        return read_range(item.path, item.offset, item.size, settings)
    if item.size is not None and stores.is_url(item.path):  # sized by its listing already:
        return stores.read_bytes(item.path, settings)  # no store is asked for it again
    return read_source(item.path, settings, max_bytes)


def read_range(path: str, offset: int, size: int, settings: tuple | None = None) -> bytes:
    """`size` bytes at `offset` of a local file or an object by URL (a member of a tar
    shard, read alone)."""
    if stores.is_url(path):
        data = stores.read_range(path, offset, size, settings)
    else:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    if len(data) != size:
        raise OSError(f"the shard ends early: {len(data)} of {size} bytes at byte {offset}")
    return data


@dataclass(frozen=True)
class Unanswered(Item):
    """An item whose read got no answer from its store (`stores.NoAnswer`), with its
    reason, and the count of such reads when it failed (`_Unanswered.seen`)."""

    seen: int = 0


class _Unanswered:
    """Reads that got no answer, counted as they fail (on the reading threads); what
    the count was when a task was submitted tells whether its reads started after a
    failure. `stop`: the consumer has gone, reads left in a task are not made."""

    def __init__(self, stop: threading.Event) -> None:
        self.seen = 0
        self.stop = stop
        self.lock = threading.Lock()

    def failed(self, item: Item, e: OSError) -> Unanswered:
        with self.lock:
            self.seen += 1
            seen = self.seen
        return Unanswered(
            item.path, item.name, str(e), size=item.size, offset=item.offset, seen=seen
        )


def _fetch(
    items: list[Item], settings: tuple, max_bytes: int | None, unanswered: _Unanswered
) -> list[Item]:
    """The items with their bytes, or with the reason they could not be read."""
    done = []
    for item in items:
        try:
            done.append(dataclasses.replace(item, data=read_item(item, settings, max_bytes)))
        except stores.NoAnswer as e:
            done.append(unanswered.failed(item, e))
            if unanswered.stop.is_set():  # nobody takes the rest: not another wait
                break
        except OSError as e:
            done.append(dataclasses.replace(item, error=str(e)))
    return done


STOP_AFTER = 16  # reads with no answer, none answered after them, that stop a job
# After its retries, a read of a store that works fails for want of an answer perhaps
# once in many thousands (a 5xx three times running); 16 with no read answered after
# them, at the 64 reads in flight of a job by URL, happen when the store is gone or
# stopped answering. A job then stops within about one read's retries of that moment
# (a refused connection: at once), instead of making each later object an error row.


class _Held:
    """Items held back from the consumer, in order, while reads get no answer: an
    unanswered read, and every item after it. Released as they are (unanswered reads as
    error rows, as before) once a read submitted after the last unanswered one is
    answered, or the input ends; STOP_AFTER unanswered with none answered after them
    stop the job (`stores.StoreDown`). Reads submitted before an unanswered one was seen
    may have been answered before the store went: they say nothing, and wait too."""

    def __init__(self, max_bytes: int) -> None:
        self.items: list[Item] = []
        self.failures = 0  # unanswered reads among them
        self.last_seen = 0  # the latest one's `seen`
        self.bytes = 0
        self.max_bytes = max_bytes  # held past this, they go on (as before this held them)

    def read(self, item: Item, since: int) -> list[Item]:
        """What goes on now, for the read `item` of a task submitted when `since`
        unanswered reads were seen; a read without an answer is held, or stops the job."""
        if isinstance(item, Unanswered):
            self.items.append(item)
            self.failures += 1
            self.last_seen = max(self.last_seen, item.seen)
            if self.failures >= STOP_AFTER:
                raise stores.StoreDown(
                    f"the store stopped answering: {self.failures} reads in a row failed "
                    f"({item.error})"
                )
            return []
        if not self.items:
            return [item]
        if since >= self.last_seen:  # asked after the last one failed, and answered
            return [*self.release(), item]
        return self.hold(item)

    def hold(self, item: Item) -> list[Item]:
        """`item` held behind the unanswered reads (none when nothing is held)."""
        if not self.items:
            return [item]
        self.items.append(item)
        self.bytes += len(item.data) if item.data is not None else 0
        return self.release() if self.bytes > self.max_bytes else []

    def release(self) -> list[Item]:
        items = self.items
        self.items, self.failures, self.last_seen, self.bytes = [], 0, 0, 0
        return items


class DecodeReads:
    """Reads made by the decode threads themselves (`--io-threads 0`: no reads ahead),
    told apart as `fetch_ahead` tells them: a read that gets no answer from its store
    waits (its thread does) until a read started after it is answered, then it is an
    error row, as before (a passing failure, or that object's own). Where no other read
    is in flight to tell, the thread reads again the object last answered (or its own,
    before any was). STOP_AFTER reads in a row with none answered after them stop the
    job (`stores.StoreDown`) instead of making each object after a store went away an
    error row, which --resume would skip."""

    WAIT_S = 1.0  # longest wait for another read's answer before asking again

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seen = 0  # reads without an answer, ever
        self.in_row = 0  # ... with none started after them answered
        self.reading = 0  # reads in flight
        self.answered = 0  # the most `seen` any answered read started after
        self.last_good: Item | None = None  # the object read last
        self.down: stores.StoreDown | None = None

    def __call__(self, item: Item, max_bytes: int | None = None) -> bytes:
        """`read_item`, held while its store gives no answer (see the class)."""
        if item.data is not None or not stores.is_url(item.path):
            return read_item(item, max_bytes=max_bytes)
        failed: stores.NoAnswer | None = None  # this item's read, unanswered
        while True:
            with self.cond:
                if self.down is not None:
                    raise self.down
                target = self.last_good if failed and self.last_good else item
                since = self.seen
                self.reading += 1
            try:
                data = read_item(target, max_bytes=max_bytes)
            except stores.NoAnswer as e:
                failed = failed or e
                if self._told(e):
                    raise failed from None
                continue
            finally:
                with self.cond:
                    self.reading -= 1
                    self.cond.notify_all()
            with self.cond:
                self.answered = max(self.answered, since)
                if since >= self.seen:
                    self.in_row = 0
                self.last_good = target
                self.cond.notify_all()
            if failed is None or target is item:
                return data
            raise failed  # the store answers another read, asked after this one failed

    def _told(self, e: stores.NoAnswer) -> bool:
        """After a read failing with `e`: True when a read started after it was answered
        (the item's failure is its own: an error row); False to ask again; StoreDown
        once STOP_AFTER in a row got no answer."""
        with self.cond:
            self.seen += 1
            self.in_row += 1
            mine = self.seen
            if self.in_row >= STOP_AFTER and self.down is None:
                self.down = stores.StoreDown(
                    f"the store stopped answering: {self.in_row} reads in a row failed ({e})"
                )
            self.cond.wait_for(
                lambda: self.down is not None or self.answered >= mine or self.reading <= 1,
                timeout=self.WAIT_S,
            )
            if self.down is not None:
                raise self.down
            return self.answered >= mine


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
    items: Iterable[Item],
    threads: int,
    budget_bytes: int = FETCH_BUDGET_BYTES,
    max_bytes: int | None = None,
    whole_job: bool = True,
) -> Generator[Item, None, None]:
    """`items` in order; those named by URL come with their bytes (or their error),
    read by `threads` reads in flight. The listing itself runs ahead on a thread, so a
    slow listing page overlaps the work; its errors are raised here, in order. An item
    listed over `max_bytes` (None: `max_file_bytes()`) comes with its error, unread.
    `threads` 0: the items as they come, read later by the decode threads. `whole_job`
    False: `items` are a part of a job (a Ray decode task's batch), whose end says
    nothing about the store: reads still without an answer there are asked once more
    (`_settled`) instead of becoming error rows."""
    if threads == 0:
        yield from items
        return
    room_for_reads(threads)  # the run checked it (check_config); a Ray worker just makes it
    ahead: queue.Queue = queue.Queue(maxsize=2 * threads)
    budget = _Budget(budget_bytes)
    stop = threading.Event()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="cnnbench-fetch")
    settings = stores.store_settings()  # once: reading them costs a quarter of a GET
    limit = file_limit(max_bytes)
    unanswered = _Unanswered(stop)

    def fallback(item: Item) -> Future:
        return pool.submit(_fetch, [item], settings, max_bytes, unanswered)

    def hand_on(ready: list[Item], held: int) -> bool:
        return budget.take(held, stop) and _put(ahead, (ready, held, 0), stop)

    def submit(reads: list[Item], cost: int, multi: S3Multi | None) -> bool:
        if not budget.take(cost, stop):
            return False
        since = unanswered.seen  # before its reads start
        if multi:
            task = multi.submit(reads)
        else:
            task = pool.submit(_fetch, reads, settings, max_bytes, unanswered)
        return _put(ahead, (task, cost, since), stop)

    multis: list[S3Multi | None] = []  # made for the first S3 object it can read

    def multi_for(item: Item) -> S3Multi | None:
        """The S3Multi that reads `item`, or None: the threads do."""
        if item.offset is not None or not s3_multi.reads(item.path):
            return None
        if not multis:
            try:
                multis.append(S3Multi(settings, threads, fallback, limit))
            except Exception:  # the threads read them, and say what is wrong
                multis.append(None)
        return multis[0]

    def lister() -> None:
        ready: list[Item] = []  # items that need no read, handed on in lists
        held = 0  # the bytes they carry
        reads: list[Item] = []  # items to read, read in order by one task
        cost = 0  # their listed sizes
        engine = None  # what reads them (an S3Multi, or None: the threads)
        try:
            for item in items:
                if item.data is None and (why := oversize(item.size, limit)):
                    item = dataclasses.replace(item, error=why)
                if item.data is not None or item.error is not None or not stores.is_url(item.path):
                    if reads and not submit(reads, cost, engine):
                        return
                    reads, cost = [], 0
                    ready.append(item)
                    held += len(item.data) if item.data is not None else 0
                    if len(ready) >= READY_CHUNK or held >= READY_CHUNK_BYTES:
                        if not hand_on(ready, held):
                            return
                        ready, held = [], 0
                    continue
                if ready and not hand_on(ready, held):
                    return
                ready, held = [], 0
                multi = multi_for(item)
                if reads and multi is not engine and not submit(reads, cost, engine):
                    return
                if multi is not engine:
                    reads, cost, engine = [], 0, multi
                reads.append(item)
                cost += item.size if item.size is not None else UNKNOWN_SIZE
                # A task per READ_CHUNK items, or sooner while reads are few in flight
                if len(reads) >= READ_CHUNK or ahead.qsize() < threads:
                    if not submit(reads, cost, engine):
                        return
                    reads, cost = [], 0
            if reads and not submit(reads, cost, engine):
                return
            if ready and not hand_on(ready, held):
                return
            _put(ahead, (_END, 0, 0), stop)
        except BaseException as e:  # handed to the consumer, raised there in order
            if (not reads or submit(reads, cost, engine)) and (not ready or hand_on(ready, held)):
                _put(ahead, (e, 0, 0), stop)

    thread = threading.Thread(target=lister, name="cnnbench-lister", daemon=True)
    thread.start()
    held = _Held(budget_bytes)
    known: Item | None = None  # the last item whose read was answered (a part of a job)
    try:
        while True:
            got, cost, since = ahead.get()
            if got is _END:
                left = held.release()
                yield from left if whole_job else _settled(left, settings, max_bytes, known)
                return
            if isinstance(got, BaseException):  # the held items are read again by a --resume
                raise got
            if isinstance(got, list):
                budget.give(cost)
                if held.items:
                    for item in got:
                        yield from held.hold(item)
                else:
                    yield from got
                continue
            fetched = got.result()
            budget.give(cost)
            for item in fetched:
                if item.error is None and not whole_job:  # asked again if the end is unsure
                    known = item
                if item.error is None and not held.items:
                    yield item
                else:
                    yield from held.read(item, since)
    finally:
        stop.set()
        budget.give(0)
        while thread.is_alive():  # unblock a lister waiting to put
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.05)
        for multi in multis:
            if multi is not None:
                multi.close()
        pool.shutdown(wait=True, cancel_futures=True)


def _settled(
    items: list[Item], settings: tuple, max_bytes: int | None, known: Item | None
) -> list[Item]:
    """Items held at the end of a part of a job (`fetch_ahead`), each read without an
    answer asked once more, one after another: an answer now (the object, or why not)
    takes its place. Where one gets no answer again, `known` (a read of this part that
    was answered) is read again too, as a read asked after it: answered, the store
    works and those objects fail alone (error rows, as in a whole job); else, or with no
    such read, the job stops (`stores.StoreDown`), as STOP_AFTER in a row stop it. A Ray
    decode task reads one batch: unanswered reads at its end were error rows, so a
    store that went away made every object after it one, and the job exited 0
    (--resume skips error rows)."""
    done: list[Item] = []
    failed: Unanswered | None = None
    for item in items:
        if isinstance(item, Unanswered):
            plain = Item(item.path, item.name, size=item.size, offset=item.offset)
            (item,) = _fetch([plain], settings, max_bytes, _Unanswered(threading.Event()))
            failed = item if isinstance(item, Unanswered) else failed
        done.append(item)
    if failed is None:
        return done
    if known is not None:
        plain = Item(known.path, known.name, size=known.size, offset=known.offset)
        (again,) = _fetch([plain], settings, max_bytes, _Unanswered(threading.Event()))
        if not isinstance(again, Unanswered):
            return done
    raise stores.StoreDown(
        f"the store stopped answering: a read failed twice, none answered after it ({failed.error})"
    )


def _put(q: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    """Put, unless the consumer has gone; False then."""
    while not stop.is_set():
        try:
            q.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
