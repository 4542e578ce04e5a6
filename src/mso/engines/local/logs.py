"""Log capture: tail the replicas' raw stdout/stderr files into the structured LogStore.

Replicas write to O_APPEND files (never pipes into the daemon, so a daemon crash cannot
break them). :class:`LogCollector` polls those files (every ~100 ms while a replica writes;
a quiet replica's files are looked at less and less often, down to once a second, so
1,000 idle replicas cost 2,000 ``stat`` calls a second rather than 20,000 opens, reads and
closes; a file whose size and inode did not change is not opened at all), splits complete lines
(lines over 16 KiB are cut into pieces), keeps a partial last line until its newline
arrives or the process exits, and appends records to :class:`LogStore`.

**Bounded by size, copytruncate-style.** Raw files are truncated once consumed past
``truncate_after`` bytes (1 MiB by default). Because the writers use O_APPEND, their next
write lands at the new end of file; what can be lost is only data written between our
last read reaching EOF and the ``ftruncate`` (a few microseconds). The history people read
with ``mso logs`` is the LogStore's, which rotates its own segment files by size (so it
works across rotation: a reader sees every segment still kept). This was chosen over
piping output through a log-writer process: a replica's stdout never depends on another
process staying alive (a pipe whose reader was killed kills or fails the writer), the
daemon can exit and re-adopt replicas without handing pipes over, and it costs no process
(nor ~9 MB of memory) per replica. While the daemon is down raw files grow unbounded; the
next daemon catches up and truncates them.

**A full or read-only disk.** After every truncation each raw file gets a ``reserve``
(1 MiB) preallocated beyond its end (``fallocate`` with FALLOC_FL_KEEP_SIZE): appends into
it need no new block, so a replica's prints keep working while the disk is full instead
of failing with ENOSPC (and crashing programs that do not expect it). Records the
LogStore cannot write are dropped (replica output must not fill memory either), logged
once when it starts, and once the store takes writes again each affected service gets a
line saying how many were lost and why.

Read offsets are saved in ``<store dir>/offsets.json`` so a restarted daemon continues
where the previous one stopped (lines appended after the last save may appear twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mso.engines.local.logstore import LogStore, Record

__all__ = ["LogCollector", "LogStore", "MAX_LINE"]

MAX_LINE = 16 * 1024
READ_CHUNK = 256 * 1024
#: Raw files are truncated once this much of them was consumed (MSO_RAW_LOG_BYTES).
TRUNCATE_AFTER = 1024 * 1024
#: Space preallocated beyond the end of every raw file (see the module docstring).
RESERVE = 1024 * 1024
#: The longest pause between two looks at a quiet replica's files (seconds).
MAX_IDLE_INTERVAL = 1.0
FALLOC_FL_KEEP_SIZE = 1
log = logging.getLogger(__name__)


def _fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _fallocate()


def reserve_space(fd: int, size: int) -> bool:
    """Preallocate `size` bytes from offset 0 without changing the file's size."""
    if _FALLOCATE is None or size <= 0:
        return False
    return _FALLOCATE(fd, FALLOC_FL_KEEP_SIZE, 0, size) == 0


@dataclass
class _Tail:
    path: Path
    stream: str
    offset: int = 0
    inode: int | None = None
    buffer: bytes = b""


@dataclass
class _Source:
    service: str
    release: int
    tails: list[_Tail] = field(default_factory=list)
    #: Polls in a row that found nothing new, and when the next poll is due (monotonic).
    quiet_polls: int = 0
    next_poll: float = 0.0


class LogCollector:
    """Tails raw replica output into a :class:`LogStore` (implements ``LogSink``)."""

    def __init__(self, store: LogStore, poll_interval: float = 0.1,
                 truncate_after: int = TRUNCATE_AFTER, max_line: int = MAX_LINE,
                 clock: Callable[[], float] = time.time, reserve: int = RESERVE,
                 max_idle_interval: float = MAX_IDLE_INTERVAL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.max_idle_interval = max(poll_interval, max_idle_interval)
        self._monotonic = monotonic
        self.truncate_after = truncate_after
        self.reserve = reserve
        self.max_line = max_line
        self.clock = clock
        self._sources: dict[str, _Source] = {}
        #: Records dropped per service since the LogStore stopped taking writes.
        self.dropped: dict[str, int] = {}
        self.store_error: str | None = None
        self._store_error_since = 0.0
        self._last_failure = ""
        self._offsets_path = store.dir / "offsets.json"
        self._saved: dict[str, int] = self._load_offsets()
        self._offsets_dirty = False

    # -- LogSink ------------------------------------------------------------------------

    def attach(self, replica_id: str, service: str, release: int,
               stdout_path: Path, stderr_path: Path) -> None:
        """Start (or keep) tailing a replica's files; a new release relabels records."""
        source = self._sources.get(replica_id)
        if source is not None:
            source.service, source.release = service, release
            return
        tails = [_Tail(Path(stdout_path), "stdout"), _Tail(Path(stderr_path), "stderr")]
        for tail in tails:
            tail.offset = self._saved.get(str(tail.path), 0)
        self._sources[replica_id] = _Source(service, release, tails)

    def process_exited(self, replica_id: str) -> None:
        """Collect what is left and flush partial last lines (no newline will come)."""
        self._collect(replica_id, final=True)

    def detach(self, replica_id: str) -> None:
        """The replica is gone for good: collect what is left, stop tailing it and remove
        its raw files (everything in them is in the log store now).

        Without this every replica that ever ran stayed polled until the daemon restarted:
        scaling 100 replicas down to 10 kept the stat calls of 100, and each rollout (new
        replica names) added more. A later replica of the same name starts new files at
        offset 0.
        """
        source = self._sources.get(replica_id)
        if source is None:
            return
        try:
            self._collect(replica_id, final=True)
        finally:
            del self._sources[replica_id]
            for tail in source.tails:
                self._saved.pop(str(tail.path), None)
                with contextlib.suppress(OSError):
                    tail.path.unlink()
            self._offsets_dirty = True

    # -- polling ------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Collect new output of every replica; returns the number of records appended."""
        count = sum(self._collect(rid, final=False) for rid in list(self._sources))
        if count or self._offsets_dirty:
            self._save_offsets()
        return count

    def poll_due(self) -> int:
        """Collect new output of the replicas whose next poll is due: every
        ``poll_interval`` while they write, backing off (doubling) to
        ``max_idle_interval`` while they are quiet. Returns the records appended."""
        now = self._monotonic()
        count = 0
        for rid, source in list(self._sources.items()):
            if source.next_poll > now:
                continue
            found = self._collect(rid, final=False)
            count += found
            source.quiet_polls = 0 if found else min(source.quiet_polls + 1, 30)
            source.next_poll = now + min(self.max_idle_interval,
                                         self.poll_interval * (2 ** source.quiet_polls)) \
                - self.poll_interval / 2  # due at the tick nearest the interval
        if count or self._offsets_dirty:
            self._save_offsets()
        return count

    async def run(self) -> None:
        """Poll forever (cancel to stop)."""
        while True:
            try:
                self.poll_due()
                self._last_failure = ""
            except Exception as exc:  # nothing may kill log collection for good
                if repr(exc) != self._last_failure:  # once, not ten times a second
                    self._last_failure = repr(exc)
                    log.exception("log collection failed (said once until it changes)")
            await asyncio.sleep(self.poll_interval)

    def _collect(self, replica_id: str, final: bool) -> int:
        source = self._sources.get(replica_id)
        if source is None:
            return 0
        records: list[Record] = []
        for tail in source.tails:
            for line in self._read_lines(tail, final):
                records.append({"ts": self.clock(), "service": source.service,
                                "replica": replica_id, "release": source.release,
                                "stream": tail.stream, "line": line})
        if records:
            self._append(records)
            if final:
                # Saved by the next poll (within poll_interval), not here: writing all
                # offsets once per exit made `mso down` of 1,000 replicas quadratic.
                self._offsets_dirty = True
        return len(records)

    def _append(self, records: list[Record]) -> None:
        try:
            self.store.append_many(records)
        except OSError as exc:
            self._dropping(records, exc)
            return
        if self.dropped:
            self._report_dropped()

    def _dropping(self, records: list[Record], exc: OSError) -> None:
        for record in records:
            service = str(record["service"])
            self.dropped[service] = self.dropped.get(service, 0) + 1
        if self.store_error is None:
            self.store_error = exc.strerror or str(exc)
            self._store_error_since = self.clock()
            log.error("log store %s not writable (%s): replica output is dropped (and "
                      "counted) until it is; replicas keep running", self.store.dir,
                      self.store_error)

    def _report_dropped(self) -> None:
        lasted = self.clock() - self._store_error_since
        notes: list[Record] = [
            {"ts": self.clock(), "service": service, "replica": "mso", "release": 0,
             "stream": "stderr",
             "line": f"mso: {count} line(s) of output lost: the log store could not be "
                     f"written for {lasted:.1f}s ({self.store_error})"}
            for service, count in sorted(self.dropped.items())]
        try:
            self.store.append_many(notes)
        except OSError:
            return  # still refused: said on a later success
        log.warning("log store writable again after %.1fs; %d line(s) were lost", lasted,
                    sum(self.dropped.values()))
        self.dropped.clear()
        self.store_error = None

    def _read_lines(self, tail: _Tail, final: bool) -> list[str]:
        if not final and tail.inode is not None:
            # The cheap look first: one stat, and no open/read/close when nothing changed.
            try:
                st = os.stat(tail.path)
            except FileNotFoundError:
                return []
            if st.st_ino == tail.inode and st.st_size == tail.offset:
                return []
        writable = True
        try:
            fd = os.open(tail.path, os.O_RDWR)
        except FileNotFoundError:
            return self._flush(tail) if final else []
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            # A read-only disk: read on, truncate once it is writable again.
            fd, writable = os.open(tail.path, os.O_RDONLY), False
        try:
            st = os.fstat(fd)
            if tail.inode != st.st_ino or st.st_size < tail.offset:
                if tail.inode is not None or st.st_size < tail.offset:
                    tail.offset = 0  # replaced or truncated behind our back
                tail.inode = st.st_ino
                reserve_space(fd, self.reserve)
            data = bytearray()
            while True:
                chunk = os.pread(fd, READ_CHUNK, tail.offset)
                if not chunk:
                    break
                tail.offset += len(chunk)
                data += chunk
            if tail.offset >= self.truncate_after and writable:
                # EOF was just reached; only writes in this instant can be lost.
                os.ftruncate(fd, 0)
                tail.offset = 0
                reserve_space(fd, self.reserve)  # truncation freed the reserve too
        finally:
            os.close(fd)
        lines = self._split(tail, bytes(data))
        return lines + (self._flush(tail) if final else [])

    def _split(self, tail: _Tail, data: bytes) -> list[str]:
        buf = tail.buffer + data
        lines: list[str] = []
        secret_len = self.store.max_secret_len
        redacted = False
        while True:
            nl = buf.find(b"\n", 0, self.max_line + 1)
            if nl != -1:
                lines.append(_decode(buf[:nl]))
                buf = buf[nl + 1:]
                continue
            if len(buf) <= self.max_line:
                break  # a partial line: wait for its newline
            # Too long: cut at max_line, but only once every secret that could straddle
            # the cut is entirely in the buffer, so that redaction sees all of it.
            if b"\n" not in buf and len(buf) < self.max_line + secret_len:
                break
            if secret_len and not redacted:
                buf, redacted = self.store.redact_bytes(buf), True
                continue
            lines.append(_decode(buf[:self.max_line]))
            buf = buf[self.max_line:]
        tail.buffer = buf
        return lines

    @staticmethod
    def _flush(tail: _Tail) -> list[str]:
        rest, tail.buffer = tail.buffer, b""
        return [_decode(rest)] if rest else []

    # -- offsets ------------------------------------------------------------------------

    def _load_offsets(self) -> dict[str, int]:
        try:
            data = json.loads(self._offsets_path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save_offsets(self) -> None:
        offsets = {str(t.path): max(0, t.offset - len(t.buffer))
                   for s in self._sources.values() for t in s.tails}
        self._offsets_dirty = False
        tmp = self._offsets_path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(offsets))
            os.replace(tmp, self._offsets_path)
        self._saved.update(offsets)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r")
