"""Replica output on a real full tmpfs: the replica keeps printing and running, the lost
lines are counted and said once, and collection resumes by itself when space returns."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mso.engines.local import process as proc
from mso.engines.local.logs import LogCollector, LogStore
from tests.tinyfs import fill, require_mount, tmpfs

# Prints a numbered line every 2 ms; exits 3 if a print ever fails (ENOSPC).
CHATTY = """
import sys, time
i = 0
while True:
    try:
        print(f"line {i} " + "x" * 60, flush=True)
    except OSError as exc:
        sys.exit(3)
    i += 1
    time.sleep(0.002)
"""


def until(condition: Callable[[], Any], step: Callable[[], Any], timeout: float = 20.0,
          what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step()
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    require_mount()
    with tmpfs(tmp_path / "fs", "2m") as folder:
        yield folder


@pytest.mark.parametrize("reserve", [256 * 1024, 0], ids=["reserve", "no-reserve"])
def test_replica_survives_a_full_disk_and_collection_recovers(
        small: Path, reserve: int, caplog: pytest.LogCaptureFixture) -> None:
    store = LogStore(small / "logs", max_bytes_per_service=256 * 1024, segments=2)
    col = LogCollector(store, truncate_after=64 * 1024, reserve=reserve)
    out, err = small / "r.out", small / "r.err"
    col.attach("api-0", "api", 1, out, err)
    ref = proc.spawn([sys.executable, "-u", "-c", CHATTY], env=dict(os.environ), cwd="/",
                     stdout_path=out, stderr_path=err)
    try:
        until(lambda: len(store.read("api")) > 200, col.poll_once, what="lines collected")
        filler = fill(small)
        caplog.set_level(logging.INFO, logger="mso.engines.local.logs")
        if reserve == 0:
            # Without the preallocated reserve a print on the full disk fails: this is
            # what the reserve is for (and what makes this test able to fail).
            until(lambda: not proc.is_alive(ref), col.poll_once, what="replica death")
            return
        until(lambda: sum(col.dropped.values()) > 500, col.poll_once, timeout=30,
              what="lines dropped while full")
        assert proc.is_alive(ref), "the replica died while the disk was full"
        assert os.stat(out).st_size <= 64 * 1024 + 256 * 1024
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        dropped = sum(col.dropped.values())

        filler.unlink()
        until(lambda: not col.dropped, col.poll_once, what="collection resumed")
        records = store.read("api")
        notes = [r["line"] for r in records if r["replica"] == "mso"]
        assert len(notes) == 1 and "line(s) of output lost" in notes[0], notes
        assert int(notes[0].split()[1]) >= dropped
        seen = len(records)
        until(lambda: len(store.read("api")) > seen + 50 or
              store.read("api")[-1]["line"] != records[-1]["line"], col.poll_once,
              what="new lines after recovery")
        assert proc.is_alive(ref)
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
        # Every stored line is whole JSON (no torn record from a refused write).
        for path in (small / "logs" / "api").glob("*.jsonl"):
            for line in path.read_text().splitlines():
                assert line.startswith("{") and line.endswith("}"), line[:80]
    finally:
        proc.signal_group(ref, 9)
