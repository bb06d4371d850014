"""The memory a job may use: the machine's, or its cgroup's limit where one caps it (a
container, a systemd slice). The batch-buffer check used the machine's alone, so in a
container a batch size that fit the machine got past it and the kernel killed the job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import memory_cgroup

from cnnbench.memory import cgroup_limit, memory_limit

GB = 10**9


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def run_in_cgroup(limit: int, argv: list[str]) -> subprocess.CompletedProcess:
    """`argv` run in a memory cgroup of its own capped at `limit` bytes (skipped where
    one cannot be made); what the kernel does past the cap stays in there."""
    with memory_cgroup(limit) as enter:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=enter)


def test_v2_takes_the_tightest_level_up_to_the_root(tmp_path: Path):
    cgroup = _tree(
        tmp_path / "fs",
        {
            "memory.max": "max",  # the root: none
            "user.slice/memory.max": str(3 * GB),
            "user.slice/job/memory.max": "max",  # the job's own cgroup: none, its slice caps it
        },
    )
    proc = _tree(tmp_path, {"cgroup": "0::/user.slice/job\n"}) / "cgroup"
    assert cgroup_limit(str(proc), str(cgroup)) == 3 * GB


def test_v1_reads_the_memory_controller_tree(tmp_path: Path):
    cgroup = _tree(
        tmp_path / "fs",
        {
            "memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "none"
            "memory/docker/abc/memory.limit_in_bytes": str(2 * GB),
            "cpu/docker/abc/memory.limit_in_bytes": "1",  # another controller's tree
        },
    )
    proc = _tree(tmp_path, {"cgroup": "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n"})
    assert cgroup_limit(str(proc / "cgroup"), str(cgroup)) == 2 * GB


def test_a_container_sees_its_limit_at_the_root(tmp_path: Path):
    """Inside a container /proc may name the host's path, absent from the container's
    mount: the container's own limit, at its root, is what holds."""
    cgroup = _tree(tmp_path / "fs", {"memory.max": str(GB)})
    proc = _tree(tmp_path, {"cgroup": "0::/kubepods/pod1/abc\n"}) / "cgroup"
    assert cgroup_limit(str(proc), str(cgroup)) == GB


def test_no_cgroup_is_the_machine(tmp_path: Path):
    assert cgroup_limit(str(tmp_path / "absent"), str(tmp_path)) is None
    proc = _tree(tmp_path, {"cgroup": "0::/\n"}) / "cgroup"
    assert cgroup_limit(str(proc), str(tmp_path / "fs")) is None
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_limit(str(proc), str(tmp_path / "fs")).bytes == machine


def test_a_batch_past_the_cgroup_limit_is_one_line(tiny_model: Path, tiny_folder: Path, tmp_path):
    """A real cgroup capped at 1.5 GB, the job started in it: buffers of 2.3 GB, which
    the machine has, are past what the process may use."""
    limit = 3 * GB // 2
    if memory_limit().bytes < 4 * GB:
        pytest.skip("needs a machine with more memory than the batch takes")
    out = tmp_path / "p.csv"
    command = [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), str(tiny_folder)]
    done = run_in_cgroup(
        limit, [*command, "-o", str(out), "--batch-size", "4000000", "--no-progress"]
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "more than this process's memory limit (its cgroup's) 1.5 GB" in lines[0]
    assert "--batch-size" in lines[0]
    assert not out.exists()


def test_bench_ends_its_sweep_before_a_batch_past_the_limit(tmp_path: Path):
    """bench in a container: a batch size whose memory passes the cgroup's limit got the
    whole process killed by the kernel (exit 137, every row lost). Its growth from the
    sizes measured says so first: the sweep ends there, with the rows measured."""
    from conftest import _tiny_classifier

    model = _tiny_classifier(
        tmp_path / "big.onnx", uint8_nhwc=True, labels=("a", "b"), hw=(1024, 1024)
    )
    report = tmp_path / "bench.json"
    command = [sys.executable, "-m", "cnnbench", "bench", "--model", str(model)]
    args = ["--provider", "cpu", "--batch-sizes", "1,2,4,128", "--duration", "0.3"]
    done = run_in_cgroup(GB, [*command, *args, "--json", str(report)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sweep ended: batch 128 would take about" in done.stdout + done.stderr
    assert "past this process's memory limit (its cgroup's) 1.0 GB" in done.stdout + done.stderr
    rows = json.loads(report.read_text())["results"]
    assert sorted({r["batch_size"] for r in rows}) == [1, 2, 4]
    # a first size alone is held to its input's bytes at least: 512 x 1024 x 1024 x 3
    args[args.index("1,2,4,128")] = "512"
    done = run_in_cgroup(GB, [*command, *args, "--json", str(report)])
    assert done.returncode == 0, done.stdout + done.stderr
    said = re.search(r"sweep ended: batch 512 would take about ([\d.]+) GB", done.stdout)
    assert said and float(said[1]) >= 512 * 1024 * 1024 * 3 / GB, done.stdout
    assert json.loads(report.read_text())["results"] == []


@pytest.mark.parametrize("data", ["digits", "folder"])
def test_train_data_past_the_limit_is_one_line(data: str, tmp_path: Path):
    """Training holds the decoded images in memory (digits three times over, a folder's
    in tf.data's cache): past a 1 GB cgroup the kernel killed the run unannounced; the
    count, size and limit say so first."""
    args = ["--data", "digits", "--img-size", "500"]  # 1,797 x 500 x 500 x 3 copies: 1.3 GB
    if data == "folder":  # 26 images at 4000 x 4000 x 3: 1.2 GB
        for k in range(26):
            folder = tmp_path / "photos" / ("ab"[k % 2])
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{k}.png"), np.full((8, 8, 3), 10 * k, np.uint8))
        args = ["--data", str(tmp_path / "photos"), "--img-size", "4000", "--channels", "3"]
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "cnnbench", "train", "mnist_cnn", "--out", str(run_dir)]
    done = run_in_cgroup(GB, [*command, *args, "--epochs", "1"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, done.stderr
    assert (
        "past" not in error[0] and "this process's memory limit (its cgroup's) 1.0 GB" in error[0]
    )
    assert "--img-size" in error[0]
    assert not run_dir.exists()
