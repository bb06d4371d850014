"""The folder pipeline: scan -> threaded decode into batch buffers -> session.run -> CSV.

Decoding of the next batches runs on a thread pool (OpenCV releases the GIL) while the
session runs the current one (ONNX Runtime releases it too). At most `DEPTH` batches are
in flight, so memory stays flat whatever the folder size. Every file ends as exactly one
row, in the predictions CSV or in the errors CSV; rows are flushed per batch, so a killed
run can be finished with `resume`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

import cv2
import numpy as np

from cnnbench.files import Report, atomic_open, unwritable
from cnnbench.infer.decode.decoders import DEFAULT_LIMITS, DecodeLimits
from cnnbench.infer.decode.images import load_items
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.plan import Plan, check_model, machine_difference, missing_provider
from cnnbench.infer.runtime.preprocess import (
    ForeignOptions,
    InputFormat,
    check_top_k,
    resolve_input_format,
)
from cnnbench.infer.runtime.runner import DEFAULT_BATCH_SIZE, Runner, check_output, make_runner
from cnnbench.infer.runtime.session import (
    Provider,
    RuntimeOptions,
    Session,
    active_provider,
    choose_session,
)
from cnnbench.infer.sinks.output import (
    ERROR_FIELDNAMES,
    OutputLock,
    ResumeState,
    default_errors_path,
    fieldnames,
    read_resume_state,
    safe_cell,
)
from cnnbench.infer.sources import shards, stores
from cnnbench.infer.sources.fetch import fetch_ahead
from cnnbench.infer.sources.items import Item
from cnnbench.infer.sources.listing import IMAGE_EXTENSIONS, Extensions, expand_inputs, scan_inputs

if TYPE_CHECKING:
    from tqdm import tqdm

DEPTH = 3  # batches in flight: one running, two decoding (plus one per extra run in flight)
TRUNCATED_LISTED = 1000  # names of truncated-but-predicted files kept for --summary
IO_THREADS = 32  # reads in flight by default when an input is a URL, a shard or a list


@dataclass(frozen=True)
class InferConfig:
    model: str
    inputs: tuple[str, ...]  # folders, files, or '@list.txt'
    output: str
    errors: str | None = None  # default: OUTPUT.errors.csv
    batch_size: int | None = None  # None: the provider's default
    workers: int = 0  # decode threads; 0 = one per core
    io_threads: int | None = None  # reads in flight; None: IO_THREADS for URLs, else 0
    top_k: int = 1
    extensions: Extensions = IMAGE_EXTENSIONS  # None: every file
    limit: int | None = None  # only the first N files of the inputs
    progress: bool = True
    resume: bool = False  # skip files already in the output or errors CSV, append
    summary: str | None = None  # JSON file for the summary
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    foreign: ForeignOptions = field(default_factory=ForeignOptions)
    limits: DecodeLimits = field(default_factory=DecodeLimits)  # --max-pixels, --allow-truncated
    concurrency: int = 1  # batches run at once (a plan's runs in flight): CPU and OpenVINO

    @property
    def errors_path(self) -> str:
        return self.errors or default_errors_path(self.output)


@dataclass
class InferSummary:
    images: int = 0
    errors: int = 0
    seconds: float = 0.0
    provider: str = ""
    batch_size: int = 0
    precision: str = ""  # what runs: OpenVINO's read back, else the spec's (or the weights')
    concurrency: int = 1
    correct: int = 0
    labelled: int = 0
    skipped: int = 0  # already done by an earlier run (--resume)
    interrupted: bool = False
    per_class: dict[str, list[int]] = field(default_factory=dict)  # label -> [correct, total]
    # --engine ray only: rows (predictions and errors) per inference actor, and the
    # seconds spent connecting to or starting the cluster (not in `seconds`)
    per_worker: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0
    scores: str = ""  # how the scores were made, e.g. "softmax (auto: ...)"
    preprocessing: str = ""  # how the pixels were prepared and resized
    # files left out by their extension, per extension; truncated files predicted from
    # what decoded (--allow-truncated)
    skipped_by_extension: Counter = field(default_factory=Counter)
    truncated: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def count(self, truth: str, hit: bool) -> None:
        entry = self.per_class.setdefault(truth, [0, 0])
        entry[0] += hit
        entry[1] += 1
        self.correct += hit
        self.labelled += 1

    def to_dict(self) -> dict:
        doc = {
            "images": self.images,
            "errors": self.errors,
            "skipped": self.skipped,
            "skipped_by_extension": dict(self.skipped_by_extension.most_common()),
            "truncated_predicted": len(self.truncated),
            "truncated_files": sorted(self.truncated)[:TRUNCATED_LISTED],
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "provider": self.provider,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "interrupted": self.interrupted,
            "scores": self.scores,
            "preprocessing": self.preprocessing,
            "accuracy": self.accuracy,
            "correct": self.correct,
            "labelled": self.labelled,
            "per_class": {
                k: {"correct": c, "total": t, "accuracy": c / t}
                for k, (c, t) in sorted(self.per_class.items())
            },
        }
        if self.per_worker:
            doc |= {"per_worker": self.per_worker, "startup_seconds": self.startup_seconds}
        return doc


def check_config(cfg: InferConfig) -> tuple[str, ...]:
    """Everything checkable before the model loads; returns the validated inputs."""
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise InferError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.concurrency < 1:
        raise InferError(f"concurrency must be a positive integer, got {cfg.concurrency}")
    if cfg.top_k < 1:
        raise InferError(f"--top-k must be a positive integer, got {cfg.top_k}")
    if cfg.limit is not None and cfg.limit < 1:
        raise InferError(f"--limit must be a positive integer, got {cfg.limit}")
    if cfg.limits.max_pixels < 1:
        raise InferError(f"--max-pixels must be a positive integer, got {cfg.limits.max_pixels}")
    if cfg.runtime.trt_fp16 and cfg.runtime.provider is not Provider.TENSORRT:
        raise InferError("--fp16 applies to --provider tensorrt only")
    if cfg.runtime.precision_hint != "auto" and cfg.runtime.provider is not Provider.OPENVINO:
        raise InferError("--precision-hint applies to --provider openvino only")
    if cfg.io_threads is not None and cfg.io_threads < 0:
        raise InferError(f"--io-threads must be 0 or more, got {cfg.io_threads}")
    if not cfg.inputs:
        raise InferError("no INPUT given: pass folders, files, URLs, tar shards or @list.txt")
    inputs = expand_inputs(cfg.inputs)
    targets = [cfg.output, cfg.errors_path] + ([cfg.summary] if cfg.summary else [])
    for path in targets:
        if why := unwritable(path):
            raise InferError(f"cannot write {path}: {why}")
    if len({os.path.abspath(p) for p in targets}) < len(targets):
        raise InferError("--output, --errors and --summary must be different files")
    return inputs


def iter_items(
    inputs: tuple[str, ...], cfg: InferConfig, skipped: Counter | None = None
) -> Iterator[Item]:
    """Every input file in order; files left out by extension are counted in `skipped`.
    Raises when there is none at all."""
    skipped = Counter() if skipped is None else skipped
    items = scan_inputs(inputs, cfg.extensions, skipped)
    items = islice(items, cfg.limit) if cfg.limit is not None else items
    first = next(items, None)
    if first is None:
        where = ", ".join(cfg.inputs)
        extensions = " ".join(cfg.extensions or ("*",))
        left_out = f"; {skipped_line(skipped)}" if skipped else ""
        raise InferError(
            f"no images found under {where} (extensions: {extensions}){left_out}; "
            "check the path or pass --extensions"
        )
    return itertools.chain((first,), items)


def skipped_line(skipped: Counter) -> str:
    """'skipped 382 files by extension: 170 .gif, 40 .jp2, ...'"""
    counts = ", ".join(f"{n} {ext}" for ext, n in skipped.most_common())
    return f"skipped {skipped.total()} files by extension: {counts}"


def truth_for(name: str, labels: set[str]) -> str | None:
    """The class-subfolder name of a file, when it names one of the model's labels."""
    parts = name.split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] in labels else None


def has_class_folders(inputs: tuple[str, ...], labels: set[str]) -> bool:
    """True when some input folder or prefix has subfolders named like the model's labels."""
    for root in inputs:
        if stores.is_url(root) and not shards.is_shard(root):
            if stores.kind(root) == "directory" and stores.has_subprefix(root, labels):
                return True
        elif os.path.isdir(root):
            with os.scandir(root) as entries:
                if any(e.is_dir() and e.name in labels for e in entries):
                    return True
    return False


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
        shape = (batch_size, fmt.size[0], fmt.size[1], fmt.channels)
        self.free = deque(np.zeros(shape, dtype=np.uint8) for _ in range(depth))
        self.pool = ThreadPoolExecutor(max_workers=workers, initializer=_decode_thread_setup)

    def _load(self, items: list[Item], out: np.ndarray) -> list[str | None]:
        return load_items(
            items, out, self.fmt.bgr, self.fmt.policy, limits=self.limits, truncated=self.truncated
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


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


@dataclass(frozen=True)
class Scored:
    """One batch after the model: why each file could not be read (None: it was), the
    readable ones' positions, and their scores."""

    reasons: list[str | None]
    ok: list[int]
    probs: np.ndarray | None


class _Writer:
    """Runs finished batches through the model and writes their rows in input order."""

    def __init__(
        self,
        runner: Runner,
        fmt: InputFormat,
        cfg: InferConfig,
        files: list[IO[str]],
        summary: InferSummary,
        truth: bool,
    ) -> None:
        self.runner, self.fmt, self.top_k, self.summary = runner, fmt, cfg.top_k, summary
        self.out_f, self.err_f = files
        self.rows = csv.DictWriter(self.out_f, fieldnames=fieldnames(cfg.top_k, truth))
        self.errors = csv.DictWriter(self.err_f, fieldnames=ERROR_FIELDNAMES)
        self.labels = fmt.labels
        self.truth = set(fmt.labels) if truth else None

    def finish(self, items: list[Item], buf: np.ndarray, futures: list[Future]) -> None:
        self.write(items, self.score(buf, futures))

    def score(self, buf: np.ndarray, futures: list[Future]) -> Scored:
        """Wait for the batch's decodes and run the readable images: safe to call from
        several threads at once (each on its own buffer)."""
        reasons = [r for f in futures for r in f.result()]
        ok = [i for i, r in enumerate(reasons) if r is None]
        probs = None
        if ok:
            if len(ok) < len(reasons):
                buf[: len(ok)] = buf[ok]  # compact the readable images to the front
            probs = self.runner.run(buf, len(ok))
        return Scored(reasons, ok, probs)

    def write(self, items: list[Item], scored: Scored) -> None:
        """The batch's rows, in input order: called for one batch after the other."""
        reasons, ok, probs = scored.reasons, scored.ok, scored.probs
        for item, why in zip(items, reasons, strict=True):
            if why is not None:
                self.errors.writerow({"path": safe_cell(item.name), "error": why})
        written = 0
        if probs is not None:
            finite = np.isfinite(probs).all(axis=1)
            for i in np.flatnonzero(~finite):
                why = "the model's output for this image is not finite (NaN or inf)"
                self.errors.writerow({"path": safe_cell(items[ok[i]].name), "error": why})
            self._write_rows(
                [items[i] for i, f in zip(ok, finite, strict=True) if f], probs[finite]
            )
            written = int(finite.sum())
        self.summary.images += written
        self.summary.errors += len(items) - written
        self.out_f.flush()
        self.err_f.flush()

    def _write_rows(self, items: list[Item], probs: np.ndarray) -> None:
        top = top_indices(probs, self.top_k)
        for item, p, idx in zip(items, probs, top, strict=True):
            row = prediction_row(item.name, idx, p[idx], self.labels, self.truth, self.summary)
            self.rows.writerow(row)


def top_indices(probs: np.ndarray, top_k: int) -> np.ndarray:
    """Per row, the indices of the `top_k` highest probabilities, best first (stable)."""
    k = min(top_k, probs.shape[1])
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def prediction_row(
    name: str,
    idx: np.ndarray,
    scores: np.ndarray,
    labels: tuple[str, ...],
    truth_labels: set[str] | None,
    summary: InferSummary,
) -> dict:
    """One predictions-CSV row (top-k labels and scores, and the truth when the file
    sits in a class folder); counts it in the summary's accuracy."""
    row = {"path": safe_cell(name)}
    for rank, (j, score) in enumerate(zip(idx, scores, strict=True), start=1):
        suffix = "" if rank == 1 else f"_{rank}"
        row[f"label{suffix}"] = safe_cell(_label(labels, j))
        row[f"score{suffix}"] = f"{float(score):.6f}"
    if truth_labels is not None:
        truth = truth_for(name, truth_labels)
        row["true_label"] = safe_cell(truth or "")
        if truth is not None:
            hit = truth == _label(labels, idx[0])
            row["correct"] = str(int(hit))
            summary.count(truth, hit)
    return row


def _label(labels: tuple[str, ...], j: int) -> str:
    return labels[j] if j < len(labels) else str(j)


def _progress(enabled: bool) -> tqdm:
    """A bar on a terminal only (tqdm's disable=None), never with --no-progress."""
    from tqdm import tqdm

    return tqdm(unit="img", file=sys.stderr, dynamic_ncols=True, disable=None if enabled else True)


class StopOnSigint:
    """The first Ctrl-C asks the loop to stop after the batches in flight; a second one
    interrupts at once (the default handler is back)."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Callable[[int, FrameType | None], Any] | int | None = None

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> StopOnSigint:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def io_threads_for(cfg: InferConfig) -> int:
    """--io-threads, else IO_THREADS when an input may be read over the network or from
    a shard (a URL, a shard, a list of paths), else 0: local files are read by the decode
    threads, as they always were."""
    if cfg.io_threads is not None:
        return cfg.io_threads
    remote = (t.startswith("@") or stores.is_url(t) or shards.is_shard(t) for t in cfg.inputs)
    return IO_THREADS if any(remote) else 0


def _pending_items(
    items: Iterator[Item], state: ResumeState | None, summary: InferSummary
) -> Iterator[Item]:
    for item in items:
        if state is not None and item.name in state.done:
            summary.skipped += 1
        else:
            yield item


@contextlib.contextmanager
def _open_outputs(
    cfg: InferConfig, columns: list[str], state: ResumeState | None
) -> Iterator[list[IO[str]]]:
    """The two CSV files, appended to when resuming, with their headers written."""
    with contextlib.ExitStack() as stack:
        files: list[IO[str]] = []
        for path, names, has_header in (
            (cfg.output, columns, state is not None and state.output_has_header),
            (cfg.errors_path, ERROR_FIELDNAMES, state is not None and state.errors_has_header),
        ):
            f = stack.enter_context(
                open(path, "a" if has_header else "w", newline="", encoding="utf-8")
            )
            if not has_header:
                csv.writer(f).writerow(names)
            files.append(f)
        yield files


def run_infer(cfg: InferConfig, report: Report | None = None) -> InferSummary:
    """Classify every image under the inputs; write predictions and errors CSV.

    `report` receives progress lines meant for the user (the provider chosen, and why).
    """
    inputs = check_config(cfg)
    # Decoder threads share the cores with ORT's: idle ORT threads must not spin.
    runtime = dataclasses.replace(cfg.runtime, spinning=False, streams=cfg.concurrency)
    session, note = choose_session(cfg.model, runtime)
    fmt = resolve_input_format(session, cfg.foreign)
    check_top_k(fmt, cfg.top_k)
    provider = active_provider(session)
    batch_size = batch_size_for(fmt, cfg.batch_size, provider)
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
    with_truth = has_class_folders(inputs, set(fmt.labels))
    items = iter_items(inputs, cfg, summary.skipped_by_extension)
    runner = make_runner(session, fmt, provider, cfg.runtime.device_id)
    if fmt.num_classes is None:  # the file does not say its class count: run one batch
        check_output(runner, np.zeros((batch_size, *fmt.size, fmt.channels), dtype=np.uint8))
    with OutputLock(cfg.output):
        columns = fieldnames(cfg.top_k, with_truth)
        state = read_resume_state(cfg.output, cfg.errors_path, columns) if cfg.resume else None
        with _open_outputs(cfg, columns, state) as files:
            writer = _Writer(runner, fmt, cfg, files, summary, with_truth)
            pending = _pending_items(items, state, summary)
            with contextlib.closing(fetch_ahead(pending, io_threads_for(cfg))) as ready:
                _run_loop(ready, writer, fmt, cfg, summary)
    summary.scores = runner.scorer.describe()
    if cfg.summary:
        write_summary(cfg, summary)
    return summary


def apply_plan(cfg: InferConfig, plan: Plan) -> tuple[InferConfig, list[str]]:
    """`cfg` running the plan's model file (once its sha256 is checked) in the plan's
    configuration, and a warning line for each way this machine differs from the plan's.
    A provider missing here runs on ONNX Runtime's CPU instead (CUDA: `auto` tries it)."""
    model = check_model(plan)
    warnings = [w for w in (machine_difference(plan),) if w]
    runtime = dataclasses.replace(
        cfg.runtime,
        provider=plan.provider,
        threads=plan.threads,
        precision_hint=plan.precision_hint,
        trt_fp16=plan.trt_fp16,
    )
    concurrency = plan.concurrency
    if why := missing_provider(plan.provider):
        warnings.append(
            f"the plan's provider {plan.provider.value} is missing here ({why}): "
            "running on cpu, one batch at a time"
        )
        runtime = dataclasses.replace(
            runtime, provider=Provider.CPU, threads=0, precision_hint="auto", trt_fp16=False
        )
        concurrency = 1
    elif plan.provider is Provider.CUDA:
        runtime = dataclasses.replace(runtime, provider=Provider.AUTO)
    cfg = dataclasses.replace(
        cfg, model=model, batch_size=plan.batch_size, runtime=runtime, concurrency=concurrency
    )
    return cfg, warnings


def running_precision(session: Session, fmt: InputFormat) -> str:
    """OpenVINO says what it runs (fp32, bf16); ONNX Runtime runs the file's precision."""
    precision = getattr(session, "precision", None)
    if callable(precision):
        return str(precision())
    return fmt.spec.precision if fmt.spec is not None else ""


def batch_size_for(fmt: InputFormat, asked: int | None, provider: Provider) -> int:
    """The model's fixed batch, else the asked one, else the provider's default."""
    if fmt.batch is None:
        return asked or DEFAULT_BATCH_SIZE[provider]
    if asked is not None and asked != fmt.batch:
        raise InferError(
            f"--batch-size {asked} contradicts the model's fixed batch of {fmt.batch} "
            f"(input {fmt.input_name}): leave --batch-size out"
        )
    return fmt.batch


def describe_format(fmt: InputFormat) -> list[str]:
    """Lines telling the user what was read from the model and decided for it."""
    lines = list(fmt.notes)
    if fmt.batch is not None:
        padded = ", the last one padded" if fmt.batch > 1 else ""
        lines.append(f"the model's batch is fixed at {fmt.batch}: batches of {fmt.batch}{padded}")
    if fmt.spec is None:
        lines.append(f"preprocessing: {fmt.describe()}")
    return lines


def _run_loop(
    items: Iterable[Item],
    writer: _Writer,
    fmt: InputFormat,
    cfg: InferConfig,
    summary: InferSummary,
) -> None:
    """Keep DEPTH batches in flight (and one more per extra run in flight); finish them
    in order; stop cleanly on Ctrl-C."""
    workers = cfg.workers or os.cpu_count() or 1
    depth = DEPTH + cfg.concurrency - 1
    decoder = _Decoder(fmt, summary.batch_size, workers, cfg.limits, summary.truncated, depth)
    writer.runner.warm_up(decoder.free[0])
    progress = _progress(cfg.progress)
    pending: deque = deque()
    # runs in flight: the model runs on this many threads, rows are written in order here
    runs = ThreadPoolExecutor(cfg.concurrency) if cfg.concurrency > 1 else None

    def submit(batch: list[Item]) -> None:
        batch_items, buf, futures = decoder.submit(batch)
        scored = runs.submit(writer.score, buf, futures) if runs else None
        pending.append((batch_items, buf, futures, scored))

    def finish_oldest() -> None:
        batch_items, buf, futures, scored = pending.popleft()
        if scored is None:
            writer.finish(batch_items, buf, futures)
        else:
            writer.write(batch_items, scored.result())
        decoder.free.append(buf)
        progress.update(summary.images + summary.errors - progress.n)

    start = time.perf_counter()
    try:
        with StopOnSigint() as stop:
            for batch in batched(items, summary.batch_size):
                if not decoder.free:
                    finish_oldest()
                submit(batch)
                if stop.requested:
                    break
            while pending:
                finish_oldest()
            summary.interrupted = stop.requested
    finally:
        summary.seconds = time.perf_counter() - start
        if runs is not None:
            runs.shutdown(wait=True, cancel_futures=True)
        decoder.close()
        progress.close()


def write_summary(cfg: InferConfig, summary: InferSummary) -> None:
    doc = summary.to_dict() | {
        "model": cfg.model,
        "inputs": list(cfg.inputs),
        "output": cfg.output,
        "errors_csv": cfg.errors_path,
    }
    assert cfg.summary is not None, "called only with --summary"
    with atomic_open(cfg.summary) as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
