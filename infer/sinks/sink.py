"""Where the local engine's rows go, one batch at a time, in input order.

- CSV and JSON lines are appended to the two files and flushed per batch; `--resume`
  reads the paths back (a line cut by a kill is cut off) and skips those files.
- Parquet is committed a block at a time through `Parts` (parts.py), as the Ray engine
  does, with the same blocks and part names: a block's rows are kept until its last file
  is done, then written as one file per output; `--resume` skips committed blocks. A kill
  loses at most the block in progress, which the resumed run redoes.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cnnbench.files import named_write_error
from cnnbench.infer.sinks.formats import ERROR_FIELDNAMES, Format, encode_lines, header
from cnnbench.infer.sinks.output import (
    Earlier,
    ResumeState,
    check_recorded_job,
    read_resume_state,
    record_job,
)
from cnnbench.infer.sinks.parts import Parts, blocks
from cnnbench.infer.sources.items import Item


@dataclass(frozen=True)
class Outcome:
    """One input file's row: its prediction, or its error row (`path`, `error`)."""

    row: dict
    failed: bool


class Sink(Protocol):
    skipped: int  # files done by an earlier run (--resume)
    resumed: bool  # --resume found an earlier run's output to go on from
    where: str | None  # where committed blocks are kept; None: rows go straight to OUTPUT

    def pending(self, items: Iterator[Item]) -> Iterator[Item]:
        """The items still to do (all of them unless resuming)."""

    def write(self, outcomes: list[Outcome]) -> None:
        """One batch's rows, in input order: committed (or buffered) before returning."""

    def earlier(self) -> Earlier:
        """The rows an earlier run committed for the items `pending` skipped (--resume),
        read back for the job's accuracy."""

    def close(self, finished: bool) -> None:
        """The run ends; `finished`: every item was written (not stopped)."""


class AppendSink:
    """The two files of a CSV or JSON lines output, appended to when resuming, and
    `OUTPUT.job.json`: the job they were written by (what the rows depend on besides the
    files: `job_key`), checked by a resumed run as a Parquet dataset's manifest is."""

    def __init__(
        self, fmt: Format, output: str, errors: str, columns: list[str], resume: bool, job: dict
    ) -> None:
        self.fmt, self.columns = fmt, columns
        self.state: ResumeState | None = None
        self.resumed = False
        if resume:
            self.state = read_resume_state(output, errors, columns)  # columns: named
            self.resumed = check_recorded_job(output, job) or self.state.started
        record_job(output, job)
        self.skipped = 0
        self._resumed: list[str] = []  # the prediction rows `pending` skipped, by name
        self.where: str | None = None
        self.files: list[BinaryIO] = []  # unbuffered: a batch is written or cut off whole
        with contextlib.ExitStack() as stack:
            for path, names, started in (
                (output, columns, self.state is not None and self.state.output_has_header),
                (errors, ERROR_FIELDNAMES, self.state is not None and self.state.errors_has_header),
            ):
                self.files.append(
                    stack.enter_context(open(path, "ab" if started else "wb", buffering=0))
                )
                self._append({self.files[-1]: "" if started else header(fmt, names)})
            stack.pop_all()

    def pending(self, items: Iterator[Item]) -> Iterator[Item]:
        for item in items:
            if self.state is not None and self.state.skips(item.name, self._resumed):
                self.skipped += 1
            else:
                yield item

    def write(self, outcomes: list[Outcome]) -> None:
        rows = [o.row for o in outcomes if not o.failed]
        failed = [o.row for o in outcomes if o.failed]
        out, err = self.files
        self._append(
            {
                out: encode_lines(self.fmt, self.columns, rows),
                err: encode_lines(self.fmt, ERROR_FIELDNAMES, failed),
            }
        )

    def _append(self, texts: dict[BinaryIO, str]) -> None:
        """Each text to the end of its file, all of them or none: a disk that fills up
        (or a file size limit) mid-write leaves the files as they were, not a torn row
        that a reader takes for one, and the error names the file."""
        marks = [(f, f.tell()) for f in self.files]
        for f, text in texts.items():
            try:
                _write_all(f, text.encode("utf-8"))
            except OSError as e:
                for g, mark in marks:
                    with contextlib.suppress(OSError):  # /dev/null has no size to cut
                        g.truncate(mark)
                raise named_write_error(e, str(f.name)) from e

    def earlier(self) -> Earlier:
        return self.state.earlier(self._resumed) if self.state is not None else Earlier()

    def close(self, finished: bool) -> None:
        for f in self.files:
            f.close()


def _write_all(f: BinaryIO, data: bytes) -> None:
    """All of `data` to an unbuffered file (one write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[f.write(view) :]


class BlockSink:
    """A Parquet output committed a block at a time (see the module docstring)."""

    def __init__(self, parts: Parts, block_size: int, columns: list[str]) -> None:
        self.parts, self.block_size, self.columns = parts, block_size, columns
        self.digests: list[str] = []
        self.open: deque[tuple[int, str, int]] = deque()  # blocks handed out, not committed
        self.done: list[tuple[int, str, int]] = []  # blocks an earlier run committed
        self.buffer: list[Outcome] = []
        self.skipped = 0
        self.where: str | None = parts.where
        self.resumed = parts.resumed

    def pending(self, items: Iterator[Item]) -> Iterator[Item]:
        for k, digest, chunk in blocks(items, self.block_size):
            self.digests.append(digest)
            if self.parts.is_done(k, digest):
                self.skipped += len(chunk)
                self.done.append((k, digest, len(chunk)))
                continue
            self.open.append((k, digest, len(chunk)))
            yield from chunk

    def write(self, outcomes: list[Outcome]) -> None:
        self.buffer += outcomes
        while self.open and len(self.buffer) >= self.open[0][2]:
            k, digest, size = self.open.popleft()
            done, self.buffer = self.buffer[:size], self.buffer[size:]
            rows = [o.row for o in done if not o.failed]
            self.parts.write_block(k, digest, self.columns, rows, [o.row for o in done if o.failed])

    def earlier(self) -> Earlier:
        return self.parts.earlier(self.done, self.columns)

    def close(self, finished: bool) -> None:
        if finished:
            self.parts.finish(self.digests, self.columns)
