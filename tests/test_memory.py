"""bigbird.tasks.memory: the memory a task may still take, the machine's capped by its cgroup's (a container's)
limit at every level of its cgroup path, in cgroup v2 and v1, on made-up /proc and /sys trees."""

from __future__ import annotations

import pytest

from bigbird.tasks import memory

GiB = 2**30
MACHINE = 100 * GiB


@pytest.fixture
def fake_system(tmp_path, monkeypatch):
    """Point the module at a made-up /proc/meminfo (100 GiB available) and cgroup tree; returns a function that
    writes /proc/self/cgroup and each cgroup's (limit, usage, droppable cache) files."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {2 * MACHINE // 1024} kB\nMemAvailable: {MACHINE // 1024} kB\n")
    root = tmp_path / "cgroup"
    monkeypatch.setattr(memory, "PROC_MEMINFO", meminfo)
    monkeypatch.setattr(memory, "CGROUP_ROOT", root)
    monkeypatch.setattr(memory, "PROC_CGROUP", tmp_path / "self-cgroup")
    monkeypatch.setattr(memory, "PROC_MOUNTINFO", tmp_path / "mountinfo")  # none: the usual mount points

    def write(version: int, own: str, groups: dict[str, tuple[str, int, int]]) -> None:
        line = f"0::{own}" if version == 2 else f"4:memory:{own}\n2:cpu,cpuacct:{own}"
        (tmp_path / "self-cgroup").write_text(line + "\n")
        limit_file, usage_file, inactive_key = memory.V2_FILES if version == 2 else memory.V1_FILES
        base = root if version == 2 else root / "memory"
        for path, (limit, usage, inactive) in groups.items():
            folder = base / path.lstrip("/")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / limit_file).write_text(f"{limit}\n")
            (folder / usage_file).write_text(f"{usage}\n")
            (folder / "memory.stat").write_text(f"active_file 5\n{inactive_key} {inactive}\nanon 7\n")

    return write


@pytest.mark.parametrize("version", [2, 1])
def test_a_containers_limit_caps_the_machines_memory(fake_system, version):
    """The room left is the limit less the usage, with the page cache the cgroup can drop counted as free."""
    fake_system(version, "/ci/job", {"/ci/job": (str(8 * GiB), 3 * GiB, GiB), "/ci": ("max", 3 * GiB, 0)})
    assert memory.cgroup_room() == 6 * GiB
    assert memory.available_memory() == 6 * GiB


@pytest.mark.parametrize("version", [2, 1])
def test_the_tightest_limit_on_the_path_holds(fake_system, version):
    """A parent's limit holds for its children: the least room on the way to the root counts."""
    groups = {"/": (str(50 * GiB), 10 * GiB, 0), "/pods": (str(4 * GiB), 3 * GiB, 0), "/pods/a": (str(8 * GiB), GiB, 0)}
    fake_system(version, "/pods/a", groups)
    assert memory.available_memory() == GiB


@pytest.mark.parametrize(("version", "unlimited"), [(2, "max"), (1, str(9223372036854771712))])
def test_without_a_limit_the_machines_memory_counts(fake_system, version, unlimited):
    fake_system(version, "/", {"/": (unlimited, 3 * GiB, 0)})
    assert memory.cgroup_room() is None and memory.available_memory() == MACHINE


def test_a_limit_far_above_the_machine_or_no_cgroups_leave_the_machines_memory(fake_system, tmp_path):
    fake_system(2, "/big", {"/big": (str(1000 * GiB), GiB, 0)})
    assert memory.available_memory() == MACHINE
    (tmp_path / "self-cgroup").unlink()  # not Linux, or no cgroups mounted
    assert memory.cgroup_room() is None and memory.available_memory() == MACHINE


def test_a_full_cgroup_leaves_no_room(fake_system):
    fake_system(2, "/full", {"/full": (str(2 * GiB), 3 * GiB, 0)})  # over its limit: reclaim is under way
    assert memory.available_memory() == 0


def test_a_system_that_cant_tell_its_free_memory_says_none(fake_system, tmp_path, monkeypatch):
    """macOS has no free-page count in sysconf, Windows no sysconf: None, not a crash (summarize then takes 1)."""
    (tmp_path / "meminfo").unlink()

    def no_sysconf(name):
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(memory.os, "sysconf", no_sysconf)
    assert memory.available_memory() is None
    fake_system(2, "/job", {"/job": (str(4 * GiB), GiB, 0)})  # a cgroup's room still counts where it is all there is
    assert memory.available_memory() == 3 * GiB


def test_lines_that_are_not_cgroups_are_passed_over(fake_system, tmp_path):
    fake_system(2, "/job", {"/job": (str(4 * GiB), GiB, 0)})
    path = tmp_path / "self-cgroup"
    path.write_text("garbage\n" + path.read_text())
    assert memory.available_memory() == 3 * GiB


@pytest.mark.parametrize("version", [2, 1])
def test_the_hierarchy_is_found_where_mountinfo_says(fake_system, tmp_path, version):
    """v1's memory controller mounted beside others (cpu,memory), v2 beside v1 (a hybrid host's unified), and a
    container that sees its own cgroup at the mount's top without a cgroup namespace."""
    fake_system(version, "/docker/abc", {})
    base = tmp_path / "mounted" / ("unified" if version == 2 else "cpu,memory")
    base.mkdir(parents=True)
    limit_file, usage_file, _ = memory.V2_FILES if version == 2 else memory.V1_FILES
    (base / limit_file).write_text(f"{5 * GiB}\n")
    (base / usage_file).write_text(f"{2 * GiB}\n")
    kind = "cgroup2 cgroup2 rw" if version == 2 else "cgroup cgroup rw,cpu,memory"
    (tmp_path / "mountinfo").write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        f"35 31 0:32 /docker/abc {base} rw,relatime - {kind}\n"
    )
    assert memory.available_memory() == 3 * GiB
