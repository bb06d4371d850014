"""Per-block CSV shards beside the output, and their merge: how the Ray engine keeps
exactly once and resume across workers and restarts.

The sorted listing is cut into fixed blocks (block k = files k*B .. k*B+B-1). A finished
block is written as two shards in `OUTPUT.parts/`: `block-K-DIGEST.errors.csv`, then
`block-K-DIGEST.csv`, each through a temporary file and a rename, the second rename
being the block's commit. DIGEST hashes the block's file names, so a shard left by an
earlier run counts only for the very same files. `manifest.json` records what else the
rows depend on (model, columns, block size); resuming with different ones is refused.
The merge concatenates the shards in block order into the output, again atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence

from cnnbench.files import atomic_open
from cnnbench.infer.errors import InferError
from cnnbench.infer.sinks.output import ERROR_FIELDNAMES

MANIFEST = "manifest.json"


def parts_dir(output: str) -> str:
    return f"{output}.parts"


def names_digest(names: Iterable[str]) -> str:
    """A short hash of a block's file names, in order."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:16]


def _atomic_write(path: str, text: str) -> None:
    with atomic_open(path, newline="") as f:
        f.write(text)


def _csv_text(columns: Sequence[str], rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class Parts:
    """The shards folder of one output. `job` is what the rows depend on besides the
    files: a resumed run must have the same, or its shards would mix two jobs."""

    def __init__(self, output: str, job: dict, resume: bool) -> None:
        self.dir = parts_dir(output)
        manifest = os.path.join(self.dir, MANIFEST)
        if resume and os.path.isfile(manifest):
            with open(manifest, encoding="utf-8") as f:
                old = json.load(f)
            changed = sorted(k for k in job.keys() | old.keys() if job.get(k) != old.get(k))
            if changed:
                raise InferError(
                    f"cannot resume: {self.dir} was written by a job with another "
                    f"{', '.join(changed)}; rerun with the same options, or without --resume"
                )
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir)
            _atomic_write(manifest, json.dumps(job, indent=2, sort_keys=True))
        self.present = frozenset(os.listdir(self.dir))

    def _path(self, block: int, digest: str, errors: bool = False) -> str:
        suffix = ".errors.csv" if errors else ".csv"
        return os.path.join(self.dir, f"block-{block:08d}-{digest}{suffix}")

    def is_done(self, block: int, digest: str) -> bool:
        """Both shards of the block, for exactly these files, are already there."""
        names = (self._path(block, digest), self._path(block, digest, errors=True))
        return all(os.path.basename(p) in self.present for p in names)

    def write_block(
        self, block: int, digest: str, columns: Sequence[str], rows: list, errors: list
    ) -> None:
        """Errors shard first, predictions shard last: its rename commits the block."""
        _atomic_write(self._path(block, digest, errors=True), _csv_text(ERROR_FIELDNAMES, errors))
        _atomic_write(self._path(block, digest), _csv_text(columns, rows))

    def merge(self, digests: Sequence[str], output: str, errors_path: str) -> None:
        """Every block's shards, in block order, into the two outputs (each atomically)."""
        for path, errors in ((errors_path, True), (output, False)):
            with atomic_open(path, "wb") as out:
                for block, digest in enumerate(digests):
                    with open(self._path(block, digest, errors), "rb") as shard:
                        header = shard.readline()
                        if block == 0:
                            out.write(header)
                        shutil.copyfileobj(shard, out)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
