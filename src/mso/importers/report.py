"""What `mso import` did with each key of the source file: kept, translated or dropped.

Nothing is dropped silently: every key the importer reads, or refuses to carry over,
becomes one `Entry` naming the source file and line, what it became (`to`) and why.
The report goes to stderr as lines (`compose.yaml:12: services.web.ports.0: translated
-> services.web.ports.http: ...`) and, with `-o json`, out as data (`Entry.to_json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Entry", "Report", "Status"]

Status = Literal["kept", "translated", "dropped", "note", "guessed"]  # guessed: `mso init`


@dataclass(frozen=True)
class Entry:
    """One source key and its fate."""

    file: str
    line: int | None
    key: str
    status: Status
    to: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "key": self.key, "status": self.status,
                "to": self.to, "reason": self.reason}

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        text = f"{where}: {self.key}: {self.status}" if self.key else f"{where}: {self.status}"
        if self.to:
            text += f" -> {self.to}"
        if self.reason:
            text += f" ({self.reason})"
        return text


@dataclass
class Report:
    """Entries in the order the importer met them."""

    entries: list[Entry] = field(default_factory=list)

    def add(self, file: str, line: int | None, key: str, status: Status,
            to: str | None = None, reason: str | None = None) -> None:
        self.entries.append(Entry(file, line, key, status, to, reason))

    def counts(self) -> dict[str, int]:
        out = {"kept": 0, "translated": 0, "dropped": 0, "note": 0}
        for entry in self.entries:
            out[entry.status] = out.get(entry.status, 0) + 1
        return out

    def lines(self) -> list[str]:
        return [str(e) for e in self.entries]

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries]
