"""The folder pipeline: scan -> threaded decode into batch buffers -> session.run -> CSV.

Decoding of the next batches runs on a thread pool (OpenCV releases the GIL) while the
session runs the current one (ONNX Runtime releases it too). At most `depth` batches are
in flight, so memory stays flat whatever the folder size.
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import cv2
import numpy as np

from cnnbench.infer.errors import InferError
from cnnbench.infer.images import IMAGE_EXTENSIONS, Item, decode, resize_into, scan
from cnnbench.infer.preprocess import ForeignOptions, InputFormat, resolve_input_format
from cnnbench.infer.session import RuntimeOptions, active_provider, create_session

ERROR_FIELDNAMES = ("path", "error")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class InferConfig:
    model: str
    inputs: tuple[str, ...]
    output: str
    errors: str | None = None
    batch_size: int = 32
    workers: int = 0  # decode threads; 0 = one per core
    top_k: int = 1
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    limit: int | None = None
    progress: bool = True
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    foreign: ForeignOptions = field(default_factory=ForeignOptions)


@dataclass
class InferSummary:
    images: int = 0
    errors: int = 0
    seconds: float = 0.0
    provider: str = ""
    batch_size: int = 0
    correct: int = 0
    labelled: int = 0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def fieldnames(top_k: int, with_truth: bool) -> list[str]:
    names = ["path", "label", "score"]
    for k in range(2, top_k + 1):
        names += [f"label_{k}", f"score_{k}"]
    return names + (["true_label", "correct"] if with_truth else [])


def safe_cell(text: str) -> str:
    """Keep spreadsheets from reading a file name as a formula."""
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text


def _check_config(cfg: InferConfig) -> None:
    if cfg.batch_size < 1:
        raise InferError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.top_k < 1:
        raise InferError(f"--top-k must be a positive integer, got {cfg.top_k}")
    for path in cfg.inputs:
        if not os.path.exists(path):
            raise InferError(f"input path does not exist: {path}")
    out_dir = os.path.dirname(os.path.abspath(cfg.output))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise InferError(
            f"cannot write {cfg.output}: folder {out_dir} does not exist or is not writable"
        )


def iter_items(cfg: InferConfig) -> Iterator[Item]:
    """Every input file in order; raises when there is none at all."""
    items = (item for root in cfg.inputs for item in scan(root, cfg.extensions))
    items = islice(items, cfg.limit) if cfg.limit is not None else items
    first = next(items, None)
    if first is None:
        where = ", ".join(cfg.inputs)
        raise InferError(
            f"no images found under {where} (extensions: "
            f"{' '.join(cfg.extensions)}); check the path or pass --extensions"
        )
    return itertools.chain((first,), items)


def _truth_for(item: Item, labels: set[str]) -> str | None:
    """The class-subfolder name of an item, when it names one of the model's labels."""
    parts = item.name.split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] in labels else None


class _Decoder:
    """Fills preallocated uint8 batch buffers on a thread pool."""

    def __init__(self, fmt: InputFormat, batch_size: int, workers: int, depth: int) -> None:
        self.fmt = fmt
        shape = (batch_size, fmt.size[0], fmt.size[1], fmt.channels)
        self.free = deque(np.empty(shape, dtype=np.uint8) for _ in range(depth))
        self.pool = ThreadPoolExecutor(
            max_workers=workers, initializer=cv2.setNumThreads, initargs=(1,)
        )

    def _load(self, item: Item, out: np.ndarray) -> str | None:
        try:
            with open(item.path, "rb") as f:
                data = f.read()
            resize_into(decode(data, self.fmt.channels, self.fmt.bgr), out)
        except (OSError, ValueError, cv2.error) as e:
            return _reason(e)
        return None

    def submit(self, items: list[Item]) -> tuple[list[Item], np.ndarray, list[Future]]:
        buf = self.free.popleft()
        return items, buf, [self.pool.submit(self._load, it, buf[i]) for i, it in enumerate(items)]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _reason(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found (broken symlink or removed during the run)"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, cv2.error):
        return "OpenCV could not decode the image"
    return str(e) or type(e).__name__


def _batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


class _Writer:
    """Runs finished batches through the model and writes their rows in input order."""

    def __init__(
        self,
        session,
        fmt: InputFormat,
        cfg: InferConfig,
        out_f,
        err_f,
        summary: InferSummary,
        with_truth: bool,
    ) -> None:
        self.session, self.fmt, self.cfg, self.summary = session, fmt, cfg, summary
        self.out_f, self.err_f = out_f, err_f
        self.rows = csv.DictWriter(out_f, fieldnames=fieldnames(cfg.top_k, with_truth))
        self.errors = csv.DictWriter(err_f, fieldnames=ERROR_FIELDNAMES)
        self.labels = fmt.labels
        self.truth = set(fmt.labels) if with_truth else None
        self.rows.writeheader()
        self.errors.writeheader()

    def finish(self, items: list[Item], buf: np.ndarray, futures: list[Future]) -> None:
        reasons = [f.result() for f in futures]
        ok = [i for i, r in enumerate(reasons) if r is None]
        for item, reason in zip(items, reasons, strict=True):
            if reason is not None:
                self.errors.writerow({"path": safe_cell(item.name), "error": reason})
        if ok:
            batch = buf[: len(items)] if len(ok) == len(items) else buf[ok]
            probs = self.session.run(None, {self.fmt.input_name: self.fmt.to_model_input(batch)})[0]
            self._write_rows([items[i] for i in ok], probs)
        self.summary.images += len(ok)
        self.summary.errors += len(items) - len(ok)
        self.out_f.flush()
        self.err_f.flush()

    def _write_rows(self, items: list[Item], probs: np.ndarray) -> None:
        k = min(self.cfg.top_k, probs.shape[1])
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        for item, p, idx in zip(items, probs, top, strict=True):
            row = {"path": safe_cell(item.name)}
            for rank, j in enumerate(idx, start=1):
                suffix = "" if rank == 1 else f"_{rank}"
                row[f"label{suffix}"] = safe_cell(self._label(j))
                row[f"score{suffix}"] = f"{float(p[j]):.6f}"
            if self.truth is not None:
                truth = _truth_for(item, self.truth)
                row["true_label"] = safe_cell(truth or "")
                if truth is not None:
                    hit = truth == self._label(idx[0])
                    row["correct"] = int(hit)
                    self.summary.labelled += 1
                    self.summary.correct += hit
            self.rows.writerow(row)

    def _label(self, j: int) -> str:
        return self.labels[j] if j < len(self.labels) else str(j)


def default_errors_path(output: str) -> str:
    root, ext = os.path.splitext(output)
    return f"{root}.errors{ext or '.csv'}"


def _has_class_folders(inputs: tuple[str, ...], labels: set[str]) -> bool:
    """True when some input folder has subfolders named like the model's labels."""
    for root in inputs:
        if os.path.isdir(root):
            with os.scandir(root) as entries:
                if any(e.is_dir() and e.name in labels for e in entries):
                    return True
    return False


class _NoProgress:
    n = 0

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


def _progress(enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(unit="img", file=sys.stderr, dynamic_ncols=True)


def run_infer(cfg: InferConfig) -> InferSummary:
    """Classify every image under the inputs; write predictions and errors CSV."""
    _check_config(cfg)
    session = create_session(cfg.model, cfg.runtime)
    fmt = resolve_input_format(session, cfg.foreign)
    summary = InferSummary(provider=active_provider(session).value, batch_size=cfg.batch_size)
    with_truth = _has_class_folders(cfg.inputs, set(fmt.labels))
    items = iter_items(cfg)
    decoder = _Decoder(fmt, cfg.batch_size, cfg.workers or os.cpu_count() or 1, depth=3)
    progress = _progress(cfg.progress)
    start = time.perf_counter()
    try:
        with (
            open(cfg.output, "w", newline="", encoding="utf-8") as out_f,
            open(
                cfg.errors or default_errors_path(cfg.output), "w", newline="", encoding="utf-8"
            ) as err_f,
        ):
            writer = _Writer(session, fmt, cfg, out_f, err_f, summary, with_truth)
            pending: deque = deque()

            def finish_oldest() -> None:
                items, buf, futures = pending.popleft()
                writer.finish(items, buf, futures)
                decoder.free.append(buf)
                progress.update(summary.images + summary.errors - progress.n)

            for batch in _batches(items, cfg.batch_size):
                if not decoder.free:
                    finish_oldest()
                pending.append(decoder.submit(batch))
            while pending:
                finish_oldest()
    finally:
        decoder.close()
        progress.close()
    summary.seconds = time.perf_counter() - start
    return summary
