"""The output files: which format and where, resume state of appended files, and the
single-writer lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from cnnbench.files import atomic_open, not_a_file, unwritable, unwritable_folder
from cnnbench.infer.errors import InferError
from cnnbench.infer.sinks.formats import ERROR_FIELDNAMES, Format, format_of, read_written
from cnnbench.infer.sources.stores import is_url
from cnnbench.infer.sources.web import is_web


def default_errors_path(output: str) -> str:
    """OUTPUT.errors.EXT beside the output, in its format (.csv when it has none)."""
    root, ext = os.path.splitext(output.rstrip("/"))
    return f"{root}.errors{ext or '.csv'}"


def check_outputs(output: str, errors: str) -> Format:
    """The format both files are written in, or one line saying what to change: the
    errors file is in the output's format; an object store takes Parquet only (a text
    file there cannot be appended to)."""
    fmt = format_of(output)
    if format_of(errors) is not fmt:
        raise InferError(
            f"--errors {errors} is not in the format of -o {output} ({fmt.value}): "
            f"give it the same extension, or leave --errors out"
        )
    for path in (output, errors):
        if is_web(path):  # the job ran, then failed at its first part: 'HTTP 501 ... --resume'
            raise InferError(
                f"cannot write {path}: a web server takes no uploads (http(s) URLs are inputs"
                " only); write to a local file, or a .parquet output to s3://, gs:// or az://"
            )
        if is_url(path) and fmt is not Format.PARQUET:
            raise InferError(
                f"cannot write {path}: an object store takes a .parquet output (a dataset "
                "of parts); write CSV or JSON lines to a local file"
            )
        if path == os.devnull and path == errors:  # the errors thrown away: asked for
            continue
        if not is_url(path) and (why := _unwritable(path, fmt)):
            raise InferError(f"cannot write {path}: {why}")
    return fmt


def check_apart(fmt: Format, targets: list[str]) -> None:
    """One line when a file of the run is inside a Parquet dataset folder of its own
    (`--summary out.parquet/s.json`): the dataset's readers take every file there for a
    part (a summary made pandas and pyarrow fail on it; an errors dataset was read as
    rows of nulls). `targets`: the output, the errors file, the summary."""
    folders = targets[:2] if fmt is Format.PARQUET else []
    for folder in folders:
        for target in targets:
            if target is not folder and _inside(target, folder):
                raise InferError(
                    f"cannot write {target}: it is inside the Parquet dataset {folder}, whose "
                    "readers would take it for a part; write it beside it"
                )


def _inside(path: str, folder: str) -> bool:
    if is_url(path) or is_url(folder):
        return path.startswith(folder.rstrip("/") + "/")
    return os.path.abspath(path).startswith(os.path.join(os.path.abspath(folder), ""))


A_FILE_NOT_A_DATASET = (
    "it is a file (another tool's Parquet?), and cnnbench writes a Parquet output as a "
    "folder of parts; choose another -o/--errors, or remove it"
)


def _unwritable(path: str, fmt: Format) -> str | None:
    if not_a_file(path):
        return (
            "standard output, a pipe or a device is no output to append to and resume "
            "(nor a place for its errors file and job record): give a file, and follow "
            "it with tail -f"
        )
    if fmt is Format.PARQUET:  # a folder of parts: it may exist already
        if os.path.isfile(path):  # pandas' to_parquet, say: not replaced unasked
            return A_FILE_NOT_A_DATASET
        return unwritable_folder(os.path.dirname(os.path.abspath(path)))
    return unwritable(path)


@dataclass
class Earlier:
    """The rows an earlier run committed for the files a resumed run skips, read back so
    that the accuracy is the whole job's: each prediction row's path and top-1 label
    (None where it has none), and how many files' rows could not be read back at all
    (a committed part that no longer reads): those are said to be left out."""

    rows: list[tuple[str, str | None]] = field(default_factory=list)
    unread: int = 0


@dataclass(frozen=True)
class ResumeState:
    """What an earlier run wrote to an appended output: its prediction rows' paths, each
    with its top-1 label, its error rows' paths, and whether its files have a start (a
    header, or rows) to append after."""

    predicted: Mapping[str, str | None]
    failed: frozenset[str]
    output_has_header: bool
    errors_has_header: bool

    @property
    def started(self) -> bool:
        """The earlier run wrote something to go on from."""
        return self.output_has_header or self.errors_has_header

    def skips(self, name: str, resumed: list[str]) -> bool:
        """Whether the earlier run wrote `name`'s row; a prediction row's name goes into
        `resumed`, to be scored (an error row is in no accuracy)."""
        if name in self.predicted:
            resumed.append(name)
            return True
        return name in self.failed

    def earlier(self, resumed: list[str]) -> Earlier:
        """The rows of the `resumed` names, with their top-1 labels: made only where the
        accuracy is measured (a name each is kept meanwhile, not a row)."""
        return Earlier([(name, self.predicted[name]) for name in resumed])


def read_resume_state(output: str, errors: str, columns: list[str]) -> ResumeState:
    """What an earlier run left in an appended (CSV or JSON lines) output."""
    fmt = format_of(output)
    predicted, out_header = read_written(fmt, output, columns)
    failed, err_header = read_written(fmt, errors, ERROR_FIELDNAMES)
    return ResumeState(predicted, frozenset(failed), out_header, err_header)


def job_path(output: str) -> str:
    """Where a CSV or JSON lines output's job is recorded: `OUTPUT.job.json` beside it."""
    return f"{output}.job.json"


def record_job(output: str, job: dict) -> None:
    """Record the job a CSV or JSON lines output is written by: what its rows depend on
    besides the files (`job_key`; its block size aside: appended rows have no blocks)."""
    with atomic_open(job_path(output)) as f:
        json.dump(_appended(job), f, indent=2)


def check_recorded_job(output: str, job: dict) -> bool:
    """One line when a CSV or JSON lines output was written by another job (an output
    of an older cnnbench has no record: nothing to check); whether there was a record."""
    if not os.path.isfile(path := job_path(output)):
        return False
    old = read_record(path, Path(path).read_bytes, "remove it to resume unchecked")
    check_same_job(output, old, _appended(job))
    return True


def _appended(job: dict) -> dict:
    """What appended rows depend on: the job less its block size (they have no blocks)."""
    return {k: v for k, v in job.items() if k != "block_size"}


def read_record(where: str, read: Callable[[], bytes], todo: str) -> dict:
    """A JSON object cnnbench wrote (a job record, a manifest), or one line saying it is
    not one (edited, or written by something else)."""
    try:
        doc = json.loads(read())
    except (OSError, ValueError) as e:
        doc = e
    if not isinstance(doc, dict):
        why = f"{doc}" if isinstance(doc, Exception) else f"a JSON {type(doc).__name__}"
        raise InferError(
            f"cannot resume: {where} is not a record cnnbench wrote ({why}); {todo}, or "
            "run without --resume"
        )
    return doc


def check_same_job(where: str, old: dict, job: dict) -> None:
    """One line when a resumed run's job differs from the one that wrote `where`."""
    changed = sorted(k for k in job.keys() | old.keys() if job.get(k) != old.get(k))
    if changed:
        raise InferError(
            f"cannot resume: {where} was written by a job with another "
            f"{', '.join(changed)}; rerun with the same options, or without --resume"
        )


def lock_path(output: str) -> str:
    """`OUTPUT.lock` beside a local output; for an object-store output, a file in the
    temporary folder named after its URL (it keeps runs on this machine apart only)."""
    if not is_url(output):
        return f"{output.rstrip('/')}.lock"
    digest = hashlib.sha256(output.rstrip("/").encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"cnnbench-output-{digest}.lock")


class OutputLock:
    """An exclusive lock for the output, so that two runs never write it at once.

    filelock takes an OS lock on `OUTPUT.lock` (flock on POSIX, LockFileEx on Windows),
    released by the kernel when the holder dies, so a SIGKILL leaves no stale lock; the
    file is removed on a clean exit, while still held (a waiter that opened the removed
    file retries on the new one).
    """

    def __init__(self, output: str, option: str = "-o") -> None:
        self.output, self.option = output, option
        self.path = lock_path(output)
        self.lock = filelock.FileLock(self.path, timeout=0)

    def __enter__(self) -> OutputLock:
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise InferError(
                f"another cnnbench infer is writing {self.output} (lock {self.path}); "
                f"wait for it to finish or choose another {self.option}"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.lock.release()


def separate_errors(output: str, errors: str) -> bool:
    """Whether the errors file is named apart from the output (`--errors FILE`), so that
    its own lock keeps two runs from writing it at once: two runs given one `--errors`
    wrote over each other's error rows. Not /dev/null (nothing is kept there)."""
    return errors not in (default_errors_path(output), os.devnull)


@contextlib.contextmanager
def output_locks(output: str, errors: str) -> Iterator[None]:
    """The output's lock (`OutputLock`), and the errors file's where it is named apart."""
    with OutputLock(output):
        if not separate_errors(output, errors):
            yield
            return
        with OutputLock(errors, "--errors"):
            yield
