"""Outputs by extension: CSV, JSON lines and Parquet hold the same rows; each survives
kill -9 and --resume exactly once; Parquet reads with pyarrow and DuckDB mid-run."""

from __future__ import annotations

import csv
import http.server
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    SLOW_FOLDER_FILES,
    S3Server,
    accuracy_of,
    assert_exactly_once,
    assert_one_line_error,
    cnnbench_fast_stores,
    committed_blocks,
    errors_of,
    make_zoo,
    paths,
    read_rows,
    run,
)


def infer_args(model: Path, folder: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["infer", str(model), str(folder), "-o", str(out), "--no-progress", *extra]


@pytest.fixture()
def labelled(tmp_path: Path, photo_jpeg: bytes) -> Path:
    """Class folders named like tiny_model's labels, other files, and bad files."""
    root = tmp_path / "labelled"
    make_zoo(root, photo_jpeg)
    for label in ("cat", "dog"):
        (root / label).mkdir()
        for i in range(3):
            (root / label / f"{i}.jpg").write_bytes(photo_jpeg)
    (root / "cat" / "bad.jpg").write_bytes(b"nope")
    return root


def test_every_format_holds_the_same_rows(tiny_model: Path, labelled: Path, tmp_path: Path):
    outs = {ext: tmp_path / f"pred.{ext}" for ext in ("csv", "jsonl", "parquet")}
    for out in outs.values():
        code, output = run([*infer_args(tiny_model, labelled, out, "--top-k", "2")])
        assert code == 0, output
    csv_rows, json_rows, parquet_rows = (read_rows(out) for out in outs.values())
    assert [r["path"] for r in csv_rows] == [r["path"] for r in json_rows]
    assert [r["path"] for r in json_rows] == [r["path"] for r in parquet_rows]
    assert list(csv_rows[0]) == list(json_rows[0]) == list(parquet_rows[0])
    assert list(csv_rows[0]) == [
        "path", "label", "score", "label_2", "score_2", "true_label", "correct",
    ]  # fmt: skip
    for c, j, p in zip(csv_rows, json_rows, parquet_rows, strict=True):
        assert c["label"] == j["label"] == p["label"] and c["label_2"] == p["label_2"]
        assert float(c["score"]) == pytest.approx(j["score"], abs=5e-7)
        assert np.float32(j["score"]) == np.float32(p["score"]), "the same float32"
        assert (c["true_label"] or None) == j["true_label"] == p["true_label"]
        assert {"": None, "1": True, "0": False}[c["correct"]] == j["correct"] == p["correct"]
    assert "=HYPERLINK(1).jpg" in [r["path"] for r in json_rows], "no CSV escaping"
    import pyarrow.parquet as pq

    schema = pq.read_schema(next(outs["parquet"].glob("block-*.parquet")))
    assert (
        str(schema.field("score").type) == "float" and str(schema.field("correct").type) == "bool"
    )
    errors = [read_rows(errors_of(out)) for out in outs.values()]
    assert [r["path"] for r in errors[0]] == [r["path"] for r in errors[2]]
    assert errors[1] == errors[2] and set(errors[1][0]) == {"path", "error"}
    manifest = json.loads((outs["parquet"] / "_manifest.json").read_text())
    assert manifest["complete"] is True and manifest["parts"]


def test_output_format_errors_are_one_line(tiny_model: Path, labelled: Path, tmp_path: Path):
    cases = [
        (["-o", str(tmp_path / "p.json")], "name it .jsonl"),
        (
            ["-o", str(tmp_path / "p.csv"), "--errors", str(tmp_path / "e.parquet")],
            "same extension",
        ),
        (["-o", "s3://bucket/p.csv"], "an object store takes a .parquet output"),
        # names of other encodings held CSV: zcat, pandas and Excel could not read them
        (["-o", str(tmp_path / "p.csv.gz")], "p.csv.gz: a compressed file is not written"),
        (["-o", str(tmp_path / "p.tsv")], "p.tsv: tab-separated values are not written"),
        (["-o", str(tmp_path / "p.xlsx")], "p.xlsx: an Excel workbook is not written"),
        (["-o", str(tmp_path / "p.csv"), "--errors", str(tmp_path / "e.tsv")], "e.tsv: tab-sep"),
        # the run's own lock (removed at the end, with the errors in it) and job record
        (["-o", str(tmp_path / "p.csv"), "--errors", str(tmp_path / "p.csv.lock")], "own lock"),
        (["-o", str(tmp_path / "p.csv"), "--summary", str(tmp_path / "p.csv.job.json")], "record"),
        (["-o", str(tmp_path / "e.csv.lock"), "--errors", str(tmp_path / "e.csv")], "own lock"),
    ]
    for args, needle in cases:
        code, output = run(["infer", str(tiny_model), str(labelled), *args, "--no-progress"])
        assert_one_line_error(code, output, needle)
    assert not list(tmp_path.glob("[pe].*")), "nothing written"
    foreign = tmp_path / "theirs.parquet"
    foreign.mkdir()
    (foreign / "data.parquet").write_bytes(b"someone else's")
    code, output = run(infer_args(tiny_model, labelled, foreign))
    assert_one_line_error(code, output, "is a folder of other files")
    assert (foreign / "data.parquet").exists()


def test_parquet_output_is_replaced_by_a_fresh_run(
    tiny_model: Path, labelled: Path, tmp_path: Path
):
    out = tmp_path / "pred.parquet"
    seen = []
    for _ in range(2):  # the second run replaces both datasets of the first
        code, output = run(infer_args(tiny_model, labelled, out))
        assert code == 0, output
        seen.append((paths(out), paths(errors_of(out))))
    assert seen[0] == seen[1] and "cat/bad.jpg" in seen[1][1]
    errors = json.loads((errors_of(out) / "_manifest.json").read_text())
    assert errors["complete"] is True and errors["rows"] == str(out)
    assert errors["parts"] == sorted(p.name for p in errors_of(out).glob("block-*"))
    (out / "_manifest.json").write_text("[]")
    code, output = run(infer_args(tiny_model, labelled, out, "--resume"))
    assert_one_line_error(
        code, output, "_manifest.json is not a record cnnbench wrote (a JSON list)"
    )
    (errors_of(out) / "_manifest.json").unlink()  # as written before errors had one
    code, output = run(infer_args(tiny_model, labelled, out))
    assert code == 0, output
    (errors_of(out) / "_manifest.json").unlink()
    (errors_of(out) / "notes.txt").write_text("someone else's")
    code, output = run(infer_args(tiny_model, labelled, out))
    assert_one_line_error(code, output, "errors.parquet is a folder of other files")
    assert (errors_of(out) / "notes.txt").exists()
    import pyarrow as pa
    import pyarrow.parquet as pq

    single = tmp_path / "single.parquet"  # as pandas' to_parquet writes one: a file
    pq.write_table(pa.table({"x": [1, 2]}), single)
    code, output = run(infer_args(tiny_model, labelled, single))
    assert_one_line_error(code, output, "single.parquet: it is a file (another tool's Parquet?)")
    assert pq.read_table(single).num_rows == 2, "kept"


def test_outputs_inside_the_input_are_not_read(tiny_model: Path, labelled: Path):
    """`--extensions '*'` reads every file, but never the job's own: its output, errors
    file, lock and summary, or a Parquet dataset's parts, inside the folder it reads."""
    summary = labelled / "dog" / "summary.json"
    every = ("--extensions", "*", "--summary", str(summary))
    for out in (labelled / "pred.csv", labelled / "cat" / "pred.parquet"):
        seen = []
        for _ in range(2):  # the second run finds the first one's files in the folder
            code, output = run(infer_args(tiny_model, labelled, out, *every))
            assert code == 0, output
            seen.append(paths(out) + paths(errors_of(out)))
        assert seen[0] == seen[1], "a rerun read its own files"
        own = (out.with_suffix(""), errors_of(out).with_suffix(""), summary)
        own_names = tuple(p.relative_to(labelled).as_posix() for p in own)
        assert not [p for p in seen[1] if p.startswith(own_names)]
    csv = labelled / "pred.csv"  # another job's files are inputs like any other
    assert run(infer_args(tiny_model, labelled, csv, *every))[0] == 0
    assert "cat/pred.parquet/_manifest.json" in paths(csv) + paths(errors_of(csv))


def test_outputs_inside_a_listed_folder_are_not_read(
    tiny_model: Path, labelled: Path, tmp_path: Path
):
    """A folder named by a line of an @list is read as one given on the command line:
    the job's own files inside it are not (a rerun read its output, errors file and job
    record as images, and each rerun one more)."""
    listed = tmp_path / "list.txt"
    listed.write_text(f"{labelled}\n")
    out = labelled / "cat" / "pred.csv"
    seen = []
    for _ in range(2):
        code, output = run(infer_args(tiny_model, f"@{listed}", out, "--extensions", "*"))
        assert code == 0, output
        seen.append(paths(out) + paths(errors_of(out)))
    assert seen[0] == seen[1], "a rerun read its own files"
    assert not [p for p in seen[1] if "/cat/pred." in p], seen[1]


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_resume_with_another_model_is_refused(
    tiny_model: Path, labelled: Path, tmp_path: Path, ext: str
):
    """An appended output records its job (OUTPUT.job.json), as a Parquet manifest does:
    rows of two models never end up in one file."""
    import onnx

    other = tmp_path / "other.onnx"  # the same model in other bytes
    model = onnx.load(tiny_model)
    model.doc_string = "another export"
    onnx.save(model, other)
    out = tmp_path / f"pred.{ext}"
    assert run(infer_args(tiny_model, labelled, out, "--limit", "5"))[0] == 0
    before = out.read_bytes()
    code, output = run(infer_args(other, labelled, out, "--resume"))
    assert_one_line_error(
        code, output, f"cannot resume: {out} was written by a job with another model_sha256"
    )
    assert out.read_bytes() == before
    code, output = run(infer_args(tiny_model, labelled, out, "--resume"))
    assert code == 0 and "5 already done (resumed)" in output, output
    # its accuracy counts every row of the job, the resumed ones included
    assert "not counted" not in output, output
    Path(f"{out}.job.json").write_text("{edited")
    code, output = run(infer_args(tiny_model, labelled, out, "--resume"))
    assert_one_line_error(code, output, f"{out}.job.json is not a record cnnbench wrote")
    Path(f"{out}.job.json").unlink()  # as an older cnnbench left it: nothing to check
    code, output = run(infer_args(other, labelled, out, "--resume"))
    assert code == 0 and "already done (resumed)" in output, output


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_resume_with_nothing_to_go_on_from_says_so(
    tiny_model: Path, labelled: Path, tmp_path: Path, ext: str
):
    """--resume naming an output no run wrote (the earlier run's was another name or
    extension) read every file again without a word; it says so before the rows."""
    out = tmp_path / f"pred.{ext}"
    code, output = run(infer_args(tiny_model, labelled, out, "--limit", "5", "--resume"))
    said = [line for line in output.splitlines() if line.startswith("--resume: ")]
    assert code == 0 and len(said) == 1, output
    assert said[0].startswith(f"--resume: no earlier run's output at {out} to go on from")
    code, output = run(infer_args(tiny_model, labelled, out, "--limit", "5", "--resume"))
    assert code == 0 and "5 already done (resumed)" in output, output
    assert "--resume: " not in output, "an earlier run's output is there"


def without_top1(out: Path, name: str) -> None:
    """`name`'s row in a CSV or JSON lines output with its top-1 label emptied, as an
    edited file or another writer may leave it."""
    if out.suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        rows = [r | {"label": None} if r["path"] == name else r for r in rows]
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    at = rows[0].index("label")
    for row in rows:
        row[at] = "" if row[0] == name else row[at]
    with open(out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_resumed_rows_that_cannot_be_scored_are_said_not_counted(
    tiny_model: Path, labelled: Path, tmp_path: Path, ext: str
):
    """A finished job resumed: its accuracy is its earlier rows' (it printed none: no row
    was this run's). An earlier row in a class folder with no top-1 label cannot be
    scored: the line says it is left out, never a figure over the rest as the whole."""
    out, summary = tmp_path / f"pred.{ext}", tmp_path / "s.json"
    code, first = run(infer_args(tiny_model, labelled, out, "--summary", str(summary)))
    assert code == 0, first
    whole = json.loads(summary.read_text())
    assert whole["output"] == str(out) and whole["errors_file"] == str(errors_of(out))
    code, again = run(infer_args(tiny_model, labelled, out, "--resume"))
    assert code == 0 and "\n0 images, 0 errors, " in again, again
    assert accuracy_of(again) == accuracy_of(first)
    without_top1(out, "cat/1.jpg")
    code, edited = run(infer_args(tiny_model, labelled, out, "--resume", "--summary", str(summary)))
    assert code == 0, edited
    doc = json.loads(summary.read_text())
    assert doc["labelled"] == whole["labelled"] - 1 and doc["resumed_not_counted"] == 1
    said = f"{doc['correct']}/{doc['labelled']}; not counted: 1 resumed file whose rows could"
    assert said in accuracy_of(edited), edited


def test_resumed_part_that_cannot_be_read_is_said_not_counted(
    tiny_model: Path, labelled: Path, tmp_path: Path
):
    """A committed Parquet part that no longer reads: its block's files are said to be
    left out of the accuracy; the run does not fail for it."""
    out = tmp_path / "pred.parquet"
    code, first = run(infer_args(tiny_model, labelled, out, "--block-size", "4"))
    assert code == 0, first
    code, again = run(infer_args(tiny_model, labelled, out, "--block-size", "4", "--resume"))
    assert code == 0 and accuracy_of(again) == accuracy_of(first), again
    (out / sorted(committed_blocks(out))[-2]).write_bytes(b"not parquet")
    code, output = run(infer_args(tiny_model, labelled, out, "--block-size", "4", "--resume"))
    assert code == 0, output
    assert "; not counted: 4 resumed files whose rows could not be read back)" in output
    for part in committed_blocks(out):  # none reads: no figure at all, and it says why
        (out / part).write_bytes(b"not parquet")
    code, output = run(infer_args(tiny_model, labelled, out, "--block-size", "4", "--resume"))
    assert code == 0 and "27 already done" in output, output
    assert "accuracy not measured (not counted: 27 resumed files whose rows could" in output


def command(model: Path, folder: Path, out: Path | str, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "cnnbench", *infer_args(model, folder, out)]
    return [*args, "--batch-size", "8", "--workers", "1", *extra]


def wait_until(done, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.02)


def test_jsonl_kill_then_resume(tiny_model: Path, slow_folder: Path, tmp_path: Path):
    out = tmp_path / "pred.jsonl"
    proc = subprocess.Popen(command(tiny_model, slow_folder, out), stderr=subprocess.PIPE)
    wait_until(lambda: out.exists() and out.read_bytes().count(b"\n") > 40, proc, "rows")
    proc.kill()
    proc.wait()
    with open(out, "ab") as f:
        f.write(b'{"path": "img_99')  # as if killed in the middle of a line
    done = subprocess.run(
        command(tiny_model, slow_folder, out, "--resume"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "already done (resumed)" in done.stderr
    assert_exactly_once(slow_folder, out)


def assert_readable_once(out: Path) -> int:
    """pyarrow and DuckDB read the dataset folder with every path once; its row count."""
    import duckdb

    names = paths(out)
    assert len(names) == len(set(names))
    query = f"select count(*), count(distinct path) from '{out}/*.parquet'"
    with duckdb.connect() as db:
        found = db.execute(query).fetchall()
    assert found == [(len(names), len(names))]
    return len(names)


def test_parquet_kill_then_resume_readable_throughout(
    tiny_model: Path, slow_folder: Path, tmp_path: Path
):
    out = tmp_path / "pred.parquet"
    args = ("--block-size", "50")
    proc = subprocess.Popen(command(tiny_model, slow_folder, out, *args), stderr=subprocess.PIPE)
    wait_until(lambda: len(committed_blocks(out)) >= 2, proc, "two blocks")
    mid_run = assert_readable_once(out)  # while the run goes on
    assert (
        mid_run >= 2 * 50 - 1 and not json.loads((out / "_manifest.json").read_text())["complete"]
    )
    proc.kill()
    proc.wait()
    blocks = len(committed_blocks(out))
    assert 2 <= blocks < math.ceil((SLOW_FOLDER_FILES + 1) / 50), "killed mid-run"
    done = subprocess.run(
        command(tiny_model, slow_folder, out, *args, "--resume"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"{blocks * 50} already done (resumed)" in done.stderr
    assert_exactly_once(slow_folder, out)
    assert assert_readable_once(out) == len(paths(out))
    assert json.loads((out / "_manifest.json").read_text())["complete"] is True
    local = tmp_path / "once.parquet"
    assert subprocess.run(command(tiny_model, slow_folder, local, *args)).returncode == 0
    assert read_rows(local) == read_rows(out), "the same rows as a run never stopped"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with an empty bucket `out`."""
    server = S3Server(tmp_path_factory.mktemp("moto") / "server.log")
    server.client().create_bucket(Bucket="out")
    yield server
    server.stop()


def s3_rows(s3: S3Server, prefix: str, bucket: str = "out") -> tuple[list[str], list[dict]]:
    """The object names under a prefix, and the rows of its Parquet parts in name order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    tables = [
        pq.read_table(pa.BufferReader(client.get_object(Bucket=bucket, Key=k)["Body"].read()))
        for k in sorted(keys)
        if k.endswith(".parquet")
    ]
    return [k.removeprefix(prefix) for k in sorted(keys)], pa.concat_tables(tables).to_pylist()


def test_s3_parquet_output(
    s3: S3Server, tiny_model: Path, labelled: Path, tmp_path: Path, monkeypatch
):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    local = tmp_path / "local.parquet"
    assert run(infer_args(tiny_model, labelled, local, "--block-size", "7"))[0] == 0
    url = "s3://out/run/pred.parquet"
    code, output = run(infer_args(tiny_model, labelled, url, "--block-size", "7"))
    assert code == 0, output
    names, rows = s3_rows(s3, "run/pred.parquet/")
    assert names == sorted(os.listdir(local)), "the same parts and manifest as on a disk"
    assert rows == read_rows(local)
    errors = s3_rows(s3, "run/pred.errors.parquet/")[1]
    assert errors == read_rows(errors_of(local))
    manifest = s3.client().get_object(Bucket="out", Key="run/pred.parquet/_manifest.json")
    assert json.loads(manifest["Body"].read())["complete"] is True
    again = run(infer_args(tiny_model, labelled, url, "--block-size", "7", "--resume"))
    assert again[0] == 0 and f"{len(rows) + len(errors)} already done" in again[1]
    assert accuracy_of(again[1]) == accuracy_of(output), "the parts read back from the bucket"
    assert s3_rows(s3, "run/pred.parquet/")[1] == rows
    code, output = run(infer_args(tiny_model, labelled, "s3://no-such-bucket/p.parquet"))
    assert_one_line_error(code, output, "s3://no-such-bucket")
    s3.client().put_object(Bucket="out", Key="taken.parquet", Body=b"PAR1 of pandas")
    code, output = run(infer_args(tiny_model, labelled, "s3://out/taken.parquet"))
    assert_one_line_error(code, output, "s3://out/taken.parquet: it is a file (another tool's")
    assert (
        s3.client().get_object(Bucket="out", Key="taken.parquet")["Body"].read()
        == b"PAR1 of pandas"
    )


class _SilentPuts(http.server.BaseHTTPRequestHandler):
    """In front of moto: every request passed on, but a PUT (an upload) never answered,
    not even its `Expect: 100-continue`, as a store that stopped answering mid-run."""

    upstream = ""
    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        time.sleep(300)  # the client gives up first (its connection is closed then)

    def _pass_on(self) -> None:
        import urllib.error
        import urllib.request

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        request = urllib.request.Request(
            self.upstream + self.path, body, headers, method=self.command
        )
        try:
            with urllib.request.urlopen(request) as answer:
                status, got, data = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as e:
            status, got, data = e.code, e.headers, e.read()
        self.send_response(status)
        for key, value in got.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_HEAD = do_DELETE = do_POST = _pass_on

    def log_message(self, *args: object) -> None:
        pass


def test_s3_output_that_stops_answering_is_one_line_in_bounded_time(
    s3: S3Server, tiny_model: Path, labelled: Path, tmp_path: Path
) -> None:
    """Uploads to a store that takes the connection and never answers: botocore asks for
    `Expect: 100-continue` and aiohttp waits for it with no timeout, so the run waited
    on its first part for good (killed at 400 s). Each upload now has its deadline
    (here READ_TIMEOUT_S 1 s: 2 s a try, 3 tries): one line naming the part and
    --resume, nothing committed lost; the --resume then writes every file once."""
    _SilentPuts.upstream = s3.url
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SilentPuts)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    url = "s3://out/silent/p.parquet"
    args = infer_args(tiny_model, labelled, url)
    env = os.environ | s3.env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.server_port}"}
    start = time.monotonic()
    try:
        done = cnnbench_fast_stores(args, env, timeout=90, read_timeout_s=1)
    finally:
        proxy.shutdown()
    assert time.monotonic() - start < 60
    assert_one_line_error(
        done.returncode, done.stderr, "cannot write the output: no answer for s3://out/silent/p"
    )
    assert "--resume" in done.stderr.splitlines()[-1]
    with pytest.MonkeyPatch.context() as env_now:
        for key, value in s3.env.items():
            env_now.setenv(key, value)
        code, output = run([*args, "--resume"])
    assert code == 0, output
    rows = s3_rows(s3, "silent/p.parquet/")[1]
    assert len(rows) == len({r["path"] for r in rows}) > 0


def test_s3_outputs_inside_the_input_prefix_are_not_read(
    s3: S3Server, tiny_model: Path, labelled: Path, tmp_path: Path, monkeypatch
):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    s3.upload("inside", labelled, "set/")
    url = "s3://inside/set/run/pred.parquet"
    seen = []
    for _ in range(2):
        code, output = run(infer_args(tiny_model, "s3://inside/set/", url, "--extensions", "*"))
        assert code == 0, output
        rows = s3_rows(s3, "set/run/pred.parquet/", "inside")[1]
        rows += s3_rows(s3, "set/run/pred.errors.parquet/", "inside")[1]
        seen.append([r["path"] for r in rows])
    assert seen[0] == seen[1] and not [p for p in seen[1] if p.startswith("run/")]
    listed = tmp_path / "list.txt"  # the prefix named by a list's line: the same
    listed.write_text("s3://inside/set/\n")
    url = "s3://inside/set/listed/pred.parquet"
    for _ in range(2):
        code, output = run(infer_args(tiny_model, f"@{listed}", url, "--extensions", "*"))
        assert code == 0, output
        rows = s3_rows(s3, "set/listed/pred.parquet/", "inside")[1]
        rows += s3_rows(s3, "set/listed/pred.errors.parquet/", "inside")[1]
        assert not [r["path"] for r in rows if "/listed/" in r["path"]], rows


def test_s3_parquet_kill_then_resume(
    s3: S3Server, tiny_model: Path, slow_folder: Path, tmp_path: Path
):
    url, prefix = "s3://out/killed/pred.parquet", "killed/pred.parquet/"
    env = os.environ | s3.env
    args = command(tiny_model, slow_folder, url, "--block-size", "50")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, env=env)
    client = s3.client()

    def blocks() -> int:
        found = client.list_objects_v2(Bucket="out", Prefix=f"{prefix}block-")
        return found.get("KeyCount", 0)

    wait_until(lambda: blocks() >= 2, proc, "two parts in the bucket")
    proc.kill()
    proc.wait()
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    rows = s3_rows(s3, prefix)[1] + s3_rows(s3, "killed/pred.errors.parquet/")[1]
    found = [r["path"] for r in rows]
    expected = sorted(p.relative_to(slow_folder).as_posix() for p in slow_folder.rglob("*.png"))
    assert sorted(found) == expected, "every file exactly once"


def test_parts_of_another_listing_are_removed_before_new_ones(tmp_path: Path):
    """A Parquet dataset resumed over inputs that changed: parts of blocks that are not in
    the new listing go before any new block is written, so no reader sees a file twice."""
    from cnnbench.infer.sinks.parts import Parts, names_digest

    out, errors = tmp_path / "p.parquet", tmp_path / "p.errors.parquet"
    columns, job = ["path", "label", "score"], {"model_sha256": "m", "block_size": 2}
    old, new = [names_digest(["a", "b"]), names_digest(["c"])], [names_digest(["a", "new"])]
    parts = Parts(str(out), str(errors), job, resume=False)
    for k, (digest, names) in enumerate(zip(old, (["a", "b"], ["c"]), strict=True)):
        rows = [{"path": n, "label": "x", "score": 0.5} for n in names]
        parts.write_block(k, digest, columns, rows, [])
    assert sorted(paths(out)) == ["a", "b", "c"]
    torn = out / f".block-00000002-{new[0]}.parquet.1234abcd.tmp"  # a killed run's
    torn.write_bytes(b"half a part")
    again = Parts(str(out), str(errors), job, resume=True)
    assert not torn.exists(), "a resumed run removes what a killed one was writing"
    assert not again.is_done(0, new[0])
    again.keep_only(new)
    assert paths(out) == [] and paths(errors) == []
    again.write_block(0, new[0], columns, [{"path": "a", "label": "y", "score": 0.25}], [])
    again.finish(new, columns)
    assert paths(out) == ["a"]
    parts_listed = json.loads((out / "_manifest.json").read_text())["parts"]
    assert parts_listed == sorted(n for n in os.listdir(out) if n.startswith("block-"))


def test_csv_cut_inside_a_quoted_newline_resumes_exactly_once(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
):
    """A CSV row whose path holds a newline is quoted across two lines: a kill after that
    newline left `im_1\\n` behind, and --resume cut only past the last newline, so the
    next rows were appended inside the open quote (a file swallowed into a cell)."""
    folder = tmp_path / "names"
    folder.mkdir()
    for i in range(6):
        (folder / f"im_{i}\nline.jpg").write_bytes(photo_jpeg)
    out, whole = tmp_path / "pred.csv", tmp_path / "whole.csv"
    assert run(infer_args(tiny_model, folder, whole, "--batch-size", "2"))[0] == 0
    text = whole.read_bytes()
    out.write_bytes(text[: text.index(b'"im_3\n') + len(b'"im_3\n')])  # killed there
    errors_of(out).write_bytes(errors_of(whole).read_bytes())
    code, output = run(infer_args(tiny_model, folder, out, "--batch-size", "2", "--resume"))
    assert code == 0 and "3 already done (resumed)" in output, output
    assert read_rows(out) == read_rows(whole)


def test_torn_csv_row_is_cut_whole_whatever_the_chunk(tmp_path: Path):
    """cut_torn_line reads back a chunk at a time: a quoted newline across a chunk's edge
    is still inside its cell."""
    from cnnbench.infer.sinks.formats import cut_torn_line

    rows = b'path,label\r\n"a\nb",x\r\n"c""\n",y\r\n'
    for torn in (b'"d\n', b'"d\ne",', b'"d""\n\n', b"e,"):
        for chunk in range(1, len(rows) + 8):
            path = tmp_path / "p.csv"
            path.write_bytes(rows + torn)
            cut_torn_line(str(path), quoted=True, chunk=chunk)
            assert path.read_bytes() == rows, (torn, chunk)


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_a_disk_that_fills_up_leaves_whole_rows(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path, ext: str
):
    """The disk fills up mid-run (here a file size limit: EFBIG, as a full disk's ENOSPC):
    one line naming the output, and the output ends with its last whole batch, where it
    ended inside a row (a reader got a row of empty cells until a --resume cut it);
    --resume later finishes every file exactly once."""
    import resource

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(60):
        (folder / f"img_{i:03d}.png").write_bytes(photo_jpeg)  # a JPEG named .png
    out = tmp_path / f"pred.{ext}"
    args = command(tiny_model, folder, out, "--top-k", "3")
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))  # noqa: E731
    done = subprocess.run(args, capture_output=True, text=True, preexec_fn=limit)
    assert_one_line_error(done.returncode, done.stderr, f"cannot write {out}: File too large")
    assert "--resume" in done.stderr
    written = read_rows(out)
    assert 0 < len(written) < 60 and len(written) % 8 == 0, "whole batches only"
    assert all(row["label_3"] and row["score_3"] for row in written), "no torn row"
    again = subprocess.run([*args, "--resume"], capture_output=True, text=True)
    assert again.returncode == 0 and f"{len(written)} already done" in again.stderr, again.stderr
    assert_exactly_once(folder, out)


def test_an_output_named_as_a_folder_is_one_line(tiny_model: Path, labelled: Path, tmp_path: Path):
    """-o, --errors or --summary ending in '/' (and no folder there): one line before
    anything runs; they were a message naming a hidden temporary file (`.s.1234.tmp:
    Not a directory`), the summary's after the whole run. A Parquet -o is a folder."""
    out = str(tmp_path / "p.csv")
    for args in (
        ["-o", f"{tmp_path}/new/"],
        ["-o", f"{out}/"],
        ["-o", out, "--errors", f"{tmp_path}/e.csv/"],
        ["-o", out, "--summary", f"{tmp_path}/s/"],
    ):
        code, output = run(["infer", str(tiny_model), str(labelled), *args, "--no-progress"])
        assert_one_line_error(code, output, "/: a name ending in / is a folder's")
    assert os.listdir(tmp_path) == ["labelled"], "nothing written"
    code, output = run(infer_args(tiny_model, labelled, f"{tmp_path}/p.parquet/"))
    assert code == 0, output


def test_a_file_inside_a_parquet_dataset_is_one_line(
    tiny_model: Path, labelled: Path, tmp_path: Path
):
    """--summary or --errors inside a Parquet output's folder (or -o inside its errors
    dataset's): one line. A summary there made pandas.read_parquet and pyarrow fail on
    the dataset (not Parquet), an errors dataset there was read as rows of nulls."""
    out = tmp_path / "p.parquet"
    assert run(infer_args(tiny_model, labelled, out))[0] == 0
    before = read_rows(out)
    for args in (
        ["-o", str(out), "--summary", str(out / "s.json")],
        ["-o", str(out), "--errors", str(out / "e.parquet")],
        ["-o", str(errors_of(out) / "q.parquet"), "--errors", str(errors_of(out))],
    ):
        code, output = run(["infer", str(tiny_model), str(labelled), *args, "--no-progress"])
        assert_one_line_error(code, output, "is inside the Parquet dataset", "beside it")
    assert sorted(os.listdir(out)) == ["_manifest.json", *committed_blocks(out)]
    assert read_rows(out) == before


def test_names_that_differ_are_written_apart(tiny_model: Path, photo_jpeg: bytes, tmp_path: Path):
    """A name's bytes that are not UTF-8 are written `\\xNN`; a name holding those very
    characters was written the same, so two files shared a path and --resume skipped the
    second unread. A name that holds `\\xNN` or `\\\\` now has its backslashes doubled,
    as `ls -b` writes them; other backslashes (keys from Windows) stay as they are."""
    folder = tmp_path / "names"
    folder.mkdir()
    names = [os.fsdecode(b"latin1-\xe9.jpg"), "latin1-\\xe9.jpg", "a\\\\b.jpg", "win\\2024\\x.jpg"]
    for name in names:
        (folder / name).write_bytes(photo_jpeg)
    out = tmp_path / "pred.csv"
    assert run(infer_args(tiny_model, folder, out, "--limit", "1"))[0] == 0
    code, output = run(infer_args(tiny_model, folder, out, "--resume"))
    assert code == 0 and "1 already done (resumed)" in output, output
    assert sorted(paths(out)) == sorted(
        ["latin1-\\xe9.jpg", "latin1-\\\\xe9.jpg", "a\\\\\\\\b.jpg", "win\\2024\\x.jpg"]
    )
