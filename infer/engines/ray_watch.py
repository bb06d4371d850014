"""The rows of a Ray job, pulled on a thread of their own, so that the driver watches the
cluster while it waits for them instead of blocking inside Ray Data.

What that buys: Ctrl-C is acted on within a fraction of a second even when no batch
comes (a second one interrupts at once); a node that leaves the cluster is said in one
line; and a job that makes no progress for `STALL_S` after losing a node stops, keeping
its committed blocks for `--resume`, instead of waiting forever. That wait was seen with
a worker raylet killed mid-job: the survivors' CPUs all held inference actors, none was
left for the decode tasks, and Ray Data waited for resources that would never come.

On a stop the pulling thread leaves Ray Data at its next batch (waited for up to
`LEAVE_S`), so that the driver shuts Ray down with no thread of its inside Ray: a thread
left there ended the process with exit code 1 ("The core worker has already been
shutdown") before it said what was saved, seen once with the machine under load.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from cnnbench.files import Report

STALL_S = 30.0  # no row for this long after a node was lost: stop
POLL_S = 0.25  # how often the driver looks up from waiting
NODES_EVERY_S = 1.0  # how often it asks the cluster which nodes are alive
LEAVE_S = 10.0  # a stop waits this long for the pulling thread to leave Ray Data
_END = object()


class Stalled(Exception):
    """The job made no progress after losing a node; the message says which."""


def alive_nodes(ray: ModuleType) -> dict[str, str]:
    """Node id -> address of every node the cluster counts as alive."""
    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}


def _pull(batches: Iterator[Any], out: queue.Queue, leave: threading.Event) -> None:
    """Hand `batches` to the driver's thread; once `leave` is set, return at the next
    batch, which closes Ray Data's iterator on this thread, the one iterating it."""
    try:
        for batch in batches:
            while not leave.is_set():
                try:
                    out.put(batch, timeout=POLL_S)
                    break
                except queue.Full:
                    continue
            if leave.is_set():
                return
        out.put(_END)
    except BaseException as e:  # handed to the driver's thread, which raises it
        out.put(e)


class Watch:
    """What the driver has seen of the cluster since the job started."""

    def __init__(self, ray: ModuleType, report: Report) -> None:
        self.ray, self.report = ray, report
        self.alive = alive_nodes(ray)
        self.checked = self.lost_at = self.last_row = time.monotonic()
        self.lost: list[str] = []

    def look(self, now: float) -> None:
        """Note the nodes that left since the last look; raise Stalled when no row came
        for STALL_S since a node was lost."""
        if now - self.checked >= NODES_EVERY_S:
            self.checked = now
            current = alive_nodes(self.ray)
            gone = [address for node, address in self.alive.items() if node not in current]
            if gone:
                self.lost += gone
                self.lost_at = now
                self.report(
                    f"ray: lost node {', '.join(gone)}; its work is retried on the "
                    f"{len(current)} nodes left"
                )
            self.alive = current
        if self.lost and now - max(self.last_row, self.lost_at) > STALL_S:
            cpus = int(self.ray.cluster_resources().get("CPU", 0))
            raise Stalled(
                f"ray: no rows for {STALL_S:.0f} s since node {', '.join(self.lost)} was lost "
                f"({cpus} CPUs left, too few for the inference actors and the decoding): "
                "stopping"
            )


def watched(ray: ModuleType, batches: Iterator[Any], report: Report, stop: Any) -> Iterator[Any]:
    """`batches`, pulled on a daemon thread; ends early when `stop.requested` (Ctrl-C),
    raises Stalled (see the module docstring) or whatever the pulling raised."""
    ready: queue.Queue = queue.Queue(maxsize=4)
    leave = threading.Event()
    puller = threading.Thread(target=_pull, args=(batches, ready, leave), daemon=True)
    puller.start()
    watch = Watch(ray, report)
    ended = False
    try:
        while not stop.requested:
            try:
                item = ready.get(timeout=POLL_S)
            except queue.Empty:
                item = None
            if item is _END:
                ended = True
                return
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                watch.last_row = time.monotonic()
                yield item
            watch.look(time.monotonic())
    finally:
        if not ended:  # stopped early: the pulling thread leaves at its next batch
            leave.set()
            puller.join(LEAVE_S)
            if puller.is_alive():  # still inside Ray Data's iterator (no batch came)
                _no_auto_connect(ray)


def _no_auto_connect(ray: ModuleType) -> None:
    """Keep the pulling thread, still inside Ray Data's iterator when the driver stops
    early and no batch came within LEAVE_S, from connecting again after the driver's
    ray.shutdown(): any Ray call made
    without a connection runs ray.init() (Ray's auto-connect, read from
    RAY_ENABLE_AUTO_CONNECT at import), which would join a cluster or start a local one
    as the process ends. Remove when a Ray Data iterator can be closed from another thread."""
    hook = getattr(getattr(ray, "_private", None), "auto_init_hook", None)
    if hook is not None and hasattr(hook, "enable_auto_connect"):
        hook.enable_auto_connect = False
