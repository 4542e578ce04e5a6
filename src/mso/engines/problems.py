"""What is wrong with a replica, named the same way on every engine.

`mso up -d`, `mso deploy --wait` and `mso rollout status -w` end as soon as a replica of
the release they wait for has a *problem*, and print, for each such replica, its state,
the reason and its last log lines. `mso ps -o json` carries the same `problem` field on
every engine (null when there is none), so scripts see what the CLI sees.

The thresholds are part of the user-facing contract (docs/manifest.md, "Failing fast"):

* ``crash_loop``: the replica exited ``CRASH_LOOP_EXITS`` times in a row without becoming
  READY in between (a liveness or startup probe that kills it counts as an exit). It keeps
  being restarted with backoff; only the waiting command gives up.
* ``failed``: the replica will not be restarted (FAILED: a non-zero exit under
  ``restart: never``).
* ``start_failed``: the process (or container) could not be started at all: a command not
  found, not executable, an image that does not exist.
* ``not_listening``: the process runs but nothing accepts connections on its ``$PORT``
  ``READY_ALLOWANCE`` seconds after it started (a service that ignores ``$PORT``).
* ``not_ready``: its readiness probe failed ``failure_threshold`` times in a row and the
  replica has been running ``READY_ALLOWANCE`` seconds without becoming READY. A service
  that needs longer to start gets a ``startup`` probe: nothing is judged while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ProblemKind = Literal["crash_loop", "failed", "start_failed", "not_listening", "not_ready"]

#: Exits in a row, without READY in between, that make a crash loop.
CRASH_LOOP_EXITS = 3
#: Seconds a started replica may take before a failing readiness probe, or a port that
#: nothing listens on, counts as a problem.
READY_ALLOWANCE = 10.0
#: Log lines shown with each failing replica.
REPORT_LOG_LINES = 10


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Problem | None:
        if not data:
            return None
        return cls(data["kind"], str(data.get("message", "")))


def not_listening_message(port: int) -> str:
    return (f"nothing listens on PORT={port}; does the service read $PORT? (mso gives "
            "every replica its own port)")
