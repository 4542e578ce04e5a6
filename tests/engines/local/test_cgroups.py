"""Cgroup limits and membership (real cgroup v1/v2 when writable, fake trees otherwise)."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from mso.engines.local.cgroups import CgroupManager

from .conftest import until_sync

MiB = 1024 * 1024


@pytest.fixture
def manager() -> Iterator[CgroupManager]:
    mgr = CgroupManager(f"mso-test/{uuid.uuid4().hex[:8]}")
    ok, reason = mgr.available()
    if not ok:
        pytest.skip(f"cgroups unavailable here: {reason}")
    yield mgr
    mgr.cleanup()


def _read(group_dirs: dict[str, Path], ctrl: str, name: str) -> str:
    return (group_dirs[ctrl] / name).read_text().strip()


def test_limits_are_written_and_reported_enforced(manager: CgroupManager) -> None:
    group = manager.create("web-1", cpu=0.5, memory=256 * MiB)
    assert group.enforced == {"cpu": True, "memory": True, "pids_tracking": True}
    if "unified" in group.dirs:
        assert _read(group.dirs, "unified", "cpu.max") == "50000 100000"
        assert _read(group.dirs, "unified", "memory.max") == str(256 * MiB)
    else:
        assert _read(group.dirs, "cpu", "cpu.cfs_quota_us") == "50000"
        assert _read(group.dirs, "cpu", "cpu.cfs_period_us") == "100000"
        assert int(_read(group.dirs, "memory", "memory.limit_in_bytes")) // 4096 == \
            256 * MiB // 4096


def test_membership_kill_all_and_cleanup(manager: CgroupManager) -> None:
    group = manager.create("web-2")
    child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        group.add(child.pid)
        assert child.pid in group.pids()
        assert group.kill_all(signal.SIGKILL) == 1
        assert child.wait(30) == -signal.SIGKILL
        until_sync(lambda: group.pids() == [], what="cgroup empty")
        assert group.remove()
        assert all(not d.exists() for d in group.dirs.values())
    finally:
        child.kill()
        child.wait()


def test_cleanup_removes_whole_root(manager: CgroupManager) -> None:
    group = manager.create("a")
    child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    group.add(child.pid)
    manager.cleanup()
    assert child.wait(30) == -signal.SIGKILL
    assert manager.existing() == []
    assert all(not d.exists() for d in group.dirs.values())


def test_unavailable_cgroups_degrade_to_noops(tmp_path: Path) -> None:
    mgr = CgroupManager("mso/x", fs=tmp_path / "nothing", proc_self_cgroup="")
    ok, reason = mgr.available()
    assert not ok and "no cgroup controllers" in reason
    group = mgr.create("web-1", cpu=1.0, memory=MiB)
    assert group.enforced == {"cpu": False, "memory": False, "pids_tracking": False}
    assert group.reason.startswith("no cgroup controllers")
    group.add(1)
    assert group.pids() == [] and group.kill_all() == 0 and group.remove()
    mgr.cleanup()


def test_v2_unified_tree_nests_under_own_cgroup(tmp_path: Path) -> None:
    fs = tmp_path / "cg"
    (fs / "system.slice" / "mso.service").mkdir(parents=True)
    (fs / "cgroup.controllers").write_text("cpu memory pids\n")
    mgr = CgroupManager("mso/i1", fs=fs, proc_self_cgroup="0::/system.slice/mso.service\n")
    group = mgr.create("web-1", cpu=2.0, memory=64 * MiB)
    base = fs / "system.slice" / "mso.service" / "mso" / "i1" / "web-1"
    assert group.dirs == {"unified": base}
    assert (base / "cpu.max").read_text() == "200000 100000"
    assert (base / "memory.max").read_text() == str(64 * MiB)
    assert group.enforced["cpu"] and group.enforced["memory"]


def test_v1_missing_memory_controller_reported_not_enforced(tmp_path: Path) -> None:
    fs = tmp_path / "cg"
    for ctrl in ("pids", "cpu"):
        (fs / ctrl).mkdir(parents=True)
        (fs / ctrl / "cgroup.procs").write_text("")
    mgr = CgroupManager("mso/i1", fs=fs, proc_self_cgroup="")
    group = mgr.create("db-1", cpu=1.0, memory=MiB)
    assert group.enforced == {"cpu": True, "memory": False, "pids_tracking": True}
    assert group.reason == "not enforced: memory"
