"""Shared helpers for local-engine tests: polling instead of fixed sleeps."""

from __future__ import annotations

import asyncio
import time
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
