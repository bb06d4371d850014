"""The three output formats, chosen by the file's extension: one schema, three encodings.

Rows are dicts of typed values, as the engines make them: `path`, `label*` and
`true_label` are strings, `score*` floats (float32 values), `correct` a bool; None where a
file has no truth. Each format writes the same columns in the same order:

- CSV: text cells; scores with 6 decimals, None as an empty cell, `correct` as 1/0, and a
  cell that a spreadsheet would read as a formula escaped with a leading `'`.
- JSON lines: one object per line; scores as the shortest decimal that reads back as the
  same float32, None as null.
- Parquet: scores float32, `correct` bool, the rest strings; null for None.

CSV and JSON lines are appended to and flushed per batch (a line cut by a kill is cut off
on resume); Parquet is written a whole file per block (parts.py).
"""

from __future__ import annotations

import csv
import enum
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import numpy as np

from cnnbench.infer.errors import InferError, first_line

ERROR_FIELDNAMES = ("path", "error")
TOP1 = "label"  # the top-1 label's column: what a resumed run scores an earlier row by
# A cell starting with one of these is read as a formula by spreadsheets; "'" itself is
# escaped too, so that escaping is reversible (resume reads the names back).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "'")


class Format(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"

    @property
    def appendable(self) -> bool:
        """Rows can be appended to one file and a torn last row cut off (text lines)."""
        return self is not Format.PARQUET


EXTENSIONS = {".jsonl": Format.JSONL, ".ndjson": Format.JSONL, ".parquet": Format.PARQUET}
# Extensions of encodings other than the three: refused, not written as CSV under that name
OTHER_ENCODINGS = {
    ".tsv": "tab-separated values are",
    ".xlsx": "an Excel workbook is",
    ".xls": "an Excel workbook is",
    **dict.fromkeys((".gz", ".bz2", ".xz", ".zst", ".zip"), "a compressed file is"),
}


def format_of(path: str) -> Format:
    """The format an output path asks for; any extension but these, and those of other
    encodings (`OTHER_ENCODINGS`: a name that promised one would have held CSV), is CSV."""
    ext = os.path.splitext(path.rstrip("/"))[1].lower()
    if ext == ".json":
        raise InferError(
            f"{path}: a .json output would be one document that no run can append to; "
            "name it .jsonl (one JSON object per line), .csv or .parquet"
        )
    if ext in OTHER_ENCODINGS:
        raise InferError(
            f"{path}: {OTHER_ENCODINGS[ext]} not written (it would hold CSV under that name); "
            "name it .csv, .jsonl or .parquet (compressed, columnar)"
        )
    return EXTENSIONS.get(ext, Format.CSV)


def extension(fmt: Format) -> str:
    return f".{fmt.value}"


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


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6f}"
    return safe_cell(str(value))


def _json_value(value: object) -> object:
    """A float32 score as the shortest decimal that reads back as the same float32."""
    if isinstance(value, float):
        return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))
    return value


def encode_lines(fmt: Format, columns: Sequence[str], rows: Iterable[dict]) -> str:
    """Rows as CSV or JSON lines text (no CSV header)."""
    if fmt is Format.JSONL:
        return "".join(
            json.dumps({c: _json_value(row.get(c)) for c in columns}, ensure_ascii=False) + "\n"
            for row in rows
        )
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerows([_csv_cell(row.get(c)) for c in columns] for row in rows)
    return buf.getvalue()


def header(fmt: Format, columns: Sequence[str]) -> str:
    """What a new file starts with: the CSV header line; nothing for JSON lines."""
    if fmt is not Format.CSV:
        return ""
    buf = io.StringIO()
    csv.writer(buf).writerow(columns)
    return buf.getvalue()


def arrow_schema(columns: Sequence[str]) -> Any:
    """The Parquet columns: scores float32, `correct` bool, the rest strings."""
    import pyarrow as pa

    def kind(name: str) -> Any:
        if name.startswith("score"):
            return pa.float32()
        return pa.bool_() if name == "correct" else pa.string()

    return pa.schema([(name, kind(name)) for name in columns])


def encode(fmt: Format, columns: Sequence[str], rows: Sequence[dict]) -> bytes:
    """A whole file of rows (a block's part): with its header, or a Parquet file."""
    if fmt is not Format.PARQUET:
        return (header(fmt, columns) + encode_lines(fmt, columns, rows)).encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(columns)
    table = pa.table({c: [row.get(c) for row in rows] for c in columns}, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def cut_torn_line(path: str, quoted: bool = False, chunk: int = 1 << 16) -> None:
    """A run killed in the middle of writing a line left part of it: cut it off (the
    file is read back from its end, a chunk at a time, to the last newline that ends a
    row). `quoted` (CSV): a newline inside a quoted cell (a name or label holding one)
    ends no row; a row ends at a newline with an even count of quotes before it."""
    with open(path, "rb+") as f:
        end = pos = f.seek(0, os.SEEK_END)
        before = _quotes(f) if quoted else 0  # the quotes before `pos`
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            data = f.read(pos - start)
            before -= data.count(b'"') if quoted else 0
            if (at := _row_end(data, before, quoted)) >= 0:
                pos = start + at + 1
                break
            pos = start
        if pos < end:
            f.truncate(pos)


def _quotes(f: IO[bytes]) -> int:
    """How many quote characters the whole file holds (read a chunk at a time)."""
    f.seek(0)
    return sum(block.count(b'"') for block in iter(lambda: f.read(1 << 20), b""))


def _row_end(data: bytes, before: int, quoted: bool) -> int:
    """Where in `data` its last newline that ends a row is (-1: none); `before`: the
    quotes in the file before `data`."""
    at = len(data)
    while (at := data.rfind(b"\n", 0, at)) >= 0:
        if not quoted or (before + data.count(b'"', 0, at)) % 2 == 0:
            return at
    return -1


def _refuse(path: str, found: Sequence[str], expected: Sequence[str]) -> InferError:
    return InferError(
        f"cannot resume: {path} has columns {','.join(found)}, this run writes "
        f"{','.join(expected)}; use the same --top-k, or run without --resume"
    )


def read_written(
    fmt: Format, path: str, expected: Sequence[str]
) -> tuple[dict[str, str | None], bool]:
    """The rows of a CSV or JSON lines file left by an earlier (maybe killed) run, and
    whether it has rows or a header to append after. A torn last line is cut off first.
    Each path comes with its top-1 label (`top1_of`), which a resumed run scores to give
    the whole job's accuracy."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return {}, False
    cut_torn_line(path, quoted=fmt is Format.CSV)
    with open(path, newline="", encoding="utf-8") as f:
        return _read_text(fmt, f, path, expected)


def read_part(
    fmt: Format, data: bytes, where: str, expected: Sequence[str]
) -> dict[str, str | None]:
    """The rows of a committed part (parts.py), each path with its top-1 label."""
    if fmt is Format.PARQUET:
        return _parquet_rows(data, where)
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
    return _read_text(fmt, text, where, expected)[0]


def top1_of(value: object) -> str | None:
    """A row's top-1 label as written: None where the row has none to score (an errors
    file's row, an empty cell, a null). Interned: a million rows hold a few labels."""
    return sys.intern(value) if isinstance(value, str) and value else None


def _read_text(
    fmt: Format, f: IO[str], where: str, expected: Sequence[str]
) -> tuple[dict[str, str | None], bool]:
    try:
        return (_json_rows if fmt is Format.JSONL else _csv_rows)(f, where, expected)
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, TypeError) as e:
        raise InferError(
            f"cannot resume: {where} is not an output cnnbench wrote ({first_line(e)}); run "
            "without --resume (a fresh run replaces it), or choose another -o"
        ) from e


def _csv_rows(f: IO[str], path: str, expected: Sequence[str]) -> tuple[dict[str, str | None], bool]:
    reader = csv.reader(f)
    found = next(reader, None)
    if found is None:
        return {}, False
    if list(found) != list(expected):
        raise _refuse(path, found, expected)
    at = list(expected).index(TOP1) if TOP1 in expected else None
    return {unsafe_cell(row[0]): _csv_top1(row, at) for row in reader if row}, True


def _csv_top1(row: list[str], at: int | None) -> str | None:
    """The top-1 label cell of a CSV row (at: its column; None in an errors file)."""
    return top1_of(unsafe_cell(row[at])) if at is not None and at < len(row) else None


def _json_rows(
    f: IO[str], path: str, expected: Sequence[str]
) -> tuple[dict[str, str | None], bool]:
    rows: dict[str, str | None] = {}
    for line in _lines(f):
        row = json.loads(line)
        if list(row) != list(expected):
            raise _refuse(path, list(row), expected)
        rows[row["path"]] = top1_of(row.get(TOP1))
    return rows, bool(rows)


def _parquet_rows(data: bytes, where: str) -> dict[str, str | None]:
    """A Parquet part's paths and top-1 labels (None for all where the column is absent)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        part = pq.ParquetFile(io.BytesIO(data))
        columns = [c for c in ("path", TOP1) if c in part.schema_arrow.names]
        table = part.read(columns=columns).to_pydict()
    except pa.ArrowException as e:
        raise InferError(f"{where} is not a Parquet part cnnbench wrote ({first_line(e)})") from e
    if "path" not in table:
        raise InferError(f"{where} has no path column: not a part cnnbench wrote")
    labels = table.get(TOP1, [None] * len(table["path"]))
    return {path: top1_of(label) for path, label in zip(table["path"], labels, strict=True)}


def _lines(f: IO[str]) -> Iterator[str]:
    return (line for line in f if line.strip())
