"""Bounded on-disk store of structured log records, with secret redaction.

Records are JSON lines ``{"ts", "service", "replica", "release", "stream", "line"}`` in
size-rotated segment files per service: ``<dir>/<service>/<n>.jsonl``. A service keeps at
most ``segments`` files of ``max_bytes_per_service / segments`` bytes each, so its history
is bounded. Every line passes :meth:`LogStore.redact_text` before it reaches the disk or a
follower: registered secret values become ``***``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

REDACTED = "***"
Record = dict[str, Any]
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _service_dir_name(service: str) -> str:
    name = _SAFE.sub("_", service) or "_"
    return "_" + name if name.startswith(".") else name


class LogStore:
    """Per-service rotated JSON-lines files plus live followers."""

    def __init__(self, dir: Path, max_bytes_per_service: int = 64 * 1024 * 1024,
                 segments: int = 4, clock: Callable[[], float] = time.time) -> None:
        if segments < 2:
            raise ValueError("segments must be >= 2 (one is written while older ones are kept)")
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = max(1024, max_bytes_per_service // segments)
        self.segments = segments
        self.clock = clock
        self._secrets: list[str] = []
        self._followers: list[tuple[str | None, asyncio.Queue[Record]]] = []

    # -- redaction ----------------------------------------------------------------------

    def redact(self, values: Iterable[bytes | str]) -> None:
        """Register secret values; they are replaced by ``***`` in every later record."""
        for value in values:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            if text and text not in self._secrets:
                self._secrets.append(text)
        self._secrets.sort(key=len, reverse=True)  # longest first: overlapping secrets

    @property
    def max_secret_len(self) -> int:
        """Length in bytes of the longest secret (0 without secrets)."""
        return max((len(s.encode()) for s in self._secrets), default=0)

    def redact_text(self, text: str) -> str:
        """``text`` with every registered secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        """Byte-level redaction, for raw chunks that must be split before decoding."""
        for secret in self._secrets:
            raw = secret.encode()
            if raw in data:
                data = data.replace(raw, REDACTED.encode())
        return data

    # -- writing ------------------------------------------------------------------------

    def append(self, service: str, replica: str, release: int, stream: str, line: str,
               ts: float | None = None) -> Record:
        """Redact, persist and publish one record; returns it."""
        record: Record = {"ts": self.clock() if ts is None else ts, "service": service,
                          "replica": replica, "release": release, "stream": stream,
                          "line": self.redact_text(line)}
        self.append_many([record])
        return record

    def append_many(self, records: list[Record]) -> None:
        """Persist already built records (lines are redacted here as well)."""
        by_service: dict[str, list[str]] = {}
        for record in records:
            record["line"] = self.redact_text(str(record["line"]))
            by_service.setdefault(str(record["service"]), []).append(
                json.dumps(record, ensure_ascii=False) + "\n")
        for service, lines in by_service.items():
            self._write(service, "".join(lines).encode())
        for record in records:
            self._publish(record)

    def _write(self, service: str, data: bytes) -> None:
        sdir = self.dir / _service_dir_name(service)
        sdir.mkdir(exist_ok=True)
        files = self._segment_files(sdir)
        current = files[-1] if files else sdir / "000001.jsonl"
        if current.exists() and current.stat().st_size + len(data) > self.segment_bytes \
                and current.stat().st_size > 0:
            current = sdir / f"{int(current.stem) + 1:06d}.jsonl"
            files.append(current)
        fd = os.open(current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            before = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                # A full or read-only disk: no torn line may stay to swallow the next
                # record; the caller counts what was lost.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
                raise
        finally:
            os.close(fd)
        for old in files[: max(0, len(files) - self.segments)]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()

    @staticmethod
    def _segment_files(sdir: Path) -> list[Path]:
        return sorted((p for p in sdir.glob("*.jsonl") if p.stem.isdigit()),
                      key=lambda p: int(p.stem))

    # -- reading ------------------------------------------------------------------------

    def services(self) -> list[str]:
        """Services that have records (directory names)."""
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir())

    def read(self, service: str | None = None, since: float | None = None,
             tail: int | None = None, replica: str | None = None) -> list[Record]:
        """Records of one service (or all, merged by time), oldest first; `replica`
        keeps only that replica's (or job run's) lines."""
        names = [_service_dir_name(service)] if service is not None else self.services()
        records: list[Record] = []
        for name in names:
            for path in self._segment_files(self.dir / name):
                records.extend(self._parse(path, since))
        if replica is not None:
            records = [r for r in records if r.get("replica") == replica]
        if service is None:
            records.sort(key=lambda r: float(r["ts"]))  # stable: keeps per-file order
        if tail is not None:
            records = records[-tail:] if tail > 0 else []
        return records

    @staticmethod
    def _parse(path: Path, since: float | None) -> list[Record]:
        out: list[Record] = []
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:  # rotated away while reading
            return out
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line after a crash
            if isinstance(record, dict) and (since is None or record.get("ts", 0) >= since):
                out.append(record)
        return out

    async def follow(self, service: str | None = None, since: float | None = None,
                     tail: int | None = None, queue_size: int = 10_000) -> AsyncIterator[Record]:
        """Existing matching records, then new ones as they are appended (until cancelled).

        A follower that falls ``queue_size`` records behind loses the overflow.
        """
        queue: asyncio.Queue[Record] = asyncio.Queue(queue_size)
        entry = (service, queue)
        self._followers.append(entry)  # subscribe first: nothing falls between the two
        try:
            backlog = self.read(service, since, tail)
            for record in backlog:
                yield record
            last = backlog[-1]["ts"] if backlog else None
            while True:
                record = await queue.get()
                if last is not None and record["ts"] <= last and record in backlog:
                    continue
                yield record
        finally:
            self._followers.remove(entry)

    def _publish(self, record: Record) -> None:
        for service, queue in self._followers:
            if service is None or service == record["service"]:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(record)
