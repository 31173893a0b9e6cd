"""How much memory a task may still take: the machine's, or less where a container's memory limit says so.

A container (Docker, Kubernetes, a CI runner) limits its processes' memory through a cgroup, while /proc/meminfo
still shows the whole host: a 100 GB host's MemAvailable told a run capped at 8 GB it had room for 8 summaries in
flight, and the kernel would have killed it. So the room a cgroup leaves (its limit less its usage, the page cache it
can drop not counted as used) caps the machine's figure, at every level of the process's cgroup path (a parent's
limit holds for its children), in cgroup v2 and v1 alike, wherever /proc/self/mountinfo says the hierarchy is
mounted.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC_MEMINFO = Path("/proc/meminfo")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_MOUNTINFO = Path("/proc/self/mountinfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")  # where the hierarchies are mounted when mountinfo can't say
# Each cgroup version's files: the limit, the usage, and memory.stat's key for page cache it can drop.
V2_FILES = ("memory.max", "memory.current", "inactive_file")
V1_FILES = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
# cgroup v1 says "no limit" with the largest page-aligned 63-bit number; v2 says "max".
NO_LIMIT = 2**62


def available_memory() -> int | None:
    """Bytes of memory this process can still take: the machine's (Linux's MemAvailable; else the free pages where
    the system says), or what its cgroup still allows where that is less; None where neither can be told (macOS has
    no count of free pages in sysconf, Windows no sysconf)."""
    known = [size for size in (_machine_available(), cgroup_room()) if size is not None]
    return min(known, default=None)


def _machine_available() -> int | None:
    try:
        with PROC_MEMINFO.open() as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cgroup_room() -> int | None:
    """Bytes the tightest memory limit on this process's cgroup path still allows, or None where none is set (or
    there are no cgroups: not Linux)."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    mounts = _cgroup_mounts()
    rooms = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:  # not a cgroup line: this lookup may never stop a run
            continue
        _, controllers, path = parts
        if controllers == "":  # the v2 hierarchy
            (base, mount_root), files = mounts.get("v2", (CGROUP_ROOT, "/")), V2_FILES
        elif "memory" in controllers.split(","):
            (base, mount_root), files = mounts.get("memory", (CGROUP_ROOT / "memory", "/")), V1_FILES
        else:
            continue
        # The mount shows the hierarchy from `mount_root` down (a container's own cgroup, without a namespace).
        top = mount_root.rstrip("/")
        if not (path + "/").startswith(top + "/"):
            continue
        folder = base / path[len(top) :].lstrip("/")
        while folder.is_relative_to(base):
            room = _room_in(folder, *files)
            if room is not None:
                rooms.append(room)
            if folder == base:
                break
            folder = folder.parent
    return min(rooms) if rooms else None


def _cgroup_mounts() -> dict[str, tuple[Path, str]]:
    """Where the v2 hierarchy ("v2") and v1's memory controller ("memory") are mounted, each with the cgroup path the
    mount shows at its top, from /proc/self/mountinfo; v1's memory may share a mount with other controllers
    (/sys/fs/cgroup/cpu,memory)."""
    try:
        lines = PROC_MOUNTINFO.read_text().splitlines()
    except OSError:
        return {}
    mounts: dict[str, tuple[Path, str]] = {}
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, kind = left.split(), right.split()
        if len(fields) < 5 or len(kind) < 3:
            continue
        if kind[0] == "cgroup2":
            mounts.setdefault("v2", (Path(fields[4]), fields[3]))
        elif kind[0] == "cgroup" and "memory" in kind[2].split(","):
            mounts.setdefault("memory", (Path(fields[4]), fields[3]))
    return mounts


def _room_in(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    """One cgroup's limit less its usage, its droppable page cache counted as free; None without a limit."""
    try:
        limit = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if limit == "max" or not limit.isdigit() or int(limit) >= NO_LIMIT:
        return None
    inactive = 0
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
    except (OSError, ValueError):
        pass
    return max(0, int(limit) - usage + inactive)
