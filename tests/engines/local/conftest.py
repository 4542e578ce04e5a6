"""Shared helpers for local-engine tests: polling instead of fixed sleeps."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from pathlib import Path
from typing import Awaitable, Callable

import pytest


async def until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``cond`` until true (async), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def until_sync(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``cond`` until true (blocking)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def until_async(cond: Callable[[], Awaitable[bool]], timeout: float = 30.0,
                      what: str = "condition") -> None:
    """Poll an async ``cond`` until true."""
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on plain asyncio (the daemon's loop)."""
    return "asyncio"


def free_port() -> int:
    """A free port *outside* the ephemeral range.

    The replica binds the port later; a port picked by binding to 0 could meanwhile be
    handed to another test's ephemeral bind (seen in practice: probes then hit a foreign
    server). Ports below the ephemeral range are never given out by the kernel for port 0.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(1000):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
