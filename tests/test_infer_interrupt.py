"""Killed and resumed, with real subprocesses and real signals."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SLOW_FOLDER_FILES as FILES
from helpers import accuracy_of, assert_exactly_once, committed_blocks, paths


def command(model: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "cnnbench", "infer", str(model), str(folder), "-o", str(out)]
    return [*args, "--batch-size", "8", "--workers", "1", "--no-progress", *extra]


def start(model: Path, folder: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        command(model, folder, out, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(out: Path, rows: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") > rows:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError(f"{out} never reached {rows} rows")


def resume(model: Path, folder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = command(model, folder, out, *extra, "--resume")
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)


def test_sigkill_then_resume(tiny_model: Path, slow_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    proc = start(tiny_model, slow_folder, out)
    wait_for_rows(out, 40, proc)
    # a second run on the same output while the first holds it: refused, nothing changed
    second = subprocess.run(
        command(tiny_model, slow_folder, out), capture_output=True, text=True, check=False
    )
    assert second.returncode == 1 and "another cnnbench infer is writing" in second.stderr
    # nor a run with another output but the same --errors file: the two wrote over each
    # other's error rows
    errors = tmp_path / "shared-errors.csv"
    third = start(tiny_model, slow_folder, tmp_path / "a.csv", "--errors", str(errors))
    wait_for_rows(tmp_path / "a.csv", 1, third)
    other = tmp_path / "b.csv"
    fourth = subprocess.run(
        command(tiny_model, slow_folder, other, "--errors", str(errors)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert fourth.returncode == 1, fourth.stderr
    assert f"another cnnbench infer is writing {errors}" in fourth.stderr
    assert "choose another --errors" in fourth.stderr and not other.exists()
    third.kill()
    third.wait()
    proc.kill()  # SIGKILL: no handler runs, no flush, no cleanup
    proc.wait()
    written = len(paths(out))
    assert 40 <= written < FILES, "killed mid-run"
    written += len(paths(out.with_name("pred.errors.csv")))
    done = resume(tiny_model, slow_folder, out)
    assert done.returncode == 0, done.stderr
    assert f"{written} already done (resumed)" in done.stderr
    assert_exactly_once(slow_folder, out)


@pytest.mark.parametrize(
    ("sig", "said"), [(signal.SIGINT, "interrupted: "), (signal.SIGTERM, "stopped by SIGTERM: ")]
)
def test_sigint_or_sigterm_finishes_batch_and_says_how_to_resume(
    tiny_model: Path, slow_folder: Path, tmp_path: Path, sig: signal.Signals, said: str
) -> None:
    """Ctrl-C, or the SIGTERM that timeout, kill, SLURM and Kubernetes send first: the
    batches in flight are finished and the line says how to resume; exit 128 + the
    signal. A SIGTERM ended the run where it stood, with no word and its lock left."""
    out = tmp_path / "pred.csv"
    proc = start(tiny_model, slow_folder, out)
    wait_for_rows(out, 20, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert said in stderr and "--resume" in stderr and "Traceback" not in stderr
    raw = out.read_bytes()
    assert raw.endswith(b"\n"), "the batch in flight was finished and flushed"
    assert len(paths(out)) < FILES
    assert not Path(f"{out}.lock").exists()
    done = resume(tiny_model, slow_folder, out)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(slow_folder, out)


def test_a_second_sigterm_stops_at_once_with_its_own_exit_code(
    tiny_model: Path, slow_folder: Path, tmp_path: Path
) -> None:
    """A scheduler that sends SIGTERM twice: the second stops at once (a second Ctrl-C
    does), exit 143 still; it exited 130, as if Ctrl-C had come. The rows stay whole."""
    out = tmp_path / "pred.csv"
    proc = start(tiny_model, slow_folder, out)
    wait_for_rows(out, 20, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert out.read_bytes().endswith(b"\n")
    done = resume(tiny_model, slow_folder, out)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(slow_folder, out)


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_resumed_job_counts_every_row_in_its_accuracy(
    tiny_model: Path, slow_classes: Path, tmp_path: Path, ext: str
) -> None:
    """A job stopped by SIGTERM and finished with --resume prints the whole job's
    accuracy and per-class line, the earlier run's rows read back and scored: the lines
    one uninterrupted run over the folder prints. (It counted only the resumed run's
    rows, and said so.) The broken file stays out of it, as an error row."""
    blocks = ("--block-size", "40") if ext == "parquet" else ()
    once = subprocess.run(
        command(tiny_model, slow_classes, tmp_path / f"once.{ext}", *blocks),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert once.returncode == 0, once.stderr
    whole = accuracy_of(once.stderr)
    assert not whole.startswith(("accuracy 0.00%", "accuracy 100.00%")), whole
    out = tmp_path / f"pred.{ext}"
    proc = start(tiny_model, slow_classes, out, *blocks)
    if ext == "parquet":
        deadline = time.monotonic() + 60
        while len(committed_blocks(out)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
    else:
        wait_for_rows(out, 60, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    done = resume(tiny_model, slow_classes, out, *blocks)
    assert done.returncode == 0, done.stderr
    skipped = re.search(r"(\d+) already done \(resumed\)", done.stderr)
    assert skipped and 60 <= int(skipped.group(1)) < len(paths(out)), done.stderr
    assert accuracy_of(done.stderr) == whole
    assert "not counted" not in done.stderr
