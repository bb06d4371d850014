"""Connecting `infer --engine ray` to a cluster: an existing one by address, or a local one
started for this run (and ended with it, see ray_cleanup.py). Ray is imported lazily."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from types import ModuleType

from cnnbench.files import Report
from cnnbench.infer.engines.ray_auth import TOKEN_AUTH_LOGGER, authenticate
from cnnbench.infer.engines.ray_cleanup import start_watchdog
from cnnbench.infer.errors import InferError, first_line
from cnnbench.infer.sources.listing import reason

RAY_HINT = "pip install 'cnnbench[ray]'"
CONNECT_TIMEOUT_S = 3.0


def import_ray() -> ModuleType:
    """Ray and Ray Data, or one line saying how to install them."""
    try:
        import ray
        import ray.data  # the [data] part of the extra
    except ImportError as e:
        raise InferError(
            f"--engine ray needs Ray Data, which is not installed ({e}); install it with: "
            f"{RAY_HINT}"
        ) from e
    return ray


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InferError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _connect_from(address: str) -> str:
    """The local address this machine reaches HOST:PORT from; OSError when nothing listens."""
    with socket.create_connection(_host_port(address), CONNECT_TIMEOUT_S) as s:
        return str(s.getsockname()[0])


def _check_reachable(address: str) -> str:
    """Fail in seconds, not minutes, when nothing listens at HOST:PORT; the local address
    this machine reaches it from."""
    _host_port(address)  # the format first
    try:
        return _connect_from(address)
    except OSError as e:
        raise InferError(
            f"no Ray cluster at {address} ({reason(e)}): start one there with "
            "`ray start --head`, or leave out --address to start a local one"
        ) from e


def _ray_target(address: str) -> str:
    """The HOST:PORT that ray.init connects to for `address`. Ray swaps a loopback host for
    this machine's node address (services.canonicalize_bootstrap_address, unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set before Ray was imported); a head bound to
    loopback only (one started with that variable) is not there, and ray.init retried
    for ever. Private API: remove when ray.init connects to a loopback address as given."""
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(address) or address


def _check_same_target(address: str, target: str) -> None:
    """One line when Ray would connect to `target` instead of `address` and nothing
    listens there."""
    if target == address:
        return
    try:
        _connect_from(target)
    except OSError as e:
        raise InferError(
            f"the Ray cluster at {address} answers on loopback only, and Ray connects to a "
            f"loopback address through this machine's address, {target}, where nothing "
            f"answers ({reason(e)}): set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for cnnbench too "
            "(a head started with it listens on loopback only), or restart the head without it"
        ) from e


def _driver_address(address: str, here: str | None) -> dict:
    """`_node_ip_address` for ray.init when Ray's own guess would be wrong. Ray takes the
    address of the interface that routes to a public one (8.8.8.8; a UDP connect, which
    sends nothing); where there is no such route (a private network, a namespace) it falls
    back to the host name's address, which need not be this machine's node at all, and
    the job waits forever. The address this machine reaches the cluster from is the
    right one then."""
    if here is None or address.startswith("ray://") or here.startswith("127."):
        return {}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("8.8.8.8", 53))
        return {}  # Ray's guess works
    except OSError:
        return {"_node_ip_address": here}


def check_cluster(ray: ModuleType, address: str | None) -> str | None:
    """One line, in seconds, where the cluster at `address` (HOST:PORT; None or 'auto':
    none is named) cannot be connected to: nothing listens, Ray would connect elsewhere,
    its authentication differs. Made before anything is written (a dead --address left
    the output's staging folder behind) and again by `connect`. Returns the local address
    this machine reaches it from."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address in (None, "auto"):
        return None
    here = _check_reachable(address)
    if not ray.is_initialized() and not address.startswith("ray://"):
        target = _ray_target(address)
        _check_same_target(address, target)
        authenticate(target)
    return here


def connect(
    ray: ModuleType, address: str | None, report: Report
) -> tuple[bool, subprocess.Popen | None]:
    """Connect this driver to a cluster, or start a local one; say which. Returns
    whether this call made the connection (and so must end it), and the watchdog of a
    cluster it started (ray_cleanup.py)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    here = check_cluster(ray, address)
    if ray.is_initialized():
        report("ray: using this process's connection to its cluster")
        return False, None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address is not None:
            ray.init(address=address, **quiet, **_driver_address(address, here))
            report(f"ray: connected to the cluster at {address}")
            return True, None
        try:
            ray.init(address="auto", **quiet)
            report("ray: connected to the running cluster (found by address=auto)")
        except ConnectionError:
            # Ray warns that token authentication is on by default: this cluster is this
            # run's own, on this machine, and ends with it. Remove when ray.init() of a
            # local cluster stops logging that warning.
            logging.getLogger(TOKEN_AUTH_LOGGER).setLevel(logging.ERROR)
            ray.init(**quiet)
            cpus = int(ray.cluster_resources().get("CPU", 0))
            report(f"ray: no cluster running; started a local one ({cpus} CPUs) for this run")
            return True, start_watchdog(ray)
    except ConnectionError as e:
        raise InferError(
            f"no Ray cluster at {address}: {first_line(e)}; start one with `ray start --head`"
        ) from e
    return True, None
