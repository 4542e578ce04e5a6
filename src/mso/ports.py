"""Choosing ports that a replica or listener will bind later.

Binding to port 0 and closing is racy: between our close and the replica's bind, the kernel
may hand the same port to any process's outgoing connection. Ports below the ephemeral
range (`ip_local_port_range`) are never given out implicitly, so we pick from there and
skip the ones already bound.
"""

from __future__ import annotations

import os
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


_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_LISTEN = "0A"


def _listening_inodes(port: int, tables: tuple[Path, ...] = _TCP_TABLES) -> set[str]:
    """Inodes of the TCP sockets listening on `port` (any address, IPv4 or IPv6)."""
    inodes: set[str] = set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
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
            if local_port == port and fields[9] != "0":
                inodes.add(fields[9])
    return inodes


def _command_line(pid: str, proc: Path) -> str:
    try:
        raw = (proc / pid / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = " ".join(" ".join(part.decode(errors="replace").split())
                    for part in raw.split(b"\0") if part)
    if not text:  # a kernel thread or a zombie: its name at least
        try:
            text = f"[{(proc / pid / 'comm').read_text().strip()}]"
        except OSError:
            text = "?"
    return text if len(text) <= 160 else text[:157] + "..."


def port_holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """Who listens on TCP `port` on this machine, for an error message:
    `pid 4242 (python3 -m http.server 8080)`; None when nothing listens. Read from
    /proc/net/tcp{,6} (the socket's inode) and /proc/*/fd (who holds that inode); a
    listener whose process this user cannot see is reported as such."""
    pids = _holder_pids(port, proc)
    if pids is None:
        return None
    holders = [f"pid {pid} ({_command_line(pid, proc)})" for pid in pids]
    if not holders:
        return "a process this user cannot see (not in /proc/*/fd)"
    return holders[0] if len(holders) == 1 else f"{holders[0]} and {len(holders) - 1} more"


def port_holder_pid(port: int, proc: Path = Path("/proc")) -> int | None:
    """The pid of a process listening on TCP `port` (the first one), or None."""
    pids = _holder_pids(port, proc)
    return int(pids[0]) if pids else None


def _holder_pids(port: int, proc: Path) -> list[str] | None:
    """Pids holding a socket that listens on `port`; None when nothing listens."""
    inodes = _listening_inodes(port, (proc / "net" / "tcp", proc / "net" / "tcp6"))
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    holders: list[str] = []
    try:
        pids = sorted((p.name for p in proc.iterdir() if p.name.isdigit()), key=int)
    except OSError:
        pids = []
    for pid in pids:
        try:
            fds = list((proc / pid / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link in targets:
                holders.append(pid)
                break
    return holders


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
