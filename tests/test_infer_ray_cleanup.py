"""A driver that started its own local Ray cluster and is killed hard leaves none of that
cluster running. Apart from test_infer_ray.py, whose module-wide cluster would be found
and joined instead of a new one started (so this module runs after that one ends)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import ray_command, session_holders, wait_for_blocks

pytest.importorskip("ray", reason="needs the ray extra: pip install 'cnnbench[ray]'")


def running_clusters() -> bool:
    """A Ray cluster on this machine (its GCS server), which the driver would join."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"gcs_server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_driver_leaves_no_cluster_of_its_own(
    tiny_model: Path, slow_folder: Path, tmp_path: Path
) -> None:
    """A driver that started its own local cluster is killed with SIGKILL: within a few
    seconds no process of that cluster is left (Ray's agents alone would stay ~1 min)."""
    pytest.importorskip("ray")
    if running_clusters():
        pytest.skip("a Ray cluster runs on this machine: the driver would join it")
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Unix socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmp)  # address=auto finds no cluster there: start one
    out = tmp_path / "pred.csv"
    command = ray_command(tiny_model, slow_folder, out, "x")
    command = [a for a in command if a not in ("--address", "x")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        wait_for_blocks(out, 1, proc, timeout=240)
        (latest,) = ray_tmp.glob("**/session_latest")  # RAY_TMPDIR/ray/session_latest
        session = os.path.realpath(latest) + "/"
        assert len(session_holders(session)) >= 3, "the run's own cluster is running"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while (left := session_holders(session)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], f"processes of the killed driver's cluster still running: {left}"
    shutil.rmtree(ray_tmp, ignore_errors=True)
