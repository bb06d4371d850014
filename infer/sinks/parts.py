"""Outputs committed a block at a time: how the Ray engine (every format) and the local
engine (Parquet) keep exactly once and resume across workers, kills and restarts.

The sorted listing is cut into fixed blocks (block k = files k*B .. k*B+B-1). A finished
block is written as two whole files, `block-K-DIGEST.errors.EXT` then `block-K-DIGEST.EXT`
(each through a temporary file and a rename, or one PUT in an object store), the second
being the block's commit. DIGEST hashes the block's file names, so a part left by an
earlier run counts only for the very same files. A manifest records what else the rows
depend on (model, columns, block size); resuming with different ones is refused.

Where the parts live depends on the format:
- CSV and JSON lines: in a staging folder `OUTPUT.parts/` beside the output; at the end
  they are concatenated in block order into OUTPUT and its errors file (each atomically)
  and the folder is removed.
- Parquet: OUTPUT is itself a dataset folder (or object-store prefix) of
  `block-K-DIGEST.parquet` files, the errors one beside it likewise. Every committed part
  is a complete Parquet file, so pyarrow, pandas, polars, DuckDB and Ray Data read the
  folder at any moment (files starting with `_` or `.` are skipped by all of them);
  `_manifest.json` holds the job while it runs and, written last, `"complete": true` and
  the list of parts once the run has finished. Parts of blocks that are no longer in the
  listing are removed before the manifest is written.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Protocol, TypeVar

from cnnbench.files import atomic_open
from cnnbench.infer.errors import InferError
from cnnbench.infer.sinks.formats import (
    ERROR_FIELDNAMES,
    Format,
    encode,
    extension,
    format_of,
    header,
    read_part,
)
from cnnbench.infer.sinks.output import (
    A_FILE_NOT_A_DATASET,
    Earlier,
    check_same_job,
    read_record,
    record_job,
)
from cnnbench.infer.sinks.store import Store

MANIFEST = "manifest.json"  # in a staging folder
DATASET_MANIFEST = "_manifest.json"  # in a Parquet dataset folder: readers skip `_` files
PARTS_READ_AT_ONCE = 8  # committed parts read back at once for a resumed job's accuracy


def parts_dir(output: str) -> str:
    return f"{output}.parts"


def names_digest(names: Iterable[str]) -> str:
    """A short hash of a block's file names, in order."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:16]


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


def blocks(items: Iterable[N], size: int) -> Iterator[tuple[int, str, list[N]]]:
    """The listing cut into blocks of `size`: (k, digest of its names, its items)."""
    it = iter(items)
    k = 0
    while chunk := list(islice(it, size)):
        yield k, names_digest(item.name for item in chunk), chunk
        k += 1


def part_name(block: int, digest: str, ext: str) -> str:
    return f"block-{block:08d}-{digest}{ext}"


class Parts:
    """The committed blocks of one output and its errors file. `job` is what the rows
    depend on besides the files: a resumed run must have the same, or its parts would
    mix two jobs."""

    def __init__(self, output: str, errors: str, job: dict, resume: bool) -> None:
        self.output, self.errors, self.job = output, errors, job
        self.format = format_of(output)
        ext = extension(self.format)
        if self.format is Format.PARQUET:
            self.rows, self.failed = Store(output), Store(errors)
            self.manifest = DATASET_MANIFEST
            self.exts = (ext, ext)
        else:
            self.rows = self.failed = Store(parts_dir(output))
            self.manifest = MANIFEST
            self.exts = (ext, f".errors{ext}")
        self.where = self.rows.location
        self.resumed = resume and self.manifest in self.rows.names()  # an earlier run's
        if self.resumed:
            self._check_job()
            self._remove_torn()
        else:
            self._start()
        self.present = frozenset(self.rows.names())
        self.present_errors = frozenset(self.failed.names()) if self.dataset else self.present

    @property
    def dataset(self) -> bool:
        """Parts are the output itself (Parquet), not staged for a merge."""
        return self.format is Format.PARQUET

    def _check_job(self) -> None:
        where, todo = f"{self.rows.location}/{self.manifest}", "remove it to start over"
        old = read_record(where, lambda: self.rows.get(self.manifest), todo)
        check_same_job(self.where, old.get("job", old) if self.dataset else old, self.job)

    def _start(self) -> None:
        """A fresh run: nothing of an earlier one stays. A dataset folder that cnnbench
        did not write is not removed."""
        for store in {id(s): s for s in (self.rows, self.failed)}.values():
            names = store.names()
            if self.dataset and names and not (names & {DATASET_MANIFEST} or _all_parts(names)):
                if store.is_file():  # an object where the dataset goes (checked locally before)
                    raise InferError(f"{store.location}: {A_FILE_NOT_A_DATASET}")
                raise InferError(
                    f"{store.location} is a folder of other files (no {DATASET_MANIFEST}): "
                    "choose another -o/--errors, or remove it"
                )
            store.remove_all()
            store.make()
        self._write_manifest(complete=False)

    def _remove_torn(self) -> None:
        """The temporary file of a part that a killed run was writing (hidden, so no
        reader took it for a part; its block is redone)."""
        for store in {id(s): s for s in (self.rows, self.failed)}.values():
            for name in store.names():
                if name.startswith(".block-") and name.endswith(".tmp"):
                    store.remove(name)

    def _write_manifest(
        self, complete: bool, parts: Sequence[str] = (), error_parts: Sequence[str] = ()
    ) -> None:
        """The job, and for a dataset whether it is complete. The errors dataset has
        one too (saying whose errors it holds), written before the predictions' one,
        which is the run's last write."""
        doc: dict = self.job
        if self.dataset:
            doc = {"complete": complete, "format": self.format.value, "job": self.job}
            errors = doc | {"rows": self.rows.location}
            if complete:
                doc |= {"parts": list(parts), "errors": self.failed.location}
                errors |= {"parts": list(error_parts)}
            self.failed.put(self.manifest, _json(errors))
        self.rows.put(self.manifest, _json(doc))

    def _names(self, block: int, digest: str) -> tuple[str, str]:
        return part_name(block, digest, self.exts[0]), part_name(block, digest, self.exts[1])

    def is_done(self, block: int, digest: str) -> bool:
        """Both parts of the block, for exactly these files, are already there."""
        rows, errors = self._names(block, digest)
        return rows in self.present and errors in self.present_errors

    def write_block(
        self, block: int, digest: str, columns: Sequence[str], rows: list, errors: list
    ) -> None:
        """Errors part first, predictions part last: writing it commits the block."""
        rows_name, errors_name = self._names(block, digest)
        self.failed.put(errors_name, encode(self.format, ERROR_FIELDNAMES, errors))
        self.rows.put(rows_name, encode(self.format, columns, rows))

    def earlier(self, done: Sequence[tuple[int, str, int]], columns: Sequence[str]) -> Earlier:
        """The rows of committed blocks, (block, digest, files) each, read back for the
        job's accuracy (--resume), a few parts at a time (an object store's reads wait on
        the network). A part that no longer reads leaves its block's files unread: said,
        never silently left out."""
        earlier = Earlier()
        with ThreadPoolExecutor(PARTS_READ_AT_ONCE, thread_name_prefix="cnnbench-parts") as pool:
            for (_, _, files), rows in zip(
                done, pool.map(lambda block: self._read_rows(block, columns), done), strict=True
            ):
                if rows is None:
                    earlier.unread += files
                else:
                    earlier.rows += rows.items()
        return earlier

    def _read_rows(
        self, block: tuple[int, str, int], columns: Sequence[str]
    ) -> dict[str, str | None] | None:
        """A committed block's prediction rows, path to top-1 label; None where its part
        cannot be read (removed, or not a part cnnbench wrote)."""
        name = self._names(block[0], block[1])[0]
        try:
            return read_part(self.format, self.rows.get(name), f"{self.where}/{name}", columns)
        except (InferError, OSError):
            return None

    def keep_only(self, digests: Sequence[str]) -> None:
        """Remove the parts of blocks that are not in this listing (an earlier run's, over
        inputs that have changed since), so that no reader sees a file twice."""
        keep = [self._names(k, digest) for k, digest in enumerate(digests)]
        wanted = {name for pair in keep for name in pair} | {self.manifest}
        for store in {id(s): s for s in (self.rows, self.failed)}.values():
            for name in store.names() - wanted:
                if name.startswith("block-"):
                    store.remove(name)

    def finish(self, digests: Sequence[str], columns: Sequence[str]) -> None:
        """Every block is committed: merge the staged parts into the outputs (then
        remove them), or close the dataset with its manifest."""
        if not self.dataset:
            self.merge(digests, columns)
            record_job(self.output, self.job)
            shutil.rmtree(self.rows.root, ignore_errors=True)
            return
        self.keep_only(digests)
        names = [self._names(k, digest) for k, digest in enumerate(digests)]
        self._write_manifest(True, [n[0] for n in names], [n[1] for n in names])

    def merge(self, digests: Sequence[str], columns: Sequence[str]) -> None:
        """Every block's staged parts, in block order, into the two outputs (each
        atomically); a file starts with its header even when there is no block."""
        for path, errors, names in (
            (self.errors, True, ERROR_FIELDNAMES),
            (self.output, False, columns),
        ):
            with atomic_open(path, "wb") as out:
                out.write(header(self.format, names).encode())
                for block, digest in enumerate(digests):
                    with open(self.rows.path(self._names(block, digest)[errors]), "rb") as part:
                        if self.format is Format.CSV:
                            part.readline()  # its header
                        shutil.copyfileobj(part, out)


def _json(doc: dict) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode()


_PART = re.compile(r"\.?block-\d{8}-[0-9a-f]{16}\..+")  # a part, or its temporary file


def _all_parts(names: set[str]) -> bool:
    """Every file is a part of cnnbench's (an errors dataset written before errors
    datasets had a manifest), so the folder is one of its outputs."""
    return all(_PART.fullmatch(name) for name in names)
