"""The app shell: help everywhere, version, python -m, lazy TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from cnnbench import __version__
from cnnbench.cli import cli


@pytest.mark.parametrize("args", [[], ["train"], ["convert"], ["infer"], ["bench"]])
def test_help_everywhere(args: list[str]) -> None:
    for flag in ("--help", "-h"):
        result = CliRunner().invoke(cli, [*args, flag])
        assert result.exit_code == 0, result.output
        assert "Example:" in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cnnbench", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert __version__ in proc.stdout


@pytest.mark.parametrize("command", ["infer", "bench"])
def test_help_does_not_import_tensorflow(command: str) -> None:
    code = (
        "import sys; from cnnbench.cli import cli\n"
        f"try:\n    cli(['{command}', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'keras' not in sys.modules, 'keras imported'\n"
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "module",
    [
        "cnnbench.infer.engines.local",
        "cnnbench.bench.measure",
        "cnnbench.bench.cli",
        "cnnbench.convert.cli",
        "cnnbench.training.registry",
    ],
)
def test_import_has_no_tensorflow(module: str) -> None:
    code = f"import sys, {module}; assert 'tensorflow' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


RAY_ENGINE = (
    "cnnbench.infer.engines.ray",
    "cnnbench.infer.engines.ray_cluster",
    "cnnbench.infer.engines.ray_workers",
)
ENGINES = ("cnnbench.infer.engines.local", *RAY_ENGINE)


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("cnnbench.training.cli", ENGINES),
        ("cnnbench.infer.options", ENGINES),
        ("cnnbench.infer.engines.local", RAY_ENGINE),
        ("cnnbench.infer.engines.ray", ("cnnbench.infer.engines.local",)),
    ],
)
def test_engines_are_siblings_and_options_load_neither(
    module: str, absent: tuple[str, ...]
) -> None:
    """`cnnbench train` and the shared options load no inference engine, and each engine
    builds on the shared job module, never on the other engine."""
    code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"{module} imported {proc.stdout.strip()}"


def test_train_list_is_quick_and_complete() -> None:
    """`train --list` names every architecture with its size and parameter count, without
    importing TensorFlow (the counts are stored; test_architectures checks them)."""
    code = (
        "import sys; from cnnbench.cli import cli\n"
        "try:\n    cli(['train', '--list'])\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    from cnnbench.training.registry import ARCHITECTURES

    lines = proc.stdout.splitlines()[1:]
    assert [line.split()[0] for line in lines] == list(ARCHITECTURES)
    for line, spec in zip(lines, ARCHITECTURES.values(), strict=True):
        size = f"{spec.input_size}x{spec.input_size}x{spec.channels}"
        assert line.split()[1:3] == [size, f"{spec.reference_params:,}"]


def test_imports_where_fcntl_does_not_exist() -> None:
    """Windows has no fcntl: the shell, every stage's commands and infer's output lock
    must import all the same (a None entry in sys.modules makes `import fcntl` fail)."""
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import cnnbench.cli, cnnbench.infer.engines.local, cnnbench.infer.engines.ray\n"
        "from cnnbench.infer.sinks.output import OutputLock\n"
        "print('imported')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and "imported" in proc.stdout, proc.stderr


FOREIGN_COMMANDS = ["infer", "bench", "inspect", "convert"]


@pytest.mark.parametrize("command", FOREIGN_COMMANDS)
def test_foreign_options_are_one_group(command: str) -> None:
    """infer, bench, inspect and convert take the same foreign options, from one list."""
    from cnnbench.infer.options import FOREIGN_NAMES

    found = cli.get_command(click.Context(cli), command)
    assert found is not None
    params = {p.name for p in found.params}
    assert set(FOREIGN_NAMES) <= params, set(FOREIGN_NAMES) - params


RANGES = [
    (["--crop-pct", "1.5"], ["--crop-pct", "(0, 1]"]),
    (["--crop-pct", "0"], ["--crop-pct", "(0, 1]"]),
    (["--scale", "-1"], ["--scale must be positive"]),
    (["--std", "0.2,0,0.2"], ["--std has a 0"]),
]


@pytest.mark.parametrize(
    ("command", "bad", "needles"),
    [(c, *r) for c in FOREIGN_COMMANDS for r in RANGES]
    + [("train", *r) for r in RANGES if r[0][0] == "--crop-pct"],  # train: resize options only
)
def test_ranges_are_checked_before_the_model_is_read(
    tmp_path: Path, command: str, bad: list[str], needles: list[str]
) -> None:
    """A value out of range is refused as the option is read: the model named does not
    even exist, and the error is about the option, on one line."""
    missing = str(tmp_path / "missing.onnx")
    out = str(tmp_path / "out.csv")
    args = {
        "infer": ["infer", missing, str(tmp_path), "-o", out],
        "bench": ["bench", "--model", missing],
        "inspect": ["inspect", missing],
        "convert": ["convert", missing, "-o", str(tmp_path / "out.onnx")],
        "train": ["train", "mnist_cnn", "--out", str(tmp_path / "run")],
    }[command]
    result = CliRunner().invoke(cli, [*args, *bad])
    assert_one_line_error(result.exit_code, result.output, *needles)
    assert "missing.onnx" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []
