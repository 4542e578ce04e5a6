"""How much disk the embedded engine's logs may take: daemon settings, not manifest keys.

Swarm and Kubernetes have their own log drivers and rotation, so these are settings of
the local daemon, read from the environment `mso up` runs in (the daemon inherits it):

| variable              | default | what                                                   |
|-----------------------|---------|--------------------------------------------------------|
| `MSO_LOG_MAX_SIZE`    | `64Mi`  | `mso logs` history kept per service (all its files)    |
| `MSO_LOG_FILES`       | `4`     | files that history is rotated over (>= 2)              |
| `MSO_RAW_LOG_SIZE`    | `1Mi`   | a replica's raw stdout/stderr file is truncated once   |
|                       |         | read past this, and this much is preallocated for it   |
| `MSO_DAEMON_LOG_SIZE` | `10Mi`  | `.mso/daemon.log` is rotated to `daemon.log.1` past it |

A value that does not parse is reported once in the daemon's log and the default used.
So a replica's output costs at most MSO_RAW_LOG_SIZE x 2 streams on disk, plus its
service's MSO_LOG_MAX_SIZE, and the daemon's own log 2 x MSO_DAEMON_LOG_SIZE.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from mso.spec.units import parse_size

log = logging.getLogger("mso.daemon")


@dataclass(frozen=True)
class LogSettings:
    max_bytes_per_service: int = 64 * 1024 * 1024
    files: int = 4
    raw_bytes: int = 1024 * 1024
    daemon_log_bytes: int = 10 * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LogSettings:
        defaults = cls()
        values: dict[str, int] = {}
        for var, attr, minimum in (("MSO_LOG_MAX_SIZE", "max_bytes_per_service", 4096),
                                   ("MSO_RAW_LOG_SIZE", "raw_bytes", 4096),
                                   ("MSO_DAEMON_LOG_SIZE", "daemon_log_bytes", 4096),
                                   ("MSO_LOG_FILES", "files", 2)):
            raw = environ.get(var)
            if not raw:
                continue
            try:
                value = int(raw) if attr == "files" else parse_size(raw)
                if value < minimum:
                    raise ValueError(f"at least {minimum}")
            except ValueError as exc:
                log.warning("%s=%r ignored (%s); using %s", var, raw, exc,
                            getattr(defaults, attr))
                continue
            values[attr] = value
        return cls(**values)


def rotate_own_log(path: Path, max_bytes: int, fd: int = 2) -> bool:
    """Copy-truncate the daemon's own log (its stderr, opened O_APPEND by `mso up`) once
    it passes `max_bytes`: the previous content goes to `<path>.1` (when the disk takes
    it) and the file restarts empty. False when nothing was done (not that file, small)."""
    try:
        st = os.fstat(fd)
        if st.st_size <= max_bytes or not path.exists() or os.stat(path).st_ino != st.st_ino:
            return False
    except OSError:
        return False
    old = path.with_name(path.name + ".1")
    try:
        shutil.copyfile(path, old)
    except OSError:
        old.unlink(missing_ok=True)  # a full disk: the log restarts without a copy
    try:
        os.ftruncate(fd, 0)
    except OSError:
        return False
    return True
