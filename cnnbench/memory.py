"""How much memory this process may use: the machine's, or less where a container or
a systemd slice caps it (a cgroup memory limit). A job sized by the machine's figure
alone is killed by the kernel's OOM killer in a container, with no word of why."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int
    whose: str  # "this machine's", or the cgroup's words: for the user's line

    def __str__(self) -> str:
        """'this machine's 25.3 GB of memory': how the one-line errors name it."""
        return f"{self.whose} {self.bytes / 1e9:,.1f} GB of memory"


def memory_limit(proc_cgroup: str = PROC_CGROUP, root: str = CGROUP_ROOT) -> MemoryLimit:
    """The smaller of the machine's memory and its cgroup's limit."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    machine = MemoryLimit(physical, "this machine's")
    capped = cgroup_limit(proc_cgroup, root)
    if capped is not None and capped < machine.bytes:
        return MemoryLimit(capped, "this process's memory limit (its cgroup's)")
    return machine


def cgroup_limit(proc_cgroup: str = PROC_CGROUP, root: str = CGROUP_ROOT) -> int | None:
    """The tightest memory limit on this process's cgroup and the cgroups above it
    (cgroup v2's `memory.max`, v1's `memory.limit_in_bytes`); None where there is none
    or nothing can be read (not Linux, no cgroup file system)."""
    try:
        lines = Path(proc_cgroup).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # v2: one tree, mounted at the root
            limits.append(_tightest(Path(root), path, "memory.max"))
        elif "memory" in controllers.split(","):  # v1: the memory controller's own tree
            limits.append(_tightest(Path(root) / "memory", path, "memory.limit_in_bytes"))
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _tightest(mount: Path, path: str, name: str) -> int | None:
    """The smallest limit in `name` from the cgroup at `path` up to the mount's root.
    In a container the path seen in /proc may be the host's and absent from its mount:
    the levels that exist are read (the container's own limit sits at the root)."""
    here = mount / path.strip("/")
    found = []
    while True:
        if (limit := _read_limit(here / name)) is not None:
            found.append(limit)
        if here == mount or mount not in here.parents:
            break
        here = here.parent
    return min(found) if found else None


def _read_limit(file: Path) -> int | None:
    try:
        text = file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # v2 writes "max" for none


def resident_bytes() -> int | None:
    """This process's resident memory now (/proc/self/statm); None where not Linux."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
