"""Bad input: one clear line, non-zero exit, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cnnbench.cli import cli


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), f"traceback: {result.exception!r}"
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in lines[0], output


def test_missing_model_file(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    code, output = run(["infer", str(tmp_path / "nope.onnx"), str(tmp_path), "-o", str(out)])
    assert_one_line_error(code, output, "model file not found")
    assert not out.exists()


def test_model_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a model")
    (tmp_path / "imgs").mkdir()
    out = tmp_path / "p.csv"
    code, output = run(["infer", str(bad), str(tmp_path / "imgs"), "-o", str(out)])
    assert_one_line_error(code, output, "cannot load")
    assert not out.exists()


@pytest.mark.slow
def test_folder_with_no_images(digits_run, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "p.csv"
    code, output = run(["infer", str(digits_run.onnx_path), str(empty), "-o", str(out)])
    assert_one_line_error(code, output, "no images found")
    assert not out.exists()


def test_unknown_architecture(tmp_path: Path) -> None:
    code, output = run(["train", "lenet9", "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, "unknown architecture 'lenet9'", "mnist_cnn")
    assert not (tmp_path / "run").exists()


def test_convert_not_a_keras_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.keras"
    bad.write_text("plain text")
    out = tmp_path / "m.onnx"
    code, output = run(["convert", str(bad), "-o", str(out)])
    assert_one_line_error(code, output, "not a Keras .keras file")
    assert not out.exists()


def test_bench_bad_batch_sizes(tmp_path: Path) -> None:
    code, output = run(["bench", "--model", str(tmp_path / "m.onnx"), "--batch-sizes", "1,0"])
    assert code != 0
    assert "positive integers" in output
