"""The folder pipeline: scan -> threaded decode into batch buffers -> session.run -> rows.

Decoding of the next batches runs on a thread pool (OpenCV releases the GIL) while the
session runs the current one (ONNX Runtime releases it too). At most `DEPTH` batches are
in flight, so memory stays flat whatever the folder size. Every file ends as exactly one
row, in the predictions output or in the errors output (CSV, JSON lines or Parquet, see
sinks/); rows are committed as they come, so a killed run can be finished with `resume`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, islice
from typing import TYPE_CHECKING

import cv2
import numpy as np

from cnnbench.files import Report, sha256_file
from cnnbench.infer.decode.decoders import DEFAULT_LIMITS, DecodeLimits
from cnnbench.infer.decode.images import load_items
from cnnbench.infer.engines.job import (
    IO_THREADS,
    InferConfig,
    InferSummary,
    StageClock,
    batch_size_for,
    batched,
    check_batch_memory,
    check_config,
    class_folders,
    describe_format,
    idle_seconds,
    iter_items,
    job_key,
    nothing_to_resume,
    prediction_row,
    running_precision,
    score_earlier,
    top_indices,
    write_summary,
)
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.header import read_graph_view
from cnnbench.infer.runtime.preprocess import (
    InputFormat,
    check_top_k,
    resolve_input_format,
)
from cnnbench.infer.runtime.runner import DEFAULT_BATCH_SIZE, Runner, check_output, make_runner
from cnnbench.infer.runtime.session import (
    Provider,
    Session,
    active_provider,
    choose_session,
    gpu_missing,
)
from cnnbench.infer.sinks.formats import Format, fieldnames, format_of
from cnnbench.infer.sinks.output import output_locks
from cnnbench.infer.sinks.parts import Parts
from cnnbench.infer.sinks.sink import AppendSink, BlockSink, Outcome, Sink
from cnnbench.infer.sources import stores
from cnnbench.infer.sources.fetch import DecodeReads, fetch_ahead
from cnnbench.infer.sources.items import Item
from cnnbench.signals import StopOnSignal

if TYPE_CHECKING:
    from tqdm import tqdm

DEPTH = 3  # batches in flight: one running, two decoding (plus one per extra run in flight)


DECODE_NICENESS = 10  # decode threads yield the cores to ONNX Runtime's when both want them


def _decode_thread_setup() -> None:
    """One OpenCV thread per decode thread, and a lower priority than the session's
    threads: a decode that preempts one of ORT's barrier-synchronised intra-op threads
    stalls the whole operator, while a decode that waits only uses the cores ORT leaves
    idle. On a decode-bound run ORT is mostly idle, so decoding loses nothing. Linux
    applies the niceness per thread; elsewhere the call may fail, and nothing changes."""
    cv2.setNumThreads(1)
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)


class _Decoder:
    """Fills preallocated uint8 batch buffers on a thread pool, a few images per task."""

    def __init__(
        self,
        fmt: InputFormat,
        batch_size: int,
        workers: int,
        limits: DecodeLimits = DEFAULT_LIMITS,
        truncated: list[str] | None = None,
        depth: int = DEPTH,
    ) -> None:
        self.fmt, self.workers, self.limits, self.truncated = fmt, workers, limits, truncated
        self.shape = (batch_size, fmt.size[0], fmt.size[1], fmt.channels)
        self.free = deque(np.zeros(self.shape, dtype=np.uint8) for _ in range(depth))
        self.pool = ThreadPoolExecutor(
            workers, thread_name_prefix="cnnbench-decode", initializer=_decode_thread_setup
        )
        self.reads = DecodeReads()  # with --io-threads 0, a store gone stops the job

    def _load(self, items: list[Item], out: np.ndarray) -> list[str | None]:
        return load_items(
            items,
            out,
            self.fmt.bgr,
            self.fmt.policy,
            limits=self.limits,
            truncated=self.truncated,
            read=self.reads,
        )

    def submit(self, items: list[Item]) -> tuple[list[Item], np.ndarray, list[Future]]:
        buf = self.free.popleft()
        step = max(1, -(-len(items) // (2 * self.workers)))
        futures = [
            self.pool.submit(self._load, items[i : i + step], buf[i : min(i + step, len(items))])
            for i in range(0, len(items), step)
        ]
        return items, buf, futures

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class Scored:
    """One batch after the model: why each file could not be read (None: it was), the
    readable ones' positions, and their scores."""

    reasons: list[str | None]
    ok: list[int]
    probs: np.ndarray | None


class _Writer:
    """Runs finished batches through the model and hands their rows, in input order, to
    the sink."""

    def __init__(
        self, runner: Runner, fmt: InputFormat, cfg: InferConfig, summary: InferSummary, truth: bool
    ) -> None:
        self.runner, self.top_k, self.summary = runner, cfg.top_k, summary
        self.labels = fmt.labels
        self.truth = set(fmt.labels) if truth else None
        self.clock = StageClock()

    def finish(self, items: list[Item], buf: np.ndarray, futures: list[Future], sink: Sink) -> None:
        self.write(items, self.score(buf, futures), sink)

    def score(self, buf: np.ndarray, futures: list[Future]) -> Scored:
        """Wait for the batch's decodes and run the readable images: safe to call from
        several threads at once (each on its own buffer)."""
        with self.clock.timing("decode"):
            reasons = [r for f in futures for r in f.result()]
        ok = [i for i, r in enumerate(reasons) if r is None]
        probs = None
        if ok:
            with self.clock.timing("model"):
                if len(ok) < len(reasons):
                    buf[: len(ok)] = buf[ok]  # compact the readable images to the front
                probs = self.runner.run(buf, len(ok))
        return Scored(reasons, ok, probs)

    def write(self, items: list[Item], scored: Scored, sink: Sink) -> None:
        """The batch's rows, in input order, to the sink: one batch after the other."""
        with self.clock.timing("write"):
            self._write(items, scored, sink)

    def _write(self, items: list[Item], scored: Scored, sink: Sink) -> None:
        outcomes = [
            Outcome({"path": item.name, "error": why}, True)
            for item, why in zip(items, scored.reasons, strict=True)
        ]
        if scored.probs is not None:
            top = top_indices(scored.probs, self.top_k)
            for i, p, idx in zip(scored.ok, scored.probs, top, strict=True):
                name = items[i].name
                if not np.isfinite(p).all():
                    why = "the model's output for this image is not finite (NaN or inf)"
                    outcomes[i] = Outcome({"path": name, "error": why}, True)
                else:
                    row = prediction_row(name, idx, p[idx], self.labels, self.truth, self.summary)
                    outcomes[i] = Outcome(row, False)
        written = sum(not o.failed for o in outcomes)
        self.summary.images += written
        self.summary.errors += len(items) - written
        sink.write(outcomes)


class _NoBar:
    """What the loop calls on a progress bar, where none is shown."""

    n = 0

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


def _progress(enabled: bool) -> tqdm | _NoBar:
    """A bar on a terminal only (as tqdm's disable=None decides), never with
    --no-progress; tqdm is imported only when a bar shows (start-up counts)."""
    isatty = getattr(sys.stderr, "isatty", None)
    if not enabled or isatty is None or not isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(unit="img", file=sys.stderr, dynamic_ncols=True)


def io_threads_for(cfg: InferConfig) -> int:
    """--io-threads, else IO_THREADS when an input may be read over the network (a URL,
    a list of paths), else 0: local files are read by the decode threads, as they always
    were, and a local shard's members come with their bytes from the listing itself (a
    thread listing it ahead cost 7 us more a member than listing it in the loop:
    docs/benchmarks.md)."""
    if cfg.io_threads is not None:
        return cfg.io_threads
    remote = (t.startswith("@") or stores.is_url(t) for t in cfg.inputs)
    return IO_THREADS if any(remote) else 0


def open_sink(cfg: InferConfig, columns: list[str], model_sha256: str) -> Sink:
    """Appended files for CSV and JSON lines, blocks of parts for Parquet."""
    fmt = format_of(cfg.output)
    key = job_key(cfg, model_sha256, columns)
    if fmt is not Format.PARQUET:
        return AppendSink(fmt, cfg.output, cfg.errors_path, columns, cfg.resume, key)
    parts = Parts(cfg.output, cfg.errors_path, key, cfg.resume)
    return BlockSink(parts, cfg.block_size, columns)


def run_infer(cfg: InferConfig, report: Report | None = None) -> InferSummary:
    """Classify every image under the inputs; write predictions and errors CSV.

    `report` receives progress lines meant for the user (the provider chosen, and why).

    The session is built on a thread (ONNX Runtime releases the GIL while it optimises
    the graph): meanwhile the inputs are listed (and fetched, where they are read over
    the network) and the first batches decode, where the model file's header already
    says how (`_Head`). Nothing is written before the session is there: its errors, and
    every check made on it, come first as before.
    """
    inputs = check_config(cfg)
    # Decoder threads share the cores with ORT's: idle ORT threads must not spin.
    first_batch = cfg.batch_size or DEFAULT_BATCH_SIZE[Provider.OPENVINO]
    runtime = dataclasses.replace(
        cfg.runtime, spinning=False, streams=cfg.concurrency, first_batch=first_batch
    )
    head: _Head | None = None
    opener = ThreadPoolExecutor(2, thread_name_prefix="cnnbench-session")
    try:
        try:
            opening = opener.submit(choose_session, cfg.model, runtime)
            head = _Head.start(cfg, inputs, opener)
            # the job's key (sinks), while the session builds: 0.13 s per 100 MB of model
            digest = opener.submit(sha256_file, cfg.model)
            session, note = opening.result()
        finally:  # the head's class-folder check may still be listing: the run waits for it
            opener.shutdown(wait=False)
        return _run_session(cfg, inputs, session, note, head, report, digest)
    except BaseException:
        if head is not None:
            head.close()
        raise


def _run_session(
    cfg: InferConfig,
    inputs: tuple[str, ...],
    session: Session,
    note: str,
    head: _Head | None,
    report: Report | None,
    model_sha256: Future,
) -> InferSummary:
    fmt = resolve_input_format(session, cfg.foreign)
    check_top_k(fmt, cfg.top_k)
    provider = active_provider(session)
    batch_size = batch_size_for(fmt, cfg.batch_size, provider)
    check_batch_memory(fmt, batch_size, DEPTH + cfg.concurrency - 1)
    say = report or (lambda line: None)
    if cfg.concurrency > 1 and provider not in (Provider.CPU, Provider.OPENVINO):
        raise InferError(
            f"{cfg.concurrency} runs in flight apply to cpu and openvino; "
            f"{provider.value} runs one batch at a time"
        )
    in_flight = f", {cfg.concurrency} batches in flight" if cfg.concurrency > 1 else ""
    say(f"{note}, batch size {batch_size}{in_flight}")
    for line in describe_format(fmt):
        say(line)
    summary = InferSummary(
        provider=provider.value,
        batch_size=batch_size,
        precision=running_precision(session, fmt),
        concurrency=cfg.concurrency,
    )
    summary.preprocessing = fmt.describe()
    if head is not None and head.fmt.labels == fmt.labels:
        with_truth, unmatched = head.classes.result()
    else:
        with_truth, unmatched = class_folders(inputs, fmt.labels)
    if unmatched:
        say(unmatched)
    if head is not None and head.unlisted is not None:  # before any output is made
        head.close()
        raise head.unlisted
    fetched = head.fetched if head is not None else None  # the head's reads ahead
    fetch_here = head is None
    if head is None:
        items = iter_items(inputs, cfg, summary.skipped_by_extension)
    elif not head.decodes_for(fmt, batch_size):
        # the session read the file otherwise: its items decode again, its way; they are
        # not listed again (a list from a pipe is read once)
        items = head.relisted()
        summary.skipped_by_extension = head.skipped
        head = None
    else:
        items = head.rest
        summary.skipped_by_extension, summary.truncated = head.skipped, head.truncated
    runner = make_runner(session, fmt, provider, cfg.runtime.device_id)
    if fmt.num_classes is None:  # the file does not say its class count: run one batch
        check_output(runner, np.zeros((batch_size, *fmt.size, fmt.channels), dtype=np.uint8))
    with output_locks(cfg.output, cfg.errors_path):
        sink = open_sink(cfg, fieldnames(cfg.top_k, with_truth), model_sha256.result())
        if cfg.resume and not sink.resumed:
            say(nothing_to_resume(cfg))
        finished = False
        try:
            writer = _Writer(runner, fmt, cfg, summary, with_truth)
            ready = sink.pending(items)
            fetching = fetched
            if fetch_here:
                ready = fetching = fetch_ahead(
                    ready, io_threads_for(cfg), max_bytes=cfg.limits.max_bytes
                )
            with (
                contextlib.closing(fetching) if fetching else contextlib.nullcontext(),
                _startup_objects_frozen(),
            ):
                _run_loop(ready, writer, sink, fmt, cfg, summary, head)
            finished = not summary.interrupted
            score_earlier(summary, sink.earlier, writer.truth)
        finally:
            summary.skipped, summary.committed_in = sink.skipped, sink.where
            sink.close(finished)
    summary.scores = runner.scorer.describe()
    if cfg.summary:
        write_summary(cfg, summary)
    return summary


@contextlib.contextmanager
def _startup_objects_frozen() -> Iterator[None]:
    """The objects made before the batches (modules, the session, store clients: some
    120,000 in a job by s3://) left out of the cyclic garbage collector's passes while
    the batches run (`gc.freeze`), and handed back to it after. Items read ahead live
    long enough to reach its oldest generation, and each full pass then walked the
    whole heap: one a 5,000-photo job by s3://, 6-9 us a photo (docs/benchmarks.md).
    Objects still die as their references go; only cycles among them wait for the end.
    Left as is where the process froze objects itself (after its own fork, say)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _job_decoder(
    cfg: InferConfig, fmt: InputFormat, batch_size: int, truncated: list[str]
) -> _Decoder:
    """A job's decoder: --workers threads (every core by default) filling DEPTH batch
    buffers, and one more per extra run in flight."""
    workers = cfg.workers or os.cpu_count() or 1
    return _Decoder(fmt, batch_size, workers, cfg.limits, truncated, DEPTH + cfg.concurrency - 1)


@dataclass
class _Head:
    """The first batches of a job, listed, fetched and decoding while the session is
    built, in the format the model file's header gives (infer/runtime/header.py), and
    whether the inputs have class folders for the header's labels (for a prefix, listing
    requests: `classes`, asked on `pool` meanwhile)."""

    fmt: InputFormat
    batch_size: int
    decoder: _Decoder
    submitted: list[tuple[list[Item], np.ndarray, list[Future]]]
    rest: Iterator[Item]  # the items after the submitted batches (an error: raised there)
    skipped: Counter  # files left out by extension
    truncated: list[str]
    started: float  # when the first batch was submitted
    classes: Future  # class_folders for the header's labels
    fetched: Generator[Item, None, None] | None  # the items' reads ahead, if fetched
    unlisted: InferError | None = None  # why the inputs gave no first item (raised in turn)

    @classmethod
    def start(cls, cfg: InferConfig, inputs: tuple[str, ...], pool: Executor) -> _Head | None:
        """None where the session is not ONNX Runtime's CPU one, where the format or the
        batch size are not sure before the session is there, or where the items pass
        through the sink first (--resume, Parquet's blocks): those runs start as before.
        Items by URL or from a list are fetched ahead here, as the run would
        (`fetch_ahead`); an error listing or reading them is raised where the run takes
        the items after the submitted batches, after the session's own checks."""
        if cfg.resume or format_of(cfg.output) is Format.PARQUET:
            return None
        if not _cpu_session_ahead(cfg.runtime.provider):
            return None
        view = read_graph_view(cfg.model)
        if view is None:
            return None
        skipped: Counter = Counter()
        try:
            fmt = resolve_input_format(view, cfg.foreign)
            batch_size = batch_size_for(fmt, cfg.batch_size, Provider.CPU)
            check_batch_memory(fmt, batch_size, DEPTH + cfg.concurrency - 1)
        except InferError:
            return None  # the same check, made on the session, says it in its turn
        classes = pool.submit(class_folders, inputs, fmt.labels)
        try:
            items = iter_items(inputs, cfg, skipped)
        except InferError as e:  # raised in its turn: a list from a pipe is not read twice
            decoder = _job_decoder(cfg, fmt, batch_size, [])
            return cls(fmt, batch_size, decoder, [], iter(()), skipped, [], 0.0, classes, None, e)
        threads = io_threads_for(cfg)
        fetched = fetch_ahead(items, threads, max_bytes=cfg.limits.max_bytes) if threads else None
        rest = fetched or items
        truncated: list[str] = []
        decoder = _job_decoder(cfg, fmt, batch_size, truncated)
        start = time.perf_counter()
        # `batched` takes exactly a batch of items at a time: `rest` goes on after these
        submitted = []
        try:
            for batch in islice(batched(rest, batch_size), len(decoder.free)):
                submitted.append(decoder.submit(batch))
        except Exception as e:  # the run raises it in its turn, after the session's checks
            rest = _raising(e)
        except BaseException:  # Ctrl-C: nothing is left running
            if fetched is not None:
                fetched.close()
            decoder.close()
            raise
        return cls(
            fmt, batch_size, decoder, submitted, rest, skipped, truncated, start, classes, fetched
        )

    def decodes_for(self, fmt: InputFormat, batch_size: int) -> bool:
        """The session's format decodes the same pixels into the same batches."""
        mine = (self.fmt.size, self.fmt.channels, self.fmt.bgr, self.fmt.policy)
        return mine == (fmt.size, fmt.channels, fmt.bgr, fmt.policy) and (
            self.batch_size == batch_size
        )

    def relisted(self) -> Iterator[Item]:
        """The items, from the first, for a run that decodes them otherwise: the head's
        decoding stops; its reads ahead go on (`fetched`: the caller closes it)."""
        self.decoder.close()
        return chain([item for items, _, _ in self.submitted for item in items], self.rest)

    def close(self) -> None:
        if self.fetched is not None:
            self.fetched.close()
        self.decoder.close()


def _raising(error: Exception) -> Iterator[Item]:
    """An iterator that raises `error` when first asked for an item."""
    raise error
    yield  # a generator: raised when iterated, not when made


def _until_failure(batches: Iterable[list[Item]], failed: list[Exception]) -> Iterator[list[Item]]:
    """The batches until the inputs fail mid-run (a store that stopped answering, a
    listing that broke off): the failure is put in `failed`, to be raised once the
    batches in flight are written."""
    try:
        yield from batches
    except Exception as e:
        failed.append(e)


def _cpu_session_ahead(asked: Provider) -> bool:
    """True when the session will be ONNX Runtime's CPU one (asked for, or `auto` on a
    machine without a usable GPU driver). Only there do the first batches decode ahead:
    its build (a few tenths of a second) is about what the decoders fill DEPTH batches in,
    while OpenVINO's compile or TensorRT's engine build run far longer than that, and the
    batches' time would mostly hold the build."""
    if asked is Provider.AUTO:
        return gpu_missing() is not None
    return asked is Provider.CPU


def _run_loop(
    items: Iterable[Item],
    writer: _Writer,
    sink: Sink,
    fmt: InputFormat,
    cfg: InferConfig,
    summary: InferSummary,
    head: _Head | None = None,
) -> None:
    """Keep DEPTH batches in flight (and one more per extra run in flight); finish them
    in order; stop cleanly on Ctrl-C. `head`: the first batches, already decoding (the
    batches' time then starts when the first of them was submitted)."""
    if head is None:
        decoder = _job_decoder(cfg, fmt, summary.batch_size, summary.truncated)
    else:
        decoder = head.decoder
    writer.runner.warm_up(np.zeros(decoder.shape, dtype=np.uint8))
    progress = _progress(cfg.progress)
    pending: deque = deque()
    # runs in flight: the model runs on this many threads, rows are written in order here
    runs = ThreadPoolExecutor(cfg.concurrency) if cfg.concurrency > 1 else None

    def queue(batch_items: list[Item], buf: np.ndarray, futures: list[Future]) -> None:
        scored = runs.submit(writer.score, buf, futures) if runs else None
        pending.append((batch_items, buf, futures, scored))

    def finish_oldest() -> None:
        batch_items, buf, futures, scored = pending.popleft()
        if scored is None:
            writer.finish(batch_items, buf, futures, sink)
        else:
            writer.write(batch_items, scored.result(), sink)
        decoder.free.append(buf)
        progress.update(summary.images + summary.errors - progress.n)

    start = time.perf_counter() if head is None else head.started
    idle, loop_start = idle_seconds(), time.perf_counter()
    failed: list[Exception] = []
    try:
        with StopOnSignal() as stop:
            for submitted in head.submitted if head is not None else ():
                queue(*submitted)
            inputs = _until_failure(batched(items, summary.batch_size), failed)
            for batch in writer.clock.timed(inputs, "inputs"):
                if stop.requested:
                    break
                if not decoder.free:
                    finish_oldest()
                queue(*decoder.submit(batch))
                if stop.requested:
                    break
            while pending:
                finish_oldest()
            summary.interrupted, summary.stop_signal = stop.requested, stop.signum
        if failed:  # the batches before it are written: their files were read
            raise failed[0]
    finally:
        summary.seconds = time.perf_counter() - start
        summary.stage_seconds = dict(writer.clock.seconds)
        if idle is not None and (now := idle_seconds()) is not None:
            cores = len(os.sched_getaffinity(0)) * (time.perf_counter() - loop_start)
            summary.cores_idle = min(1.0, (now - idle) / cores) if cores > 0 else None
        if runs is not None:
            runs.shutdown(wait=True, cancel_futures=True)
        decoder.close()
        progress.close()
