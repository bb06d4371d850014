"""A tune stopped by Ctrl-C or the SIGTERM a scheduler sends: the plan is written from what
was measured, says so, and `infer --plan` runs it with a warning; where nothing was
measured, no plan and no file made for it stay. Both lost the whole search before
("Aborted!", or no word at all for SIGTERM). Real signals to a real `cnnbench tune`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run

# windows of a second, every batch size up to 64 at 1 and 2 runs in flight: the search
# takes minutes, so the stop always comes in it, after the first batch size is measured
SLOW = ["--provider", "cpu", "--max-drop", "100", "--exhaustive", "--duration", "1"]


def start_tune(model: Path, images: Path, plan: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "cnnbench", "tune", str(model), "--images", str(images)]
    return subprocess.Popen(
        [*args, "-o", str(plan), *SLOW],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(proc: subprocess.Popen, needle: str, unless: str = "\0") -> str:
    """tune's log (stderr) up to its first line holding `needle`, not `unless`."""
    assert proc.stderr is not None
    seen = ""
    while True:
        line = proc.stderr.readline()
        assert line, f"tune ended before {needle!r}: {seen}"
        seen += line
        if needle in line and unless not in line:
            return seen


def batch_of(line: str) -> int:
    """'  cpu fp32 batch 4 x2: ...' -> 4"""
    return int(line.split(" batch ")[1].split()[0])


def leftovers(folder: Path) -> list[str]:
    """Files a write cut short would leave: hidden temporaries and staging folders."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_tune_writes_the_plan_of_what_it_measured(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Stopped in cpu fp32's sweep once a VALID row is measured (a loaded machine makes
    some rows INVALID, never chosen): the batch in flight is dropped (as bench drops it),
    the plan is the fastest of those measured, marked `stopped` with what was not
    measured, one line says so, exit 128 + the signal; infer runs it and says the plan is
    from a stopped tune, with no end-to-end figure to compare against."""
    plan = tmp_path / "out" / "plan.json"
    plan.parent.mkdir()
    proc = start_tune(tiny_model, tiny_folder, plan)
    seen = wait_for(proc, "  cpu fp32 batch ", unless="INVALID")
    proc.send_signal(sig)
    first_valid = batch_of(seen.splitlines()[-1])
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, seen + stderr
    assert "Traceback" not in stderr
    said = [line for line in stderr.splitlines() if "tune stopped while" in line]
    how = "stopped by SIGTERM" if sig == signal.SIGTERM else "interrupted"
    assert len(said) == 1 and said[0].startswith(f"{how}: tune stopped while measuring cpu fp32")
    assert said[0].endswith(f"{plan} is the fastest of what was measured"), said
    assert f"wrote {plan}" in stdout and "Pareto front" in stdout

    doc = json.loads(plan.read_text())
    sizes = {r["batch_size"] for r in doc["extra"]["candidates"] if r["batch_size"]}
    last = max(sizes)
    assert first_valid <= last < 64, "cut short in the sweep, after the row seen"
    assert sizes == {2**k for k in range(last.bit_length())}, "a batch in flight is dropped"
    left = f"not measured: cpu fp32 past batch {last}, cpu int8"
    assert left in said[0], said
    assert doc["stopped"] == f"tune stopped while measuring cpu fp32; {left}"
    assert doc["precision"] == "fp32" and doc["batch_size"] in sizes
    assert doc["expected"]["images_per_second"] is None, "no end-to-end run was made"
    assert doc["expected"]["model_only_images_per_second"] > 0
    assert leftovers(plan.parent) == []

    out_csv = tmp_path / "pred.csv"
    code, out = run(["infer", "--plan", str(plan), str(tiny_folder), "-o", str(out_csv)])
    assert code == 0, out
    warning = next(line for line in out.splitlines() if "stopped before its end" in line)
    assert warning.startswith("warning: the plan is from a tune stopped before its end ("), out
    assert "re-run cnnbench tune" in warning
    assert "no expected figure end to end (its tune was stopped before that run)" in out
    assert len(out_csv.read_text().splitlines()) == 1 + 8


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_tune_stopped_before_any_measurement_writes_no_plan(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Stopped while the int8 file is made: no plan, no int8 file (whole or in part,
    under its name or a temporary one), one line saying so, exit 128 + the signal."""
    plan = tmp_path / "out" / "plan.json"
    plan.parent.mkdir()
    proc = start_tune(tiny_model, tiny_folder, plan)
    seen = wait_for(proc, "int8: calibrating")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, seen + stderr
    assert "Traceback" not in stderr
    said = [line for line in stderr.splitlines() if "tune stopped while" in line]
    assert len(said) == 1, stderr
    assert said[0].endswith("nothing within the bounds was measured: no plan written"), said
    assert "not measured: cpu fp32, cpu int8" in said[0], said
    assert list(plan.parent.iterdir()) == [], "no plan, no int8 file, no temporary"
    assert "wrote" not in stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_stop_ends_at_once(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Two Ctrl-C (or SIGTERM) in a row, as infer and bench take them: the second ends
    the command where it is, with that signal's exit status and no traceback; the plan
    is whole or not there, never cut. Coming after the command's end (the measuring
    threads finish their window), it ends the process by the signal itself: a shell
    shows the same 128 + the signal."""
    plan = tmp_path / "out" / "plan.json"
    plan.parent.mkdir()
    proc = start_tune(tiny_model, tiny_folder, plan)
    wait_for(proc, "  cpu fp32 batch 1 x")
    proc.send_signal(sig)
    time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    rc = proc.returncode
    assert (128 - rc if rc < 0 else rc) == 128 + sig, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert leftovers(plan.parent) == []
    files = sorted(p.name for p in plan.parent.iterdir())
    if plan.exists():
        assert json.loads(plan.read_text())["stopped"]
        assert set(files) <= {"plan.json", "plan.int8.onnx", "plan.fp16.onnx"}, files
    else:
        assert files == [], "no plan, so none of the files made for it"
