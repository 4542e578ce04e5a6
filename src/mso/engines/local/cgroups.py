"""Resource limits and process tracking for replicas through Linux cgroups (v1 or v2).

Each replica gets a cgroup ``<parent>/<root>/<name>`` where ``parent`` is the cgroup the
daemon itself runs in (so limits nest inside whatever confines the daemon) and ``root`` is
e.g. ``mso/<instance id>``. Membership is what lets us kill grandchildren that left the
replica's process group. When cgroups are unavailable (not root, read-only, not mounted)
everything degrades to no-ops and :attr:`Cgroup.enforced` says so; callers report
"not enforced: <reason>" instead of failing.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
#: cpuacct: where cgroup v1 counts CPU time (the autoscaler's CPU figure).
V1_CONTROLLERS = ("pids", "cpu", "cpuacct", "memory")
CFS_PERIOD_US = 100_000


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """Map controller name ("" for the v2 unified hierarchy) to our own cgroup path."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctrl in parts[1].split(",") if parts[1] else [""]:
                paths[ctrl] = parts[2]
    return paths


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


@dataclass
class Cgroup:
    """One replica's cgroup: a directory per v1 controller, or one v2 directory."""

    name: str
    dirs: dict[str, Path]  # controller ("pids"/"cpu"/"memory" or "unified") -> directory
    enforced: dict[str, bool] = field(default_factory=dict)
    reason: str = ""

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a new process must be written into."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def add(self, pid: int) -> None:
        """Move ``pid`` into this cgroup (best effort)."""
        for path in self.procs_files():
            _write(Path(path), str(pid))

    def pids(self) -> list[int]:
        """Every process in the cgroup (including descendants that changed session)."""
        found: set[int] = set()
        for d in self.dirs.values():
            try:
                text = (d / "cgroup.procs").read_text()
            except OSError:
                continue
            found.update(int(x) for x in text.split())
        return sorted(found)

    def kill_all(self, sig: int = signal.SIGKILL) -> int:
        """Signal every member; return how many were signalled."""
        count = 0
        for pid in self.pids():
            if pid in (0, 1, os.getpid()):
                continue
            try:
                os.kill(pid, sig)
                count += 1
            except (ProcessLookupError, PermissionError):
                pass
        return count

    def cpu_seconds(self) -> float | None:
        """CPU time used by the cgroup's processes so far (cumulative seconds), or None
        when the cgroup has no CPU accounting (v2 `cpu.stat`, v1 `cpuacct.usage`)."""
        unified = self.dirs.get("unified")
        if unified is not None:
            try:
                for line in (unified / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1e6
            except (OSError, ValueError):
                return None
            return None
        for ctrl in ("cpuacct", "cpu"):  # v1: cpuacct on its own, or mounted as cpu,cpuacct
            d = self.dirs.get(ctrl)
            if d is None:
                continue
            try:
                return int((d / "cpuacct.usage").read_text()) / 1e9
            except (OSError, ValueError):
                continue
        return None

    def remove(self) -> bool:
        """Remove the directories (only possible once the cgroup is empty)."""
        ok = True
        for d in self.dirs.values():
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok


class CgroupManager:
    """Creates per-replica cgroups under ``root`` (e.g. ``mso/<instance id>``)."""

    def __init__(self, root: str, fs: Path = CGROUP_FS, proc_self_cgroup: str | None = None):
        self.root = root.strip("/")
        self.fs = fs
        if proc_self_cgroup is None:
            try:
                proc_self_cgroup = Path("/proc/self/cgroup").read_text()
            except OSError:
                proc_self_cgroup = ""
        self._own = _own_paths(proc_self_cgroup)
        self._bases, self._reason = self._discover()

    def _discover(self) -> tuple[dict[str, Path], str]:
        if (self.fs / "cgroup.controllers").exists():  # pure v2 (unified) mount
            own = self._own.get("", "/").lstrip("/")
            return {"unified": self.fs / own / self.root}, ""
        bases: dict[str, Path] = {}
        for ctrl in V1_CONTROLLERS:
            mount = self.fs / ctrl
            if (mount / "cgroup.procs").exists():
                own = self._own.get(ctrl, "/").lstrip("/")
                bases[ctrl] = mount / own / self.root
        if not bases:
            return {}, f"no cgroup controllers mounted under {self.fs}"
        return bases, ""

    def available(self) -> tuple[bool, str]:
        """Whether cgroups can be created, and the reason when they cannot."""
        if self._reason:
            return False, self._reason
        for ctrl, base in self._bases.items():
            try:
                base.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return False, f"cannot create {base} ({ctrl}): {exc.strerror or exc}"
            if not os.access(base, os.W_OK):
                return False, f"{base} is not writable"
        return True, ""

    def create(self, name: str, cpu: float | None = None, memory: int | None = None) -> Cgroup:
        """Create (or reuse) the cgroup ``name`` and apply the limits that are supported."""
        ok, reason = self.available()
        if not ok:
            return Cgroup(name, {}, {"cpu": False, "memory": False, "pids_tracking": False}, reason)
        dirs: dict[str, Path] = {}
        for ctrl, base in self._bases.items():
            try:
                (base / name).mkdir(exist_ok=True)
                dirs[ctrl] = base / name
            except OSError:
                pass
        group = Cgroup(name, dirs)
        group.enforced = {
            "cpu": cpu is not None and self._set_cpu(dirs, cpu),
            "memory": memory is not None and self._set_memory(dirs, memory),
            "pids_tracking": bool(dirs),
        }
        missing = [k for k, want in (("cpu", cpu), ("memory", memory)) if want is not None
                   and not group.enforced[k]]
        group.reason = f"not enforced: {', '.join(missing)}" if missing else ""
        return group

    @staticmethod
    def _set_cpu(dirs: dict[str, Path], cpu: float) -> bool:
        quota = max(1000, int(cpu * CFS_PERIOD_US))
        if "unified" in dirs:
            return _write(dirs["unified"] / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        d = dirs.get("cpu")
        return d is not None and _write(d / "cpu.cfs_period_us", str(CFS_PERIOD_US)) and _write(
            d / "cpu.cfs_quota_us", str(quota))

    @staticmethod
    def _set_memory(dirs: dict[str, Path], memory: int) -> bool:
        if "unified" in dirs:
            return _write(dirs["unified"] / "memory.max", str(memory))
        d = dirs.get("memory")
        return d is not None and _write(d / "memory.limit_in_bytes", str(memory))

    def existing(self) -> list[Cgroup]:
        """Cgroups left under the root (e.g. by a previous daemon)."""
        names: set[str] = set()
        for base in self._bases.values():
            if base.is_dir():
                names.update(p.name for p in base.iterdir() if p.is_dir())
        return [Cgroup(n, {c: b / n for c, b in self._bases.items() if (b / n).is_dir()})
                for n in sorted(names)]

    def get(self, name: str) -> Cgroup:
        """Handle on an existing cgroup (for re-adoption), without changing limits."""
        return Cgroup(name, {c: b / name for c, b in self._bases.items() if (b / name).is_dir()})

    def cleanup(self, sig: int = signal.SIGKILL) -> None:
        """Kill every process under the root and remove all its cgroups."""
        for group in self.existing():
            group.kill_all(sig)
        for group in self.existing():
            _remove_when_empty(group)
        depth = len(self.root.split("/"))
        for base in self._bases.values():
            # Remove ``mso/<instance>`` and then ``mso`` if no other instance uses it.
            for d in [base, *base.parents][:depth]:
                try:
                    d.rmdir()
                except OSError:
                    break


def _remove_when_empty(group: Cgroup, attempts: int = 200) -> None:
    for _ in range(attempts):
        if group.remove():
            return
        group.kill_all(signal.SIGKILL)
        time.sleep(0.01)  # killed processes leave the cgroup asynchronously
