"""The common base: one exception root, atomic writes, output-path checks, hashing."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import assert_one_line_error

import cnnbench.errors as errors_module
from cnnbench.bench.errors import BenchError
from cnnbench.convert.errors import ConvertError
from cnnbench.errors import CnnbenchError
from cnnbench.files import atomic_open, atomic_path, sha256_file, staged, unwritable
from cnnbench.infer.errors import InferError
from cnnbench.training.errors import TrainError


@pytest.mark.parametrize("error", [InferError, ConvertError, BenchError, TrainError])
def test_every_stage_error_has_the_one_root(error: type[Exception]) -> None:
    assert issubclass(error, CnnbenchError)
    assert error.__name__ in (errors_module.__doc__ or ""), "the tree is drawn in the docstring"


def test_bench_keeps_infer_error_as_cause(tiny_model: Path) -> None:
    """A provider asked for alone that does not load: bench's error wraps infer's."""
    import onnxruntime as ort

    from cnnbench.bench.runners import probe_providers
    from cnnbench.infer.runtime.session import Provider, RuntimeOptions

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider to fail")
    try:
        probe_providers((Provider.CUDA,), str(tiny_model), RuntimeOptions())
    except BenchError as e:
        assert isinstance(e.__cause__, InferError) and str(e) == str(e.__cause__)
    else:
        pytest.skip("CUDA loads on this machine")


def test_atomic_open_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(str(out)) as f:
        f.write("half")
        raise RuntimeError("interrupted")
    assert out.read_text() == "old", "a failed write leaves the earlier file as it was"
    assert os.listdir(tmp_path) == ["out.json"], "no temporary file left behind"
    with atomic_open(str(out)) as f:
        f.write("new")
    assert out.read_text() == "new" and os.listdir(tmp_path) == ["out.json"]


def test_atomic_path_keeps_the_suffix_a_writer_needs(tmp_path: Path) -> None:
    out = tmp_path / "model.keras"
    with atomic_path(str(out), suffix=".keras") as tmp:
        assert tmp.endswith(".keras") and os.path.dirname(tmp) == str(tmp_path)
        Path(tmp).write_bytes(b"weights")
    assert out.read_bytes() == b"weights" and os.listdir(tmp_path) == ["model.keras"]


def test_staged_moves_companions_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    with staged(str(out), companions=(".data",)) as path:
        Path(path).write_bytes(b"graph")
        Path(path + ".data").write_bytes(b"weights")
        Path(path + ".scratch").write_bytes(b"scratch")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    with pytest.raises(RuntimeError), staged(str(tmp_path / "n.onnx")) as path:
        Path(path).write_bytes(b"graph")
        raise RuntimeError("verification failed")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]


def test_unwritable_says_why(tmp_path: Path) -> None:
    assert unwritable(str(tmp_path / "ok.csv")) is None
    assert unwritable(str(tmp_path)) == "it is a folder"
    missing = tmp_path / "missing" / "x.csv"
    assert unwritable(str(missing)) == f"folder {missing.parent} does not exist or is not writable"
    # a name ending in '/' names a folder: the write failed after the work, at the
    # temporary file beside it ('.x.1234.tmp' -> 'x/': Not a directory)
    why = "a name ending in / is a folder's: give a file name"
    assert unwritable(f"{tmp_path}/new/") == why and unwritable(f"{tmp_path}/x.json/") == why


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(str(tmp_path / "f")) == hashlib.sha256(data).hexdigest()


def _file_size_limit(limit: int) -> Callable[[], None]:
    """For a child process: no file written past `limit` bytes (Python ignores SIGXFSZ,
    so the write fails with EFBIG, as a full disk fails one with ENOSPC)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_file_the_disk_cannot_take_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    """convert's model, bench's and inspect's reports on a disk that cannot take them
    (full, a quota, a file size limit): one line naming the file, nothing left behind;
    each was an OSError traceback (bench's after the whole run)."""
    cnnbench = [sys.executable, "-m", "cnnbench"]
    commands = {  # the limit: under the file, over what the command writes before it
        "c.onnx": (200, ["convert", str(tiny_model), "-o", str(tmp_path / "c.onnx"),
                         "--no-verify"]),
        "b.json": (4096, ["bench", "--model", str(tiny_model), "--provider", "cpu",
                          "--batch-sizes", "1", "--duration", "0.02", "--no-peak", "--json",
                          str(tmp_path / "b.json")]),
        "i.json": (200, ["inspect", str(tiny_model), "--json", str(tmp_path / "i.json")]),
    }  # fmt: skip
    for name, (limit, args) in commands.items():
        done = subprocess.run(
            [*cnnbench, *args], capture_output=True, text=True, preexec_fn=_file_size_limit(limit)
        )
        assert_one_line_error(
            done.returncode, done.stderr, f"cannot write {tmp_path / name}: File too large"
        )
        assert not list(tmp_path.iterdir()), "nothing left behind"


def test_a_plan_the_disk_cannot_take_leaves_none_of_its_files(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """tune's int8 file (2 kB) fits under the limit, its plan (16 kB) does not: one line
    naming the plan, and no int8 file left beside a plan that is not there (it stayed)."""
    out = tmp_path / "out"
    out.mkdir()
    args = ["tune", str(tiny_model), "--images", str(tiny_folder), "-o", str(out / "plan.json")]
    done = subprocess.run(
        [sys.executable, "-m", "cnnbench", *args, "--provider", "cpu", "--duration", "0.1"],
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(8000),
    )
    assert "int8 batch 1 " in done.stderr, "the int8 file was made and measured"
    assert_one_line_error(
        done.returncode, done.stderr, f"cannot write {out / 'plan.json'}: File too large"
    )
    assert not list(out.iterdir()), "no plan, so none of the files made for it"
