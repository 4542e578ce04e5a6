"""`mso up -d` waits for READY without re-reading what it has already seen: with 1,000
replicas starting, its polls were a fair part of the daemon's work."""
from __future__ import annotations

from typing import Any

import pytest

from mso.cli import lifecycle
from mso.cli.lifecycle import StartupFailed, wait_ready


class FakeDaemon:
    """Answers /v1/status, /v1/ps and /v1/events like the API; replicas become ready
    one poll at a time; `events` grows as the daemon records them."""

    def __init__(self, replicas: int, events: int) -> None:
        self.ready = 0
        self.replicas = replicas
        self.events = [{"id": i + 1, "type": "replica.state", "message": "x",
                        "service": "web", "replica": f"web-{i}"} for i in range(events)]
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get(self, path: str, **params: Any) -> Any:
        self.calls.append((path, params))
        if path == "/v1/status":
            self.ready = min(self.replicas, self.ready + 1)
            return {"jobs": {}, "ready_replicas": self.ready,
                    "desired_replicas": self.replicas}
        if path == "/v1/ps":
            return {"replicas": [{"service": "web", "replica": f"web-{i}", "draining": False,
                                  "state": "READY" if i < self.ready else "RUNNING",
                                  "problem": None} for i in range(self.replicas)]}
        assert path == "/v1/events"
        newer = [e for e in self.events if e["id"] > params["after"]]
        return newer[:params["limit"]]


def run(daemon: FakeDaemon, after: int = 0) -> float:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return wait_ready(daemon, 60.0, after, clock=lambda: now[0],  # type: ignore[arg-type]
                      sleep=sleep)


def test_events_are_read_once_and_the_replica_list_not_at_every_poll() -> None:
    daemon = FakeDaemon(replicas=30, events=2500)
    run(daemon)
    polls = [c for c in daemon.calls if c[0] == "/v1/status"]
    ps = [c for c in daemon.calls if c[0] == "/v1/ps"]
    events = [c for c in daemon.calls if c[0] == "/v1/events"]
    assert len(polls) == 30
    # Every 0.2 s poll asks for status; the full list at most once a second (+ the check).
    assert len(ps) <= 30 * 0.2 / lifecycle.PS_EVERY + 2
    afters = [c[1]["after"] for c in events]
    assert afters[:3] == [0, 1000, 2000]  # paged through the backlog once...
    assert set(afters[3:]) == {2500}  # ...then only what is new


def test_a_failure_event_among_many_still_ends_the_wait() -> None:
    daemon = FakeDaemon(replicas=10_000, events=1500)
    daemon.events[1200] = {"id": 1201, "type": "proxy.error", "message": "push failed",
                           "service": None, "replica": None}
    with pytest.raises(StartupFailed, match="start-up failed"):
        run(daemon)
