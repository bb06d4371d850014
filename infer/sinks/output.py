"""The CSV outputs: schema, formula-safe cells, resume state and the single-writer lock."""

from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass

import filelock

from cnnbench.infer.errors import InferError

ERROR_FIELDNAMES = ("path", "error")
# A cell starting with one of these is read as a formula by spreadsheets; "'" itself is
# escaped too, so that escaping is reversible (resume reads the names back).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "'")


def fieldnames(top_k: int, with_truth: bool) -> list[str]:
    names = ["path", "label", "score"]
    for k in range(2, top_k + 1):
        names += [f"label_{k}", f"score_{k}"]
    return names + (["true_label", "correct"] if with_truth else [])


def safe_cell(text: str) -> str:
    """Keep spreadsheets from reading a file name as a formula."""
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text


def unsafe_cell(text: str) -> str:
    """The inverse of `safe_cell`."""
    return text[1:] if text.startswith("'") else text


def default_errors_path(output: str) -> str:
    root, ext = os.path.splitext(output)
    return f"{root}.errors{ext or '.csv'}"


@dataclass(frozen=True)
class ResumeState:
    """Names already written by an earlier run, and whether its files carry a header."""

    done: frozenset[str]
    output_has_header: bool
    errors_has_header: bool


def _complete_rows(path: str, expected: list[str] | tuple[str, ...]) -> tuple[set[str], bool]:
    """Paths in a CSV left by an earlier (maybe killed) run; a torn last line is cut off."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return set(), False
    with open(path, "rb+") as f:
        data = f.read()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            f.truncate(cut)  # the run was killed in the middle of writing this line
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return set(), False
        if list(header) != list(expected):
            raise InferError(
                f"cannot resume: {path} has columns {','.join(header)}, this run writes "
                f"{','.join(expected)}; use the same --top-k, or run without --resume"
            )
        return {unsafe_cell(row[0]) for row in reader if row}, True


def read_resume_state(output: str, errors: str, columns: list[str]) -> ResumeState:
    done, out_header = _complete_rows(output, columns)
    failed, err_header = _complete_rows(errors, ERROR_FIELDNAMES)
    return ResumeState(frozenset(done | failed), out_header, err_header)


class OutputLock:
    """An exclusive lock beside the output, so that two runs never write it at once.

    filelock takes an OS lock on `OUTPUT.lock` (flock on POSIX, LockFileEx on Windows),
    released by the kernel when the holder dies, so a SIGKILL leaves no stale lock; the
    file is removed on a clean exit, while still held (a waiter that opened the removed
    file retries on the new one).
    """

    def __init__(self, output: str) -> None:
        self.path = f"{output}.lock"
        self.lock = filelock.FileLock(self.path, timeout=0)

    def __enter__(self) -> OutputLock:
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise InferError(
                f"another cnnbench infer is writing {self.path[:-5]} (lock {self.path}); "
                "wait for it to finish or choose another -o"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.lock.release()
