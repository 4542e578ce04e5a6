"""Durations and sizes as users write them, and the pydantic types that parse them.

* Durations: `250ms`, `2s`, `1m`, `1h`, compounds like `1h30m` or `1m30.5s`, or a plain
  number of seconds (`10`, `0.5`, `"10"`). Result: float seconds, never negative.
* Sizes (Kubernetes quantities): decimal `k M G T P E` (1000^n) and binary
  `Ki Mi Gi Ti Pi Ei` (1024^n), an optional trailing `B` (`256MiB`), or a plain integer
  number of bytes. Result: int bytes. Lower-case `m`/`g` are refused with a hint, because
  Docker reads `512m` as 512 MiB while Kubernetes reads it as 0.512 bytes.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["ByteSize", "Duration", "cpu_cores", "format_duration", "parse_duration", "parse_size"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|h|m|s)")
DURATION_PATTERN = r"^\s*((\d+(\.\d+)?|\.\d+)(ms|h|m|s))+\s*$|^\s*\d+(\.\d+)?\s*$"

_SIZE_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "E": 1000**6,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?B?\s*$")
SIZE_PATTERN = r"^\s*(\d+(\.\d+)?|\.\d+)\s*(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?B?\s*$"


def parse_duration(value: object) -> float:
    """Seconds from `250ms`, `1h30m`, `10`, 2.5 ...; raises ValueError with a hint."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 500ms, 10s, 1m or 1h30m, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            return _non_negative(float(value), value)
        except OverflowError:  # an int beyond float's range
            raise ValueError(f"duration {str(value)[:20]}... is too large") from None
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 500ms, 10s, 1m or 1h30m, got {type(value).__name__}")
    text = value.strip()
    try:
        return _non_negative(float(text) if _is_plain_number(text) else _parse_compound(text), value)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration; write e.g. 500ms, 10s, 1m or 1h30m") from None


def _is_plain_number(text: str) -> bool:
    return re.fullmatch(r"-?(\d+(\.\d+)?|\.\d+)", text) is not None


def _parse_compound(text: str) -> float:
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(text)
    return total


def _non_negative(seconds: float, raw: object) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a non-negative number of seconds, got {raw!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form (`1h30m`, `250ms`, `2.5s`) that `parse_duration` reads back."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if secs and ms:
        parts.append(f"{secs}.{ms:03d}".rstrip("0") + "s")
    elif secs:
        parts.append(f"{secs}s")
    elif ms:
        parts.append(f"{ms}ms")
    return "".join(parts)


def parse_size(value: object) -> int:
    """Bytes from `256Mi`, `1G`, `100k`, 1048576 ...; raises ValueError with a hint."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 256Mi or 1Gi, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if isinstance(value, float):
        if not value.is_integer() or value < 0:
            raise ValueError(f"a size without unit is a whole number of bytes, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 256Mi or 1Gi, got {type(value).__name__}")
    match = _SIZE.match(value)
    if match is None:
        hint = " (Kubernetes units: Mi/Gi are binary, M/G decimal)" if re.search(r"\d\s*[mg]b?$", value) else ""
        raise ValueError(f"{value!r} is not a size; write e.g. 256Mi, 1Gi, 512M or 100k{hint}")
    number, unit = match.group(1), match.group(2) or ""
    size = float(number) * _SIZE_UNITS[unit]
    if not math.isfinite(size):
        raise ValueError(f"size {value!r} is too large")
    return int(round(size))


def cpu_cores(value: Any) -> Any:
    """CPU in cores: `0.5`, or Kubernetes millicores (`500m`)."""
    if isinstance(value, str) and value.strip().endswith("m") and value.strip()[:-1].isdigit():
        try:
            return int(value.strip()[:-1]) / 1000
        except (OverflowError, ValueError):  # beyond float's range, or int's digit limit
            raise ValueError(f"CPU {value.strip()[:20]!r}... is too large") from None
    return value


def _duration_validator(value: Any) -> float:
    return parse_duration(value)


def _size_validator(value: Any) -> int:
    return parse_size(value)


Duration = Annotated[
    float,
    BeforeValidator(_duration_validator),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 250ms, 2s, 1m, 1h, 1h30m, or a number of seconds.",
        }
    ),
]
"""Float seconds; accepts duration strings or plain numbers of seconds."""

ByteSize = Annotated[
    int,
    BeforeValidator(_size_validator),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": SIZE_PATTERN},
                {"type": "integer", "minimum": 0},
            ],
            "description": "A size: 256Mi, 1Gi (binary), 512M, 1G, 100k (decimal), or a number of bytes.",
        }
    ),
]
"""Int bytes; accepts Kubernetes-style quantities or plain byte counts."""
