"""Log capture: tail the replicas' raw stdout/stderr files into the structured LogStore.

Replicas write to O_APPEND files (never pipes into the daemon, so a daemon crash cannot
break them). :class:`LogCollector` polls those files (every ~100 ms), splits complete lines
(lines over 16 KiB are cut into pieces), keeps a partial last line until its newline
arrives or the process exits, and appends records to :class:`LogStore`.

Raw files are truncated once consumed past ``truncate_after`` bytes. Because the writers
use O_APPEND, their next write lands at the new end of file; what can be lost is only data
written between our last read reaching EOF and the ``ftruncate`` (a few microseconds).
Read offsets are saved in ``<store dir>/offsets.json`` so a restarted daemon continues
where the previous one stopped (lines appended after the last save may appear twice).
"""

from __future__ import annotations

import asyncio
import contextlib
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
log = logging.getLogger(__name__)


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


class LogCollector:
    """Tails raw replica output into a :class:`LogStore` (implements ``LogSink``)."""

    def __init__(self, store: LogStore, poll_interval: float = 0.1,
                 truncate_after: int = 8 * 1024 * 1024, max_line: int = MAX_LINE,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.truncate_after = truncate_after
        self.max_line = max_line
        self.clock = clock
        self._sources: dict[str, _Source] = {}
        self._offsets_path = store.dir / "offsets.json"
        self._saved: dict[str, int] = self._load_offsets()

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
        """Final collection, then stop tailing the replica."""
        if replica_id in self._sources:
            self._collect(replica_id, final=True)
            del self._sources[replica_id]

    # -- polling ------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Collect new output of every replica; returns the number of records appended."""
        count = sum(self._collect(rid, final=False) for rid in list(self._sources))
        if count:
            self._save_offsets()
        return count

    async def run(self) -> None:
        """Poll forever (cancel to stop)."""
        while True:
            try:
                self.poll_once()
            except Exception:  # a full disk must not kill log collection for good
                log.exception("log collection failed")
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
            self.store.append_many(records)
        if final:
            self._save_offsets()
        return len(records)

    def _read_lines(self, tail: _Tail, final: bool) -> list[str]:
        try:
            fd = os.open(tail.path, os.O_RDWR)
        except FileNotFoundError:
            return self._flush(tail) if final else []
        try:
            st = os.fstat(fd)
            if tail.inode != st.st_ino or st.st_size < tail.offset:
                if tail.inode is not None or st.st_size < tail.offset:
                    tail.offset = 0  # replaced or truncated behind our back
                tail.inode = st.st_ino
            data = bytearray()
            while True:
                chunk = os.pread(fd, READ_CHUNK, tail.offset)
                if not chunk:
                    break
                tail.offset += len(chunk)
                data += chunk
            if tail.offset >= self.truncate_after:
                # EOF was just reached; only writes in this instant can be lost.
                os.ftruncate(fd, 0)
                tail.offset = 0
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
        tmp = self._offsets_path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(offsets))
            os.replace(tmp, self._offsets_path)
        self._saved.update(offsets)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r")
