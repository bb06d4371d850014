"""Stop what is left of a local Ray cluster once the driver that started it is gone.

`ray.init()` without a cluster to join starts one whose processes end with the driver,
except two agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`, about 185 MB together
with Ray 2.5x) that notice their raylet is gone only about a minute later. After a
`kill -9` of the driver nothing in the driver can act, so a watchdog process is started
with the cluster: it reads a pipe whose only writer is the driver, so the read returns
when the driver ends, however it ends; it then stops every process that still has a file
open in the cluster's session folder (the agents' cmdlines are rewritten, their open log
files are not). Linux only (/proc); elsewhere no watchdog is started. The session folder
comes from a private Ray attribute: if it moves, no watchdog is started and the agents
end on their own. Remove when Ray's agents exit with their raylet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

_WATCHDOG = r"""
import os, signal, sys, time
driver, session = int(sys.argv[1]), sys.argv[2]
sys.stdin.buffer.read()  # returns when the driver, the pipe's only writer, has ended
me = os.getpid()

def holders():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) in (me, driver):  # alive after a clean shutdown: not ours to stop
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(session) for fd in fds):
                found.append(int(pid))
        except OSError:
            continue
    return found

for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in holders():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    time.sleep(1.0)
"""


def session_dir(ray: Any) -> str | None:
    """The session folder of the cluster this process started, when Ray says it."""
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    try:
        return node.get_session_dir_path() if node is not None else None
    except Exception:  # a private API: any change in it only means no watchdog
        return None


def start_watchdog(ray: Any) -> subprocess.Popen | None:
    """A watchdog for the local cluster this process just started (see above)."""
    session = session_dir(ray)
    if session is None or not sys.platform.startswith("linux"):
        return None
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), session.rstrip("/") + "/"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C for the driver's group must not stop it first
    )


def release_watchdog(watchdog: subprocess.Popen | None) -> None:
    """After `ray.shutdown()`: the watchdog stops any straggler and exits."""
    if watchdog is not None and watchdog.stdin is not None:
        watchdog.stdin.close()
