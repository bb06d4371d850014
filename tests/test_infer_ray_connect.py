"""`infer --engine ray --address HOST:PORT` against clusters started with `ray start`, as a
user starts them: each a head of its own (tests/helpers.py `ray_node`), its processes
killed by PID afterwards; the driver a `cnnbench` process with its own environment.

- Token authentication: `ray start` with RAY_AUTH_MODE unset turns it on when a token
  file is at hand (~/.ray/auth_token), ray.init(address=...) did not, and the same user
  on the same machine got 20 s of C++ lines and "no Ray cluster at ...".
- A head on loopback only, given as 127.0.0.1: Ray connects through the machine's own
  address instead, where nothing listens, and the driver waited for ever.
- A batch that fits the driver's memory but not the worker node's cgroup: the kernel
  killed the workers and Ray retried them for ever.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import memory_cgroup, paths, ray_node

pytest.importorskip("ray", reason="needs the ray extra: pip install 'cnnbench[ray]'")
TOKEN = "0123456789abcdef0123456789abcdef"


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any Ray setting, HOME a folder of the test's
    own (its ~/.ray/auth_token, or none), a cluster on loopback, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    return env | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"} | extra


def user_home(root: Path, token: str | None) -> Path:
    """A home folder with `token` in .ray/auth_token, as Ray writes it (None: no file)."""
    root.mkdir()
    if token is not None:
        (root / ".ray").mkdir()
        (root / ".ray" / "auth_token").write_text(token)
    return root


def images(folder: Path, count: int = 3) -> Path:
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.full((16, 16, 3), 40 * i, np.uint8))
    return folder


def driver(
    model: Path, folder: Path, out: Path, address: str, env: dict, *extra: str,
    timeout: float = 120, prefix: tuple[str, ...] = (),
) -> tuple[int, str, float]:  # fmt: skip
    """`cnnbench infer --engine ray --address` in a process of its own (run after
    `prefix`): exit code, stderr, seconds; a run past `timeout` is killed and fails."""
    command = [*prefix, sys.executable, "-m", "cnnbench", "infer", str(model), str(folder)]
    command += ["-o", str(out)]
    command += ["--engine", "ray", "--address", address, "--no-progress", *extra]
    start = time.monotonic()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the driver ran past {timeout} s: {e.stderr!r}"[-3000:])
    return done.returncode, done.stderr, time.monotonic() - start


def assert_one_line(code: int, stderr: str, seconds: float, *needles: str) -> None:
    """A refusal: exit 1, only `ray: ` lines before one `Error: ` line, in seconds."""
    lines = stderr.strip().splitlines()
    assert code == 1 and lines and lines[-1].startswith("Error: "), stderr
    assert all(line.startswith("ray: ") for line in lines[:-1]), stderr
    for needle in needles:
        assert needle in lines[-1], stderr
    assert seconds < 15, f"{seconds:.1f} s: {stderr}"


@pytest.mark.slow
def test_the_same_user_connects_to_a_token_cluster(tiny_model: Path, tmp_path: Path) -> None:
    """`ray start` with RAY_AUTH_MODE unset and a token file turns token authentication
    on; the driver with the same home connects as it does. A wrong token, or the mode
    set to disabled, is one line that says it is authentication and what to set."""
    home = user_home(tmp_path / "home", TOKEN)
    folder, out = images(tmp_path / "in"), tmp_path / "p.csv"
    with ray_node(base_env(home)) as address:
        code, stderr, _ = driver(tiny_model, folder, out, address, base_env(home))
        assert code == 0, stderr
        assert sorted(paths(out)) == ["0.jpg", "1.jpg", "2.jpg"]
        wrong = base_env(home, RAY_AUTH_TOKEN="f" * 32)
        failed = driver(tiny_model, folder, tmp_path / "w.csv", address, wrong)
        assert_one_line(*failed, f"the Ray cluster at {address} refused this driver's", "token")
        assert "RAY_AUTH_TOKEN" in failed[1] and "gcs_client" not in failed[1]
        disabled = base_env(home, RAY_AUTH_MODE="disabled")
        failed = driver(tiny_model, folder, tmp_path / "d.csv", address, disabled)
        assert_one_line(*failed, "uses token authentication but RAY_AUTH_MODE=disabled")
        nobody = base_env(user_home(tmp_path / "nobody", None))
        failed = driver(tiny_model, folder, tmp_path / "n.csv", address, nobody)
        assert_one_line(*failed, "this driver has no token", "RAY_AUTH_MODE=token")


def test_a_cluster_without_authentication_takes_a_driver_with_a_token_file(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A cluster started with RAY_AUTH_MODE=disabled: a driver whose home has a token
    file still connects; one with RAY_AUTH_MODE=token (whose actors would never run
    there) is told so in one line."""
    home = user_home(tmp_path / "home", TOKEN)
    folder, out = images(tmp_path / "in"), tmp_path / "p.csv"
    with ray_node(base_env(home, RAY_AUTH_MODE="disabled")) as address:
        code, stderr, _ = driver(tiny_model, folder, out, address, base_env(home))
        assert code == 0, stderr
        assert sorted(paths(out)) == ["0.jpg", "1.jpg", "2.jpg"]
        token = base_env(home, RAY_AUTH_MODE="token")
        failed = driver(tiny_model, folder, tmp_path / "t.csv", address, token)
        assert_one_line(*failed, "does not use token authentication", "RAY_AUTH_MODE=disabled")


@contextlib.contextmanager
def host_namespace() -> Iterator[tuple[str, ...]]:
    """A network namespace standing for a host: loopback, and an address of its own
    (198.18.0.2, RFC 2544's benchmarking range) on one end of a veth pair whose other end
    is in the namespace too, with the default route through it, so Ray takes that address
    for the node's. Nothing leaves the namespace. Yields the command prefix that runs a
    process in it: `nsenter --net`, not `ip netns exec`, which mounts a /sys of its own
    without the cgroup file system (a worker could not read its memory limit)."""
    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root")
    ns = f"cbrc{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"ip netns add failed: {made.stderr.strip()}")
    try:
        for args in (
            ["link", "set", "lo", "up"],
            ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            ["addr", "add", "198.18.0.2/24", "dev", "v0"],
            ["link", "set", "v0", "up"],
            ["link", "set", "v1", "up"],
            ["route", "add", "default", "dev", "v0"],
        ):
            subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)
        yield ("nsenter", f"--net=/run/netns/{ns}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces")
def test_a_head_on_loopback_only_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    """In a namespace whose own address is 198.18.0.2: a head started with
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 listens on 127.0.0.1 only; a driver without it is
    sent by Ray to 198.18.0.2, where nothing listens, and waited for ever. A head on
    every interface, given as 127.0.0.1, still runs the job."""
    home = user_home(tmp_path / "home", None)
    folder, out = images(tmp_path / "in"), tmp_path / "p.csv"
    env = base_env(home, RAY_AUTH_MODE="disabled")
    everywhere = {k: v for k, v in env.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    with host_namespace() as netns:
        with ray_node(env, netns) as address:
            failed = driver(tiny_model, folder, out, address, everywhere, prefix=netns, timeout=60)
            assert_one_line(*failed, "answers on loopback only", "198.18.0.2")
            assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in failed[1]
        with ray_node(everywhere, netns) as address:
            code, stderr, _ = driver(tiny_model, folder, out, address, everywhere, prefix=netns)
            assert code == 0, stderr
            assert sorted(paths(out)) == ["0.jpg", "1.jpg", "2.jpg"]


@pytest.mark.parametrize("capped", ["head", "other node"])
def test_a_batch_past_a_worker_nodes_cgroup_is_one_line(capped: str, tmp_path: Path) -> None:
    """A node's Ray processes in a 1.5 GB memory cgroup, the driver outside it: batches of
    600 images of 1024x1024 (1.9 GB each) fit the driver's memory, not that node's. The
    job is refused before it starts, whether the capped node is the one the probe task
    ran on (the head, the only node) or another (a second node joined to a head
    outside the cgroup: each node is asked). Ray refuses a second node on loopback, so
    that cluster runs in a namespace of its own (`host_namespace`)."""
    from conftest import _tiny_classifier

    model = _tiny_classifier(
        tmp_path / "big.onnx", uint8_nhwc=True, labels=("a", "b"), hw=(1024, 1024)
    )
    home = user_home(tmp_path / "home", None)
    env = base_env(home, RAY_AUTH_MODE="disabled")
    folder, out = images(tmp_path / "in"), tmp_path / "p.csv"
    netns: tuple[str, ...] = ()
    with contextlib.ExitStack() as nodes:
        enter = nodes.enter_context(memory_cgroup(3 * 10**9 // 2))
        if capped == "head":
            address = nodes.enter_context(ray_node(env, preexec_fn=enter))
        else:
            netns = nodes.enter_context(host_namespace())
            env = {k: v for k, v in env.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
            address = nodes.enter_context(ray_node(env, netns))
            nodes.enter_context(ray_node(env, netns, enter, join=address, cpus=1))
        args = ("--batch-size", "600")
        failed = driver(model, folder, out, address, env, *args, timeout=60, prefix=netns)
    assert_one_line(*failed, "batch size 600: 2 batches of 1024x1024x3 images take 3.8 GB")
    assert "more than this process's memory limit (its cgroup's) 1.5 GB" in failed[1]
    node = "127.0.0.1" if capped == "head" else "198.18.0.2"
    assert f"on the Ray worker at {node}" in failed[1]
    assert not out.exists()
