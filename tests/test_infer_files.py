"""Exactly once: every file under the inputs ends in one row, predictions or errors."""

from __future__ import annotations

import csv
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, make_zoo, run, write_png

from cnnbench.cli import cli
from cnnbench.infer.decode.images import decode, load_image, reduction_for
from cnnbench.infer.decode.probe import Header, read_header
from cnnbench.infer.runtime.preprocess import EVAL_CROP
from cnnbench.infer.sinks.formats import unsafe_cell


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_file_lands_once(tiny_model: Path, photo_jpeg: bytes, tmp_path: Path) -> None:
    good, bad = make_zoo(tmp_path / "zoo", photo_jpeg)
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(
        cli,
        ["infer", str(tiny_model), str(tmp_path / "zoo"), "-o", str(out), "--batch-size", "4"],
    )
    assert result.exit_code == 0, result.output
    rows, errors = read_csv(out), read_csv(tmp_path / "pred.errors.csv")
    predicted = [unsafe_cell(r["path"]) for r in rows]
    failed = {unsafe_cell(r["path"]): r["error"] for r in errors}
    assert sorted(predicted) == sorted(good), "sorted input order, each good file once"
    assert predicted == sorted(predicted)
    assert set(failed) == bad and len(errors) == len(bad)
    assert "empty" in failed["zero.jpg"]
    assert "truncated" in failed["truncated.jpg"]
    assert failed["text.png"] == "not an image: the bytes are text"
    assert "broken symlink" in failed["broken_link.jpg"]
    assert failed["pipe.jpg"] == "not a regular file but a named pipe (FIFO)"
    assert failed["loop_a.jpg"] == "a symlink loop (too many levels of symbolic links)"
    if "locked.jpg" in failed:
        assert failed["locked.jpg"] == "permission denied"
    assert f"{len(bad)} files failed" in result.output
    raw = out.read_text(encoding="utf-8")
    assert "\n'=HYPERLINK(1).jpg," in raw, "a formula-like name must not stay live"
    assert "\n''apostrophe.jpg," in raw
    assert '"comma, ""quote"".jpg"' in raw


def drop_file_capabilities() -> None:
    """In a child of root: give up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (prctl
    PR_CAPBSET_DROP), so that file modes apply to it as to any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.skipif(os.geteuid() != 0, reason="test_every_file_lands_once covers it")
def test_unreadable_files_as_root_without_override(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """Root reads files whatever their mode, so run `infer` without that privilege: a file
    and a folder with mode 000 end as error rows, the readable photo as a prediction."""
    (tmp_path / "in" / "closed").mkdir(parents=True)
    for name in ("ok.jpg", "locked.jpg", "closed/inside.jpg"):
        (tmp_path / "in" / name).write_bytes(photo_jpeg)
    (tmp_path / "in" / "locked.jpg").chmod(0)
    (tmp_path / "in" / "closed").chmod(0)
    cmd = [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), str(tmp_path / "in")]
    proc = subprocess.run(
        [*cmd, "-o", str(tmp_path / "pred.csv"), "--no-progress"],
        preexec_fn=drop_file_capabilities,
        capture_output=True,
        text=True,
    )
    (tmp_path / "in" / "closed").chmod(0o755)  # let pytest clean it up
    assert proc.returncode == 0, proc.stderr
    assert [r["path"] for r in read_csv(tmp_path / "pred.csv")] == ["ok.jpg"]
    failed = {r["path"]: r["error"] for r in read_csv(tmp_path / "pred.errors.csv")}
    assert failed == {
        "closed": "cannot list folder: permission denied",
        "locked.jpg": "permission denied",
    }
    assert "2 files failed" in proc.stderr


def test_odd_formats_become_what_the_model_takes(tmp_path: Path) -> None:
    deep = np.full((4, 5, 3), 65535, dtype=np.uint16)
    deep[0, 0] = (0, 32768, 65535)  # BGR in OpenCV's order
    write_png(tmp_path / "d.png", deep)
    image = decode((tmp_path / "d.png").read_bytes(), 3)
    assert image.dtype == np.uint8 and image.shape == (4, 5, 3)
    assert tuple(image[0, 0]) == (255, 128, 0), "16-bit scaled to 8-bit, RGB order"
    rgba = np.zeros((3, 3, 4), dtype=np.uint8)
    rgba[..., 2], rgba[..., 3] = 200, 0  # red, fully transparent
    write_png(tmp_path / "a.png", rgba)
    assert tuple(decode((tmp_path / "a.png").read_bytes(), 3)[1, 1]) == (200, 0, 0)
    write_png(tmp_path / "g.png", np.full((3, 3), 90, dtype=np.uint8))
    assert tuple(decode((tmp_path / "g.png").read_bytes(), 3)[0, 0]) == (90, 90, 90)
    assert decode((tmp_path / "a.png").read_bytes(), 1).shape == (3, 3, 1)


def test_large_jpeg_decodes_reduced_and_close(photo_jpeg: bytes) -> None:
    full = cv2.imdecode(np.frombuffer(photo_jpeg, np.uint8), cv2.IMREAD_COLOR_RGB)
    big = cv2.imencode(".jpg", cv2.resize(full, (2000, 1500)), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    data = big.tobytes()
    header = read_header(data)
    assert header.decoded_size() == (1500, 2000)
    assert reduction_for(Header("PNG", 2000, 1500), (28, 28)) == 1  # JPEG only
    assert reduction_for(header, (224, 224)) == 4  # 1500 / 4 = 375 >= 224; / 8 would not be
    assert reduction_for(header, (28, 28)) == 8
    assert reduction_for(header, (1000, 1000)) == 1
    reduced = decode(data, 3, target=(224, 224))
    assert reduced.shape == (375, 500, 3)
    reference = cv2.resize(decode(data, 3), (224, 224), interpolation=cv2.INTER_AREA)
    ours = cv2.resize(reduced, (224, 224), interpolation=cv2.INTER_AREA)
    assert np.abs(ours.astype(int) - reference.astype(int)).mean() < 3


@pytest.mark.parametrize("target", [None, (28, 28)])
def test_exif_orientation_is_applied(tmp_path: Path, photo_jpeg: bytes, target) -> None:
    from PIL import Image

    (tmp_path / "p.jpg").write_bytes(photo_jpeg)
    photo = Image.open(tmp_path / "p.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    image = decode((tmp_path / "rot.jpg").read_bytes(), 3, target=target)
    h, w = image.shape[:2]
    assert h > w, f"portrait after EXIF rotation, got {image.shape}"


def test_summary_json_and_per_class_accuracy(
    tiny_model: Path, tmp_path: Path, cuda_missing: str | None
) -> None:
    red, blue = np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)
    red[..., 2], blue[..., 0] = 255, 255
    for label, image in (("cat", red), ("dog", blue)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            write_png(tmp_path / "data" / label / f"{i}.png", image)
    out, summary = tmp_path / "p.csv", tmp_path / "s.json"
    args = ["infer", str(tiny_model), str(tmp_path / "data"), "-o", str(out)]
    result = CliRunner().invoke(cli, [*args, "--summary", str(summary), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == [
        "path",
        "label",
        "score",
        "label_2",
        "score_2",
        "true_label",
        "correct",
    ]
    doc = json.loads(summary.read_text())
    auto_choice = "cpu" if cuda_missing else "cuda"
    assert doc["images"] == 6 and doc["errors"] == 0 and doc["provider"] == auto_choice
    assert set(doc["per_class"]) == {"cat", "dog"}
    for label, entry in doc["per_class"].items():
        hits = [r["correct"] == "1" for r in rows if r["true_label"] == label]
        assert entry["correct"] == sum(hits) and entry["total"] == 3
    assert doc["correct"] == sum(r["label"] == r["true_label"] for r in rows)
    assert "per class:" in result.output


def test_the_summary_says_what_held_the_batches(
    tiny_model: Path, slow_folder: Path, tmp_path: Path
) -> None:
    """PNGs of 600x450 (about 10 ms each to decode) on one decode thread, into a model of
    8x8 pixels: the batches wait for their decodes, and the summary says so."""
    out, summary = tmp_path / "p.csv", tmp_path / "s.json"
    args = ["infer", str(tiny_model), str(slow_folder), "-o", str(out), "--no-progress"]
    args += ["--workers", "1", "--batch-size", "4", "--limit", "60", "--summary", str(summary)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(summary.read_text())
    stages = doc["stage_seconds"]
    assert set(stages) == {"inputs", "decode", "model", "write"}
    assert all(v >= 0 for v in stages.values())
    # each stage timed on the loop's own thread, one after the other: within its time
    assert sum(stages.values()) <= doc["seconds"] + 0.01
    assert doc["bound_by"] == "decode", stages
    assert stages["decode"] > stages["model"] + stages["inputs"] + stages["write"], stages
    line = next(x for x in result.output.splitlines() if x.startswith("time: "))
    assert line.startswith("time: waiting for decodes ") and line.endswith("bound by decoding")


def test_what_held_the_batches_by_its_shares() -> None:
    """The loop's own work (the model, writing) is named unless it waited a tenth of its
    time or more for inputs or decodes; then the longer wait is."""
    from cnnbench.infer.engines.job import InferSummary

    def bound(**seconds: float) -> str | None:
        return InferSummary(images=100, stage_seconds=seconds).bound_by

    assert bound(inputs=0.05, decode=0.04, model=0.8, write=0.11) == "model"
    assert bound(inputs=0.01, decode=0.01, model=0.2, write=0.78) == "write"
    assert bound(inputs=0.05, decode=0.3, model=0.6, write=0.05) == "decode"
    assert bound(inputs=0.5, decode=0.3, model=0.2, write=0.0) == "inputs"
    assert bound() is None  # nothing timed: the Ray engine
    resumed = InferSummary(stage_seconds={"inputs": 0.2, "decode": 0, "model": 0, "write": 0})
    assert resumed.bound_by is None  # nothing left to read: only the listing was timed
    assert InferSummary(errors=3, stage_seconds={"inputs": 0.1, "decode": 0.9}).bound_by


def test_inputs_as_files_lists_and_folders(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("x.jpg", "y.jpg", "z.JPG"):
            (tmp_path / folder / name).write_bytes(photo_jpeg)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'b' / 'y.jpg'}\n\n{tmp_path / 'gone.jpg'}\n")
    out = tmp_path / "p.csv"
    monkeypatch.chdir(tmp_path)
    args = ["infer", str(tiny_model), "a", f"@{listing}", "-o", str(out), "--no-progress"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert [r["path"] for r in read_csv(out)] == [
        "a/x.jpg",
        "a/y.jpg",
        "a/z.JPG",
        f"{tmp_path}/b/y.jpg",
    ]
    assert [r["path"] for r in read_csv(tmp_path / "p.errors.csv")] == [f"{tmp_path}/gone.jpg"]
    result = CliRunner().invoke(
        cli, [*args[:3], "-o", str(out), "--extensions", "jpg", "--limit", "2"]
    )
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in read_csv(out)] == ["x.jpg", "y.jpg"]


def test_a_file_listed_again_is_read_once_and_counted(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lists concatenated (`cat a.txt b.txt`) name files twice: under the same line, a
    spelling of it, or a folder line holding it. Each file is one row (the output's
    path is a key, which --resume relies on), and the summary says how many entries
    were read once; a shard listed twice too."""
    (tmp_path / "a").mkdir()
    for name in ("x.jpg", "y.jpg"):
        (tmp_path / "a" / name).write_bytes(photo_jpeg)
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        tar.add(tmp_path / "a" / "x.jpg", arcname="k.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text("a/x.jpg\na/x.jpg\n./a/../a/x.jpg\na\ns.tar\ns.tar\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "p.csv"
    args = ["infer", str(tiny_model), f"@{listing}", "-o", str(out), "--summary", "s.json"]
    code, output = run(args)
    assert code == 0, output
    assert [r["path"] for r in read_csv(out)] == ["a/x.jpg", "a/y.jpg", "s.tar/k.jpg"]
    assert "4 list entries named a file listed before: each file read once" in output
    assert "--extensions" not in output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["listed_again"] == 4
    assert summary["skipped_by_extension"] == {}


def test_a_list_from_a_pipe_holds_any_file_name(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """`@/dev/stdin` (or `@<(find ...)`): a pipe is read as a list file; a byte-order
    mark before the first line is dropped; a line that is not UTF-8 is a file name's
    own bytes, as `find` prints them. A list saved as UTF-16, or a folder given with
    '@', is one line."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(photo_jpeg)
    (tmp_path / os.fsdecode(b"latin1-\xe9.jpg")).write_bytes(photo_jpeg)
    lines = b"\xef\xbb\xbfa/x.jpg\r\nlatin1-\xe9.jpg\n"
    out = tmp_path / "p.jsonl"
    args = [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), "@/dev/stdin"]
    args += ["-o", str(out), "--no-progress"]
    done = subprocess.run(args, input=lines, capture_output=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["path"] for r in rows] == ["a/x.jpg", "latin1-\\xe9.jpg"]
    assert not (tmp_path / "p.errors.jsonl").read_text()
    out.unlink()
    done = subprocess.run(
        args, input="a/x.jpg\n".encode("utf-16"), capture_output=True, cwd=tmp_path
    )
    assert_one_line_error(done.returncode, done.stderr.decode(), "line 1: a NUL byte", "UTF-16")
    assert not out.exists(), "nothing listed: no output made"
    code, output = run(["infer", str(tiny_model), f"@{tmp_path / 'a'}", "-o", str(out)])
    assert_one_line_error(code, output, "is a folder", "without '@'")


def test_a_list_from_a_pipe_is_read_once_when_the_session_decodes_otherwise(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batches decode while the session builds, in the format the model file's
    header gives; where the session then decodes otherwise, those items decode again
    from the same listing: a list from a pipe, read once, still gives every row."""
    from cnnbench.infer.engines import local

    names = [f"p{i}.jpg" for i in range(7)]
    for name in names:
        (tmp_path / name).write_bytes(photo_jpeg)
    monkeypatch.setattr(local._Head, "decodes_for", lambda self, fmt, batch_size: False)
    monkeypatch.chdir(tmp_path)
    r, w = os.pipe()
    os.write(w, "".join(f"{name}\n" for name in names).encode())
    os.close(w)
    try:
        code, output = run(
            ["infer", str(tiny_model), f"@/dev/fd/{r}", "-o", "p.csv", "--batch-size", "2"]
        )
    finally:
        os.close(r)
    assert code == 0, output
    assert sorted(row["path"] for row in read_csv(tmp_path / "p.csv")) == names
    assert not read_csv(tmp_path / "p.errors.csv")


def test_inputs_read_twice_are_one_line(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input inside another, or the same one spelled twice, would give its files two
    rows each: refused, naming both. Siblings, and a file the folder's scan leaves out
    (by extension), are not read twice."""
    (tmp_path / "a" / "cat").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    for path in ("a/x.jpg", "a/cat/y.jpg", "b/z.jpg"):
        (tmp_path / path).write_bytes(photo_jpeg)
    (tmp_path / "a/cat/notes.txt").write_text("not an image: an error row when named")
    monkeypatch.chdir(tmp_path)
    refused = {
        ("a", "a/cat"): "input a/cat is inside input a: its files would be read twice",
        ("a/cat/", str(tmp_path / "a")): "input a/cat/ is inside input " + str(tmp_path / "a"),
        ("a", "a/cat/y.jpg"): "input a/cat/y.jpg is inside input a",
        ("a", "./a"): "inputs a and ./a are the same folder: give it once",
        ("a/x.jpg", "./a/x.jpg"): "inputs a/x.jpg and ./a/x.jpg are the same file",
    }
    for inputs, needle in refused.items():
        code, output = run(["infer", str(tiny_model), *inputs, "-o", "p.csv"])
        assert_one_line_error(code, output, needle)
        assert not (tmp_path / "p.csv").exists()
    for inputs in (("a/cat", "b"), ("a", "a/cat/notes.txt")):
        code, output = run(["infer", str(tiny_model), *inputs, "-o", "p.csv"])
        assert code == 0, output
        names = [r["path"] for r in read_csv(tmp_path / "p.csv")]
        assert len(names) == len(set(names)) == 2, names


def test_foreign_model_matches_numpy(foreign_model: Path, photo_jpeg: bytes, tmp_path: Path):
    import onnxruntime as ort

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "p.jpg").write_bytes(photo_jpeg)
    out = tmp_path / "p.csv"
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    args = ["infer", str(foreign_model), str(tmp_path / "img"), "-o", str(out), "--top-k", "4"]
    args += ["--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std))]
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    args += ["--labels", str(tmp_path / "labels.txt")]
    result = CliRunner().invoke(cli, [*args, "--scale", str(1 / 255), "--bgr"])
    assert result.exit_code == 0, result.output
    # mean/std without a preset describe an ImageNet-style model: its evaluation crop
    assert "shorter side to 9, centre crop 8x8 (crop_pct 0.875), bilinear-aa" in result.output
    row = read_csv(out)[0]
    image = load_image(str(tmp_path / "img" / "p.jpg"), (8, 8), 3, bgr=True, policy=EVAL_CROP)
    x = image.astype(np.float32)
    x = ((x / 255 - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(str(foreign_model), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"input": x.astype(np.float32)})[0][0]
    ours = {row["label" + s]: float(row["score" + s]) for s in ("", "_2", "_3", "_4")}
    assert ours == pytest.approx({"abcd"[i]: float(p) for i, p in enumerate(probs)}, abs=2e-6)


def test_resume_cuts_a_torn_line_and_checks_columns(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i}.jpg").write_bytes(photo_jpeg)
    out = tmp_path / "p.csv"
    args = ["infer", str(tiny_model), str(folder), "-o", str(out), "--batch-size", "3"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:7])  # killed in the middle of row 5
    result = CliRunner().invoke(cli, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "4 already done (resumed)" in result.output
    assert [r["path"] for r in read_csv(out)] == [f"{i}.jpg" for i in range(10)]
    result = CliRunner().invoke(cli, [*args, "--resume", "--top-k", "2"])
    assert result.exit_code != 0 and "use the same --top-k" in result.output
    (folder / "café.jpg").write_bytes(photo_jpeg)
    assert CliRunner().invoke(cli, args).exit_code == 0
    data = out.read_bytes()
    cut = data.index("café".encode()) + len("caf") + 1  # killed inside é's two bytes
    out.write_bytes(data[:cut])
    result = CliRunner().invoke(cli, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert sorted(r["path"] for r in read_csv(out)) == sorted(
        [*(f"{i}.jpg" for i in range(10)), "café.jpg"]
    )
    with out.open("ab") as f:
        f.write(b"x.jpg,\xbb\xcc,0.5\n")  # a whole line, not UTF-8: not ours
    result = CliRunner().invoke(cli, [*args, "--resume"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert "p.csv is not an output cnnbench wrote" in result.output, result.output


def test_a_folder_deeper_than_the_recursion_limit(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,100 nested folders (a recursive scan died of RecursionError, a traceback),
    named relative to the working directory (an absolute path would pass PATH_MAX)."""
    depth = sys.getrecursionlimit() + 100
    monkeypatch.chdir(tmp_path)
    levels = [os.path.join("deep", *["d"] * level) for level in range(depth + 1)]
    for level in levels:  # not os.makedirs: it recurses too
        os.mkdir(level)
    Path(levels[-1], "x.jpg").write_bytes(photo_jpeg)
    try:
        out = tmp_path / "p.csv"
        code, output = run(["infer", str(tiny_model), "deep", "-o", str(out)])
        assert code == 0, output
        assert [r["path"] for r in read_csv(out)] == ["d/" * depth + "x.jpg"]
    finally:  # bottom up: pytest's own clean-up (shutil.rmtree) recurses too
        os.remove(os.path.join(levels[-1], "x.jpg"))
        for level in reversed(levels):
            os.rmdir(level)


def test_symlink_loop_is_scanned_once(tiny_model: Path, photo_jpeg: bytes, tmp_path: Path):
    folder = tmp_path / "img"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.jpg").write_bytes(photo_jpeg)
    os.symlink(folder, folder / "a" / "loop")
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(cli, ["infer", str(tiny_model), str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in read_csv(out)] == ["a/x.jpg"], "the loop is not followed"


def test_an_output_that_would_replace_the_model_or_an_image_is_refused(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """`-o model.onnx` or `-o photo.jpg` (a slip of the keyboard) replaced the file with
    rows; the model under another name is caught by what it is, not by its name."""
    model = tmp_path / "model"
    model.write_bytes(tiny_model.read_bytes())
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_jpeg)
    base = ["infer", str(model), str(photo), "--no-progress"]
    for args, needle in [
        (["-o", str(model)], "itself, an input"),
        (["-o", str(photo)], "itself, an input"),
        (["-o", str(tmp_path / "other.PNG")], "a .png name is a model's or an image's"),
        (["-o", str(tmp_path / "p.csv"), "--errors", str(tmp_path / "m.ONNX")], "a .onnx name"),
        (["-o", str(tmp_path / "p.csv"), "--summary", str(model)], "itself, an input"),
    ]:
        code, output = run([*base, *args])
        assert_one_line_error(code, output, needle)
    assert model.read_bytes() == tiny_model.read_bytes() and photo.read_bytes() == photo_jpeg
    assert not (tmp_path / "p.csv").exists()
    code, output = run([*base, "-o", str(tmp_path / "p.csv")])
    assert code == 0, output


def test_standard_output_or_a_device_as_output_is_one_line(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-o -` wrote a file named '-'; `-o /dev/stdout` wrote its errors file and job
    record beside it, into /dev (as root). `--errors /dev/null` throws the errors away,
    as asked."""
    monkeypatch.chdir(tmp_path)
    Path("x.jpg").write_bytes(photo_jpeg)
    Path("bad.jpg").write_bytes(b"not a jpeg")
    for output in ("-", "/dev/stdout"):
        code, text = run(["infer", str(tiny_model), "x.jpg", "-o", output, "--no-progress"])
        assert_one_line_error(code, text, f"cannot write {output}", "give a file", "tail -f")
    assert not Path("-").exists() and not Path("/dev/stdout.job.json").exists()
    args = ["infer", str(tiny_model), "x.jpg", "bad.jpg", "-o", "p.csv", "--errors", os.devnull]
    code, text = run(args)
    assert code == 0, text
    assert [r["path"] for r in read_csv(tmp_path / "p.csv")] == ["x.jpg"]
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):  # a RAM disk: files
        ram = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            code, text = run(["infer", str(tiny_model), "x.jpg", "-o", str(ram / "p.csv")])
            assert code == 0, text
        finally:
            shutil.rmtree(ram)


def test_class_folders_named_otherwise_say_why_there_is_no_accuracy(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """Subfolders that are none of the labels (synset ids against names): no accuracy,
    as before, and now a line saying why; folders named as the labels give it."""
    for folder in ("n02123045", "n02084071"):
        (tmp_path / "set" / folder).mkdir(parents=True)
        (tmp_path / "set" / folder / "x.jpg").write_bytes(photo_jpeg)
    out = tmp_path / "p.csv"
    args = ["infer", str(tiny_model), str(tmp_path / "set"), "-o", str(out), "--no-progress"]
    code, output = run(args)
    assert code == 0, output
    assert "accuracy: not measured: the subfolders of" in output
    assert "(n02084071, n02123045) are none of the model's labels (cat, dog, fish)" in output
    (tmp_path / "set" / "cat").mkdir()
    (tmp_path / "set" / "cat" / "y.jpg").write_bytes(photo_jpeg)
    code, output = run(args)
    assert code == 0 and "not measured" not in output, output
    # some folders are labels, others not (a label mistyped): their images were left out
    # of accuracy without a word
    assert (
        f"accuracy: the subfolders n02084071, n02123045 of {tmp_path / 'set'} are none of the "
        "model's labels (cat, dog, fish): their images have no true_label" in output
    ), output
    assert [r["true_label"] for r in read_csv(out)] == ["cat", "", ""]
    shutil.rmtree(tmp_path / "set" / "n02084071")
    code, output = run(args)
    assert "the subfolder n02123045 of" in output and " is none of" in output, output
