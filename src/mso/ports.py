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
