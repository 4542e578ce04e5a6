"""Choosing ports that a replica or listener will bind later.

Binding to port 0 and closing is racy: between our close and the replica's bind, the kernel
may hand the same port to any process's outgoing connection. Ports below the ephemeral
range (`ip_local_port_range`) are never given out implicitly, so we pick from there and
skip the ones already bound.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_WINDOW = 12000


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    """A port that is free now and that the kernel will not hand out for port 0."""
    low = _ephemeral_low()
    start = max(1024, low - _WINDOW)
    taken = avoid or set()
    for _ in range(2000):
        port = random.randrange(start, low)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded machine
        s.bind((host, 0))
        return int(s.getsockname()[1])


_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            try:
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if local_port == port:
                inodes.add(fields[9])
    return inodes


def port_holder_pid(port: int) -> int | None:
    """The pid of a process listening on TCP `port`, or None when nobody does or the
    holder cannot be seen (another user's process without root)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target in wanted:
                return int(proc.name)
    return None


def port_holder(port: int) -> str | None:
    """Who listens on TCP `port`: "pid 123 (python3 -m http.server 8080)", or None."""
    pid = port_holder_pid(port)
    return None if pid is None else f"pid {pid} ({_cmdline(Path('/proc') / str(pid))})"


def _cmdline(proc: Path) -> str:
    try:
        raw = (proc / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = " ".join(" ".join(part.decode(errors="replace").split())
                    for part in raw.split(b"\0") if part)
    return text[:120] + ("..." if len(text) > 120 else "") if text else "?"


def bind_error(host: str, port: int) -> OSError | None:
    """Why a listener could not bind `host:port` now (None: it could). Like the proxy,
    with SO_REUSEADDR, so a port in TIME_WAIT is not reported as taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc
    return None
