"""Whether the state store can be written, and what waits in memory until it can.

A full or read-only disk makes SQLite refuse writes (SQLITE_FULL, SQLITE_READONLY,
SQLITE_IOERR, SQLITE_CANTOPEN). SQLite rolls the failed transaction back, so the file
stays consistent; what mso must add is behaviour around it:

- **Keep serving.** Writes that only record what happened (events, observed replica
  state) are held in memory (`Pending`) and written, in order, once the disk accepts
  them again: the store catches up. Writes that change what should run (desired state,
  releases, rollouts, jobs) raise `StoreUnavailable` (HTTP 503, "retry later") so that a
  command never half-happens.
- **Say it once.** `StoreHealth` logs one line when writes start failing and one when
  they work again, whatever the number of attempts in between; its `as_json()` is shown
  by `mso ps` and `/v1/status` while it lasts. The event that says so cannot be written
  into a full store: it is recorded, with the time the failure began, when space returns.
- **Recover by itself.** `Store.recover()` (called by the daemon's reconcile loop) tries
  again at most once a second, and only once `statvfs` shows the filesystem writable with
  `RECOVER_FREE_BYTES` free, so a disk at the edge does not flap between the two states.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mso.errors import Unavailable
from mso.store.records import ReplicaRecord

log = logging.getLogger("mso.store")

#: SQLite primary result codes that mean "the disk will not take this write".
SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN = 8, 10, 13, 14
DISK_CODES = frozenset({SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN})
#: How much free space a full filesystem needs before writes are tried again.
RECOVER_FREE_BYTES = 1024 * 1024
#: How often (seconds) writes are tried again while they fail.
RETRY_PERIOD = 1.0
#: Events held in memory at most while the store cannot be written (the oldest are
#: kept: they say how the trouble began; the number dropped is reported).
MAX_HELD_EVENTS = 5_000


class StoreUnavailable(Unavailable):
    """The state store cannot be written (disk full or read-only); retry later."""


def is_disk_error(exc: BaseException) -> bool:
    """Whether an SQLite error means the disk refused the write (not a bug or a lock)."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in DISK_CODES
    text = str(exc).lower()
    return any(s in text for s in ("disk is full", "readonly database", "disk i/o error",
                                   "unable to open database"))


def filesystem_ready(folder: Path, min_free: int = RECOVER_FREE_BYTES) -> tuple[bool, str]:
    """Whether `folder`'s filesystem takes writes again, with `min_free` bytes free (or a
    twentieth of a smaller filesystem), and if not, why (in words). A small file is
    written and removed to be sure: ext4 turned read-only after an error (emergency_ro)
    does not say so in statvfs."""
    try:
        st = os.statvfs(folder)
    except OSError as exc:
        return False, f"cannot stat {folder}: {exc.strerror or exc}"
    if st.f_flag & os.ST_RDONLY:
        return False, "the filesystem is read-only"
    free = st.f_bavail * st.f_frsize
    wanted = min(min_free, st.f_blocks * st.f_frsize // 20)
    if free < wanted:
        return False, f"{free} bytes free (waiting for {wanted})"
    probe = folder / ".mso-write-check"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return False, f"a test write failed: {exc.strerror or exc}"
    return True, ""


@dataclass
class HeldEvent:
    ts: float
    type: str
    message: str
    service: str | None
    replica: str | None
    data: dict[str, Any]


@dataclass
class Pending:
    """Writes waiting for the disk: the latest record of each replica (None: deleted)
    and the events, oldest first."""

    replicas: dict[str, ReplicaRecord | None] = field(default_factory=dict)
    events: list[HeldEvent] = field(default_factory=list)
    dropped_events: int = 0

    def __bool__(self) -> bool:
        return bool(self.replicas or self.events or self.dropped_events)

    def hold_event(self, event: HeldEvent) -> None:
        if len(self.events) < MAX_HELD_EVENTS:
            self.events.append(event)
        else:
            self.dropped_events += 1


@dataclass
class StoreHealth:
    """The store's writability, as an operator should see it."""

    error: str | None = None
    since: float | None = None  # wall clock of the first failure
    failed_writes: int = 0
    last_attempt: float = 0.0  # monotonic
    waiting_for: str = ""
    recoveries: int = 0
    last_outage: float | None = None  # seconds the last outage lasted

    @property
    def writable(self) -> bool:
        return self.error is None

    def failed(self, what: str, exc: BaseException) -> None:
        self.failed_writes += 1
        self.last_attempt = time.monotonic()
        if self.error is None:
            self.error = f"{exc}"
            self.since = time.time()
            log.error("state store not writable (%s, while recording %s): serving goes on "
                      "with what runs; events and replica states are held in memory and "
                      "written when the disk accepts writes again", exc, what)

    def recovered(self, held: int) -> float:
        """Mark writable again; returns how long the outage lasted."""
        lasted = time.time() - (self.since or time.time())
        log.warning("state store writable again after %.1fs (%d failed writes); %d held "
                    "record(s) written", lasted, self.failed_writes, held)
        self.error, self.since, self.failed_writes, self.waiting_for = None, None, 0, ""
        self.recoveries += 1
        self.last_outage = lasted
        return lasted

    def as_json(self) -> dict[str, Any]:
        return {"writable": self.writable, "error": self.error, "since": self.since,
                "failed_writes": self.failed_writes, "waiting_for": self.waiting_for,
                "recoveries": self.recoveries, "last_outage": self.last_outage}
