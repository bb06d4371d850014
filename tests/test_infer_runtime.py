"""Bad input refused before anything is written; runners; the single-writer lock."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error
from onnx import TensorProto, helper, numpy_helper

from cnnbench.cli import cli
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.preprocess import ForeignOptions, Preset, resolve_input_format
from cnnbench.infer.runtime.runner import BoundRunner, PlainRunner
from cnnbench.infer.runtime.session import (
    Provider,
    RuntimeOptions,
    choose_session,
    load_error,
    quiet_stderr,
)
from cnnbench.infer.sinks.formats import safe_cell, unsafe_cell
from cnnbench.infer.sinks.output import OutputLock
from cnnbench.native_logs import VERBOSE_ENV


def save_graph(path: Path, inp_shape: list, out_shape: list, op: str = "Identity") -> Path:
    """A one-node float graph; op "Pool" averages H and W of an NCHW input."""
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, inp_shape)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    inits = []
    if op == "Pool":
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
        inits = [numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")]
    else:
        node = helper.make_node(op, ["x"], ["y"])
    graph = helper.make_graph([node], "g", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.output


@pytest.fixture()
def images(tmp_path: Path, photo_jpeg: bytes) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.jpg").write_bytes(photo_jpeg)
    return folder


def assert_refused(args: list[str], out_dir: Path, *needles: str) -> None:
    before = set(out_dir.iterdir())
    assert_one_line_error(*invoke(args), *needles)
    assert set(out_dir.iterdir()) == before, "nothing may be written"


def test_bad_inputs_are_one_line_and_write_nothing(
    tiny_model: Path, images: Path, tmp_path: Path
) -> None:
    out = str(tmp_path / "p.csv")
    base = ["infer", str(tiny_model), str(images), "-o", out]
    assert_refused([*base, "--batch-size", "0"], tmp_path, "--batch-size", "positive")
    assert_refused([*base, "--provider", "gpu"], tmp_path, "'gpu' is not one of")
    assert_refused([*base, str(tmp_path / "nope")], tmp_path, "does not exist", "nope")
    assert_refused([*base, "@" + str(tmp_path / "no.txt")], tmp_path, "list file does not exist")
    assert_refused([*base, "--top-k", "0"], tmp_path, "--top-k")
    assert_refused([*base, "--fp16"], tmp_path, "tensorrt")
    ray_only = ["--address", "auto", "--block-size", "10"]
    assert_refused([*base, *ray_only], tmp_path, "--address, --block-size", "--engine ray")
    # it said --block-size applied with --engine ray only: a .parquet -o takes it too
    block = [*base, "--block-size", "10"]
    assert_refused(block, tmp_path, "--block-size only applies with --engine ray or a .parquet -o")


def test_not_an_image_classifier_says_why(images: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "p.csv")
    echo = save_graph(tmp_path / "echo.onnx", ["N", 3, 8, 8], ["N", 3, 8, 8])
    assert_refused(["infer", str(echo), str(images), "-o", out], tmp_path, "[batch, classes]")
    flat = save_graph(tmp_path / "flat.onnx", ["N", 10], ["N", 10], "Softmax")
    assert_refused(["infer", str(flat), str(images), "-o", out], tmp_path, "4-D batch of images")


def test_foreign_model_missing_option_is_named(images: Path, tmp_path: Path) -> None:
    model = save_graph(tmp_path / "dyn.onnx", ["N", 3, "H", "W"], ["N", 3], "Pool")
    out = str(tmp_path / "p.csv")
    assert_refused(["infer", str(model), str(images), "-o", out], tmp_path, "--size")
    ambiguous = save_graph(tmp_path / "amb.onnx", ["N", 3, 8, 3], ["N", 3], "Pool")
    assert_refused(["infer", str(ambiguous), str(images), "-o", out], tmp_path, "--layout")


def test_bound_runner_pads_and_matches_plain(foreign_model: Path) -> None:
    """The GPU path (IO binding, fixed padded shape) run on the CPU device."""
    session, _ = choose_session(str(foreign_model), RuntimeOptions(provider=Provider.CPU))
    fmt = resolve_input_format(session, ForeignOptions(preset=Preset.RAW))
    buf = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    plain, bound = PlainRunner(session, fmt), BoundRunner(session, fmt, "cpu", 0)
    bound.warm_up(buf)
    for n in (6, 2, 6, 1):
        expected = plain.run(buf, n)
        got = bound.run(buf, n)
        assert got.shape == (n, 4)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        buf = buf[::-1].copy()


def test_auto_says_why_it_chose_cpu(tiny_model: Path, cuda_missing: str | None) -> None:
    if cuda_missing is None:
        pytest.skip("a GPU is present: auto chooses CUDA here (tests/test_gpu.py checks that)")
    session, note = choose_session(str(tiny_model), RuntimeOptions())
    assert session.get_providers()[0] == "CPUExecutionProvider"
    assert note.startswith("provider cpu, chosen by auto (CUDA not used: ")


def _driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def test_auto_names_the_missing_driver(tiny_model: Path) -> None:
    """Without an NVIDIA driver, auto and --provider cuda say so in the machine's terms,
    not only as the first CUDA library ONNX Runtime's loader missed."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider")
    if _driver_present():
        pytest.skip("libcuda.so.1 loads here: this machine has an NVIDIA driver")
    session, note = choose_session(str(tiny_model), RuntimeOptions())
    assert session.get_providers()[0] == "CPUExecutionProvider"
    assert note == (
        "provider cpu, chosen by auto (CUDA not used: no NVIDIA driver: libcuda.so.1 not found)"
    )
    with pytest.raises(InferError, match=r"did not load \(no NVIDIA driver: libcuda.so.1 not"):
        choose_session(str(tiny_model), RuntimeOptions(provider=Provider.CUDA))


def test_explicit_cuda_fails_with_reason_and_hint(tiny_model: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        probe = ort.InferenceSession(str(tiny_model), providers=["CUDAExecutionProvider"])
        if "CUDAExecutionProvider" in probe.get_providers():
            pytest.skip("a GPU is present: CUDA loads here")
    with pytest.raises(InferError, match=r"did not load \(.+\).*pip install 'cnnbench\[cuda\]'"):
        choose_session(str(tiny_model), RuntimeOptions(provider=Provider.CUDA))


def test_second_writer_is_refused(tiny_model: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    with OutputLock(str(out)):
        code, output = invoke(["infer", str(tiny_model), str(images), "-o", str(out)])
        assert code != 0 and "another cnnbench infer is writing" in output
        assert not out.exists()
    assert not Path(f"{out}.lock").exists(), "a clean exit removes the lock file"
    code, output = invoke(["infer", str(tiny_model), str(images), "-o", str(out)])
    assert code == 0, output


@pytest.mark.parametrize("name", ["=1+1", "+x", "-x", "@x", "'x", "''=x", "plain", "\tx"])
def test_formula_escaping_round_trips(name: str) -> None:
    cell = safe_cell(name)
    assert not cell.startswith(("=", "+", "-", "@", "\t"))
    assert unsafe_cell(cell) == name


def test_tensorrt_options_carry_cache_and_fp16(tiny_model: Path, tmp_path: Path) -> None:
    from cnnbench.infer.runtime.session import _provider_entry

    opts = RuntimeOptions(Provider.TENSORRT, device_id=1, trt_cache=str(tmp_path), trt_fp16=True)
    name, options = _provider_entry(Provider.TENSORRT, opts)
    assert name == "TensorrtExecutionProvider"
    assert options == {
        "device_id": "1",
        "trt_fp16_enable": "1",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(tmp_path),
    }
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return
    try:
        session, note = choose_session(str(tiny_model), opts)
    except InferError as e:  # no GPU or no TensorRT libraries here
        assert "pip install 'cnnbench[cuda]'" in str(e)
    else:
        assert session.get_providers()[0] == "TensorrtExecutionProvider" and "tensorrt" in note


def test_both_ort_distributions_are_reported(tiny_model: Path, images: Path, tmp_path: Path):
    """Metadata of a second ORT distribution on the path, as `pip install onnxruntime`
    beside `onnxruntime-gpu` leaves it."""
    installed = {"onnxruntime", "onnxruntime-gpu"}
    present = {d for d in installed if _has(d)}
    other = next(iter(installed - present), None)
    if other is None:
        pytest.skip("both distributions are really installed here")
    info = tmp_path / "site" / f"{other.replace('-', '_')}-1.31.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {other}\nVersion: 1.31.1\n")
    # prepended: cnnbench itself may come from PYTHONPATH (pip install --target)
    path = os.pathsep.join(p for p in (str(tmp_path / "site"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    args = [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), str(images)]
    proc = subprocess.run(
        [*args, "-o", str(tmp_path / "p.csv")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "both onnxruntime and onnxruntime-gpu are installed" in proc.stderr
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in proc.stderr


def _has(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_load_error_names_the_missing_library(tiny_model: Path) -> None:
    """ORT's own load log (kept off the terminal) gives the one-line reason."""
    from cnnbench.infer.runtime.session import _try_session

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider")
    session, log = _try_session(str(tiny_model), Provider.CUDA, RuntimeOptions())
    if "CUDAExecutionProvider" in session.get_providers():
        pytest.skip("a GPU is present: CUDA loads here")
    reason = load_error(log)
    assert reason and "\n" not in reason
    with pytest.raises(InferError) as e:
        choose_session(str(tiny_model), RuntimeOptions(provider=Provider.CUDA))
    assert reason in str(e.value)


@pytest.mark.parametrize("asked", [False, True])
def test_native_lines_of_other_threads_while_a_session_builds_come_back_when_asked(
    asked: bool, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """ORT's chatter is kept off fd 2 while a session builds, and so is whatever the
    decoders of the first batches write meanwhile; CNNBENCH_NATIVE_LOGS=1 asked for
    every native line, so it is written out afterwards (a hostile-files test lost
    libjpeg's lines this way under load)."""
    monkeypatch.setenv(VERBOSE_ENV, "1" if asked else "0")
    line = "libpng warning: iCCP: known incorrect sRGB profile"
    with quiet_stderr() as captured:
        decoder = threading.Thread(target=os.write, args=(2, f"{line}\n".encode()))
        decoder.start()
        decoder.join()
    assert line in captured
    assert (line in capfd.readouterr().err) == asked
