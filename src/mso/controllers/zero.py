"""Scale to zero (`autoscale.min: 0`): when a service goes to no replica, and how it comes back.

Going: the autoscaler never goes below one replica on its metrics (a quiet minute at
0 req/s would otherwise be "0 replicas recommended", and `min: 0` would mean "gone
between two requests"). Zero is reached only by *idleness*: no request counted by the
proxy (no change in any of the service's request counters, nothing in flight) for
`idle` (default 5m, Knative's scale-to-zero after a grace period). `IdleClock` keeps the
time of the last activity per service, from the SNAPSHOTs the autoscaler samples anyway,
with the clock passed in; a new autoscaler (or a restarted daemon) counts "now" as the
last activity, so nothing goes to zero before a whole `idle` has been watched. Idle time
counts only while a replica is READY: a service still starting (a Swarm task takes
seconds), perhaps with requests held for it, is not idle. The stop
is the ordinary scale-down (the replica is drained with acknowledgement first).

Coming back: with no replica, the proxy parks incoming requests (mso.proxy.hold) and
answers the control plane's long poll (`held`) at once; `watch_held` is that loop, run
by the local daemon and by the Swarm controller, and `Autoscaler.wake` sets 0 -> 1 for
a service with requests waiting. The proxy releases them when the next route table has
the READY replica. Each transition is a `service.autoscaled` event with its numbers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mso.spec.autoscale import DEFAULT_HOLD_QUEUE, DEFAULT_HOLD_TIMEOUT, DEFAULT_IDLE

log = logging.getLogger("mso.controllers.zero")

#: The long poll's wait (seconds), and the pause after the proxy could not be asked.
HELD_WAIT = 10.0
HELD_RETRY = 0.5


@dataclass(frozen=True)
class ZeroPolicy:
    idle: float = DEFAULT_IDLE
    queue: int = DEFAULT_HOLD_QUEUE
    timeout: float = DEFAULT_HOLD_TIMEOUT

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> ZeroPolicy | None:
        """From the manifest's `autoscale` (as dumped to JSON); None unless `min: 0`."""
        if spec is None or int(spec.get("min", 1)) != 0:
            return None
        hold = spec.get("hold") or {}
        idle = spec.get("idle")
        return cls(idle=DEFAULT_IDLE if idle is None else float(idle),
                   queue=int(hold.get("queue") or DEFAULT_HOLD_QUEUE),
                   timeout=float(hold.get("timeout") or DEFAULT_HOLD_TIMEOUT))

    def hold_table(self) -> dict[str, float]:
        """The route table's `hold` for the service's http clusters."""
        return {"queue": self.queue, "timeout": self.timeout}


def hold_table(spec: Mapping[str, Any] | None) -> dict[str, float] | None:
    policy = ZeroPolicy.from_spec(spec)
    return None if policy is None else policy.hold_table()


def activity(snapshot: Mapping[str, Any], service: str) -> tuple[int, int]:
    """(requests ever counted, requests in flight) over every cluster of `service`."""
    prefix = f"{service}/"
    requests = inflight = 0
    for cluster, body in (snapshot.get("clusters") or {}).items():
        if not cluster.startswith(prefix):
            continue
        for subset in (body.get("subsets") or {}).values():
            for endpoint in (subset.get("endpoints") or {}).values():
                requests += int(endpoint.get("requests") or 0)
                inflight += int(endpoint.get("inflight") or 0)
    return requests, inflight


class IdleClock:
    """Per service: the last time a request was seen, and the request count then."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int | None, float]] = {}

    def observe(self, service: str, figures: tuple[int, int] | None, now: float) -> float:
        """Feed one sample ((requests, in flight), or None without a SNAPSHOT); returns
        how long the service has been idle."""
        seen = self._seen.get(service)
        if seen is None:
            self._seen[service] = (figures[0] if figures else None, now)
            return 0.0
        count, since = seen
        if figures is not None:
            requests, inflight = figures
            if inflight > 0 or (count is not None and requests != count):
                since = now
            self._seen[service] = (requests, since)
        return now - since

    def touch(self, service: str, now: float) -> None:
        """A request arrived (one waiting at zero): busy as of now."""
        count = self._seen.get(service, (None, now))[0]
        self._seen[service] = (count, now)

    def forget(self, service: str) -> None:
        self._seen.pop(service, None)


def goes_to_zero(policy: ZeroPolicy, replicas: int, idle_for: float) -> bool:
    """The idle decision: a running service with no request for `idle` goes to zero."""
    return replicas > 0 and idle_for >= policy.idle


def describe_idle(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def services_waiting(held: Mapping[str, int]) -> dict[str, int]:
    """Cluster ("svc/port", "svc/port@preview") -> waiting, summed per service."""
    out: dict[str, int] = {}
    for cluster, count in held.items():
        if count > 0:
            service = cluster.split("/", 1)[0]
            out[service] = out.get(service, 0) + int(count)
    return out


async def watch_held(held: Callable[[int, float], Awaitable[dict[str, Any]]],
                     on_held: Callable[[dict[str, int]], None],
                     wanted: Callable[[], bool]) -> None:
    """The control plane's side of the proxy's `held` long poll, until cancelled.
    `on_held(service -> requests waiting)` runs whenever a new request is parked;
    `wanted()`: whether any service scales to zero (else it only looks every HELD_WAIT)."""
    since = -1
    while True:
        try:
            if not wanted():
                await asyncio.sleep(HELD_RETRY)
                continue
            report = await held(since, HELD_WAIT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the proxy restarts, or is not there yet
            log.debug("held: %s", exc)
            await asyncio.sleep(HELD_RETRY)
            continue
        since = int(report.get("seq") or 0)
        waiting = services_waiting(report.get("held") or {})
        if waiting:
            try:
                on_held(waiting)
            except Exception:  # the loop must go on (a store that refuses writes...)
                log.exception("scale from zero failed; retried on the next request")
