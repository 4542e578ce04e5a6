"""The autoscaler: how many replicas a service should run for the load it gets.

`plan` is the decision, pure and engine-neutral, with the clock passed in: Kubernetes'
HPA v2 algorithm on mso's own figures. For each target written (requests/s, in-flight
requests and CPU per replica; p99 latency for the service), the count it asks for is
`ceil(ready * value / target)` unless the value is within the tolerance (10%) of the
target; the largest count wins. That recommendation is then stabilized (scale up to
the *lowest* recommendation of the scale-up window, default 0s; scale down to the
*highest* of the scale-down window, default 5m, so a dip in load does not remove
replicas that the next second needs), limited by `max_step` per `period`, and bounded
by `min` and `max`.

`Autoscaler` feeds it on any engine through the narrow `AutoscaleHost`: the proxy's (or
gateway's) SNAPSHOT, sampled every `interval` and diffed over a short `window`, and each
replica's CPU time where the engine can read it. Every change is acted on through the
host (the same path as `mso scale`) and recorded as a `service.autoscaled` event with the
numbers behind it; `state()` is what `mso ps` shows.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mso.errors import Conflict
from mso.analysis.latency import histogram_quantile
from mso.analysis.windows import SnapshotError, window_from_snapshots
from mso.controllers.zero import (IdleClock, ZeroPolicy, activity, describe_idle,
                                  goes_to_zero)
from mso.store.db import Store
from mso.store.health import StoreUnavailable

log = logging.getLogger("mso.controllers.autoscale")

#: Within this fraction of the target a metric asks for no change (HPA's default).
TOLERANCE = 0.1
#: A SNAPSHOT that takes longer than this is skipped (the engine's loop waits for it).
METRICS_TIMEOUT = 5.0
#: Units of each metric, for events and `mso ps`.
UNITS = {"rps": "req/s per replica", "inflight": "in flight per replica",
         "p99_ms": "ms p99", "cpu": "cores per replica"}
_PER_REPLICA = ("rps", "inflight", "cpu")


@dataclass(frozen=True)
class Rule:
    """One direction's limits: stabilization window, most replicas per period."""

    stabilization: float
    max_step: int | str
    period: float = 15.0
    #: Scale up only: never fewer than this many per period (HPA's 4 pods beside 100%).
    floor: int = 0

    def limit(self, start: int) -> int:
        """How many replicas may change within one period, counted from `start`."""
        if isinstance(self.max_step, int):
            step = self.max_step
        else:
            step = math.ceil(start * float(self.max_step.rstrip("%")) / 100.0)
        return max(step, self.floor)


@dataclass(frozen=True)
class Policy:
    min: int
    max: int
    targets: Mapping[str, float]
    up: Rule = Rule(0.0, "100%", floor=4)
    down: Rule = Rule(300.0, "100%")
    tolerance: float = TOLERANCE

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Policy:
        """From the manifest's `autoscale` (as dumped to JSON), with HPA's defaults."""
        p99 = spec.get("target_p99_latency")
        targets = {"rps": spec.get("target_rps_per_replica"),
                   "inflight": spec.get("target_inflight_per_replica"),
                   "p99_ms": None if p99 is None else float(p99) * 1000.0,
                   "cpu": spec.get("target_cpu_per_replica")}
        behavior = spec.get("behavior") or {}
        up = behavior.get("scale_up") or {}
        down = behavior.get("scale_down") or {}
        # min 0 (scale to zero) is reached by idleness only (mso.controllers.zero): on
        # its figures the autoscaler keeps at least one replica.
        return cls(
            min=max(1, int(spec.get("min", 1))), max=int(spec["max"]),
            targets={k: float(v) for k, v in targets.items() if v is not None},
            up=Rule(_or(up.get("stabilization"), 0.0), up.get("max_step") or "100%",
                    float(up.get("period") or 15.0), floor=0 if up.get("max_step") else 4),
            down=Rule(_or(down.get("stabilization"), 300.0), down.get("max_step") or "100%",
                      float(down.get("period") or 15.0)))


def _or(value: Any, default: float) -> float:
    return default if value is None else float(value)


@dataclass(frozen=True)
class Observation:
    """What the service does now. `values`: service-wide figures (total requests/s,
    total in flight, p99 in ms, total CPU cores); a figure not measured is left out."""

    replicas: int  # the count asked for now
    ready: int  # replicas serving (READY, not stopping)
    values: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class History:
    """What earlier decisions left: (time, recommendation) and (time, replicas added)."""

    recommendations: tuple[tuple[float, int], ...] = ()
    changes: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True)
class Reading:
    """One metric: its value (per replica, or the service's p99), its target, and the
    count it asks for."""

    metric: str
    value: float
    target: float
    replicas: int

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": round(self.value, 3), "target": self.target,
                "replicas": self.replicas, "unit": UNITS[self.metric]}


@dataclass(frozen=True)
class Decision:
    current: int
    desired: int
    recommendation: int  # what the metrics ask for, before stabilization and limits
    readings: tuple[Reading, ...]
    reason: str
    history: History

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current, "desired": self.desired,
                "recommendation": self.recommendation, "reason": self.reason,
                "metrics": [r.to_dict() for r in self.readings]}


def _readings(policy: Policy, obs: Observation) -> list[Reading]:
    out = []
    for metric, target in policy.targets.items():
        total = obs.values.get(metric)
        if total is None or obs.ready <= 0:
            continue
        value = total / obs.ready if metric in _PER_REPLICA else total
        ratio = value / target
        if abs(ratio - 1.0) <= policy.tolerance:
            count = obs.ready
        else:
            count = math.ceil(obs.ready * ratio - 1e-9)
        out.append(Reading(metric, value, target, count))
    return out


def _describe(reading: Reading) -> str:
    unit = UNITS[reading.metric]
    return f"{reading.metric} {reading.value:.4g} {unit} (target {reading.target:g})"


def plan(policy: Policy, obs: Observation, history: History, now: float) -> Decision:
    """The replica count for `obs` at time `now`, and the history to pass next time."""
    current = obs.replicas
    readings = _readings(policy, obs)
    if readings:
        driver = max(readings, key=lambda r: r.replicas)
        raw = driver.replicas
        if raw < current and obs.ready < current:
            # Replicas still starting carry no load yet: their figures would ask for less.
            raw, why = current, f"{current - obs.ready} replica(s) not ready yet; holding"
        elif raw == current or raw == obs.ready:
            raw, why = current, "within tolerance: " + _describe(driver)
        else:
            why = _describe(driver)
    else:
        raw, why = current, "no figures yet (no ready replica or no samples)"
    if raw > policy.max:
        why += f"; bounded by max ({policy.max})"
    elif raw < policy.min:
        why += f"; bounded by min ({policy.min})"
    raw = min(max(raw, policy.min), policy.max)
    # No history (a new autoscaler, or a restarted daemon): the count running now counts as
    # recommended now, so nothing is removed before a whole scale-down window has passed.
    seed = history.recommendations or ((now, min(max(current, policy.min), policy.max)),)
    recs = seed + ((now, raw),)
    up_window = [r for t, r in recs if t > now - policy.up.stabilization] or [raw]
    down_window = [r for t, r in recs if t > now - policy.down.stabilization] or [raw]
    stabilized = current
    lowest_up, highest_down = min(up_window), max(down_window)
    if stabilized < lowest_up:
        stabilized = lowest_up
    if stabilized > highest_down:
        stabilized = highest_down
    if stabilized != raw and raw < current:
        why += (f"; held by the scale-down window ({policy.down.stabilization:g}s: highest "
                f"recommendation {highest_down})")
    elif stabilized != raw and raw > current:
        why += (f"; held by the scale-up window ({policy.up.stabilization:g}s: lowest "
                f"recommendation {lowest_up})")
    desired = _rate_limited(policy, current, stabilized, history, now)
    if desired != stabilized:
        rule = policy.up if desired > current else policy.down
        why += f"; limited by max_step ({rule.max_step} per {rule.period:g}s)"
    if current < policy.min:
        why = f"raised to min ({policy.min})"
    elif current > policy.max:
        why = f"lowered to max ({policy.max})"
    desired = min(max(desired, policy.min), policy.max)
    keep = max(policy.up.stabilization, policy.down.stabilization, policy.up.period,
               policy.down.period)
    changes = history.changes + (((now, desired - current),) if desired != current else ())
    new_history = History(tuple((t, r) for t, r in recs if t > now - keep),
                          tuple((t, d) for t, d in changes if t > now - keep))
    return Decision(current, desired, raw, tuple(readings), why, new_history)


def _rate_limited(policy: Policy, current: int, want: int, history: History,
                  now: float) -> int:
    if want > current:
        added = sum(d for t, d in history.changes if t > now - policy.up.period and d > 0)
        start = current - added
        return min(want, max(current, start + policy.up.limit(start)))
    if want < current:
        removed = -sum(d for t, d in history.changes
                       if t > now - policy.down.period and d < 0)
        start = current + removed
        return max(want, min(current, start - policy.down.limit(start)))
    return want


def refuse_autoscaled(autoscaled: Mapping[str, Mapping[str, Any]], service: str,
                      current: int) -> None:
    """`mso scale` of an autoscaled service: refused, with its bounds (the autoscaler
    would undo it), on every engine."""
    spec = autoscaled.get(service)
    if spec is not None:
        raise Conflict(f"{service} is autoscaled between {spec.get('min', 1)} and {spec['max']} "
                       f"replicas (now {current}): the autoscaler would undo `mso scale`; "
                       f"change autoscale.min/max in the manifest (or remove autoscale) and "
                       f"apply it again")


def status(store: Store, autoscaled: Mapping[str, Mapping[str, Any]],
           last: Callable[[str], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """Each autoscaled service's bounds, replica count and last decision, for `mso ps`.
    `last(service)`: the running autoscaler's last decision; without one (an engine whose
    controller is another process), the newest `service.autoscaled` event's."""
    desired = store.desired()
    out: dict[str, Any] = {}
    for name, spec in sorted(autoscaled.items()):
        if last is not None:
            decision = last(name)
        else:
            found = [e for e in store.events(service=name, limit=500)
                     if e.type == "service.autoscaled"]
            decision = found[-1].data if found else None
        out[name] = {"min": spec.get("min", 1), "max": spec["max"],
                     "replicas": desired[name].replicas if name in desired else None,
                     "last": decision}
    return out


# -- feeding it ----------------------------------------------------------------------------

class AutoscaleHost(Protocol):
    """What the autoscaler needs from an engine."""

    store: Store

    async def metrics(self) -> dict[str, Any]:
        """The gateway/proxy SNAPSHOT (docs/architecture.md)."""
        ...

    def serving(self, service: str) -> int:
        """How many replicas of `service` are READY and not stopping."""
        ...

    def cpu_seconds(self, service: str) -> dict[str, float] | None:
        """Cumulative CPU seconds of each replica, or None when not measured."""
        ...

    def set_replicas(self, service: str, replicas: int) -> None:
        """Scale as `mso scale` does (scale-down drains)."""
        ...


def measure(samples: list[tuple[float, dict[str, Any]]], service: str) -> dict[str, float]:
    """Service-wide figures between the first and last SNAPSHOT of `samples` (time,
    snapshot): requests/s, mean in flight, p99 (ms) of every cluster of `service`."""
    if len(samples) < 2:
        return {}
    (t0, first), (t1, last) = samples[0], samples[-1]
    if t1 - t0 <= 0:
        return {}
    prefix = f"{service}/"
    requests = 0
    bounds: tuple[float, ...] = ()
    counts: list[int] = []
    for cluster, body in (last.get("clusters") or {}).items():
        if not cluster.startswith(prefix):
            continue
        for subset in body.get("subsets") or {}:
            try:
                window = window_from_snapshots(first, last, cluster, subset)
            except SnapshotError:
                continue
            requests += window.requests
            if window.latency_counts:
                if not counts:
                    bounds, counts = window.latency_buckets_ms, list(window.latency_counts)
                elif window.latency_buckets_ms == bounds:
                    counts = [a + b for a, b in zip(counts, window.latency_counts)]
    inflight = [_inflight(snap, prefix) for _, snap in samples[1:]]
    out = {"rps": requests / (t1 - t0), "inflight": sum(inflight) / len(inflight)}
    p99 = histogram_quantile(bounds, counts, 0.99) if counts else None
    if p99 is not None:
        out["p99_ms"] = p99
    return out


def _inflight(snapshot: dict[str, Any], prefix: str) -> int:
    total = 0
    for cluster, body in (snapshot.get("clusters") or {}).items():
        if cluster.startswith(prefix):
            for subset in (body.get("subsets") or {}).values():
                for endpoint in (subset.get("endpoints") or {}).values():
                    total += int(endpoint.get("inflight") or 0)
    return total


def cpu_cores(first: tuple[float, dict[str, float]], last: tuple[float, dict[str, float]]
              ) -> float | None:
    """Cores used between two CPU readings (replicas present in both)."""
    dt = last[0] - first[0]
    common = set(first[1]) & set(last[1])
    if dt <= 0 or not common:
        return None
    return sum(max(0.0, last[1][r] - first[1][r]) for r in common) / dt


class Autoscaler:
    """Runs `plan` for every autoscaled service, every `interval`, on figures averaged
    over `window`. `policies()` returns service -> `autoscale` (JSON) of the services
    that have one; `clock` is injected (monotonic seconds)."""

    def __init__(self, host: AutoscaleHost, policies: Callable[[], dict[str, dict[str, Any]]],
                 clock: Callable[[], float] = time.monotonic, interval: float = 1.0,
                 window: float = 3.0) -> None:
        self.host = host
        self.policies = policies
        self.clock = clock
        self.interval = interval
        self.window = window
        self._samples: deque[tuple[float, dict[str, Any]]] = deque()
        self._cpu: dict[str, deque[tuple[float, dict[str, float]]]] = {}
        self._history: dict[str, History] = {}
        self._last: dict[str, Decision] = {}
        self._next = 0.0
        self.idle = IdleClock()

    def state(self, service: str) -> dict[str, Any] | None:
        """The last decision for `service` (what `mso ps` shows), or None."""
        decision = self._last.get(service)
        return None if decision is None else decision.to_dict()

    async def tick(self) -> None:
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.interval
        policies = self.policies()
        if not policies:
            self._samples.clear()
            return
        try:
            snapshot = await asyncio.wait_for(self.host.metrics(), METRICS_TIMEOUT)
        except Exception as exc:  # no proxy (or gateway) right now: no figures this time
            log.debug("autoscaler: no metrics: %s", exc)
            snapshot = None
        if snapshot is not None:
            self._keep(self._samples, (now, snapshot), now)
        desired = self.host.store.desired()
        for service, spec in policies.items():
            want = desired.get(service)
            if want is None or want.kind != "service":
                continue
            try:
                zero = ZeroPolicy.from_spec(spec)
                if zero is not None and self._zero(service, zero, want.replicas, snapshot, now):
                    continue
                self.decide(service, Policy.from_spec(spec), want.replicas, now)
            except StoreUnavailable:
                raise  # the engine's loop waits for the disk
            except Exception:  # one service's trouble must not stop the others (or the loop)
                log.exception("autoscaler: %s not decided this time", service)
        for gone in set(self._history) - set(policies):
            self._history.pop(gone, None)
            self._last.pop(gone, None)
            self._cpu.pop(gone, None)
            self.idle.forget(gone)

    def _zero(self, service: str, policy: ZeroPolicy, replicas: int,
              snapshot: dict[str, Any] | None, now: float) -> bool:
        """Scale to zero's part of a tick; True when it decided (no metric plan then)."""
        figures = activity(snapshot, service) if snapshot is not None else None
        idle_for = self.idle.observe(service, figures, now)
        if replicas == 0:
            return True  # at zero: only a waiting request (`wake`) brings a replica back
        if self.host.serving(service) == 0:
            # No replica READY yet (starting, or woken with requests held for it): idle
            # time counts from the first one that could have served.
            self.idle.touch(service, now)
            return False
        if not goes_to_zero(policy, replicas, idle_for):
            return False
        reason = f"idle: no request for {describe_idle(idle_for)} (idle {describe_idle(policy.idle)})"
        self._record(service, Decision(replicas, 0, 0, (), reason, History()), now,
                     {"idle_seconds": round(idle_for, 1), "idle": policy.idle})
        return True

    def wake(self, waiting: Mapping[str, int]) -> list[str]:
        """Requests wait at zero (the proxy's `held`): 0 -> 1 for each such service that
        scales to zero and has no replica asked for. Returns the services woken."""
        now = self.clock()
        policies = self.policies()
        desired = self.host.store.desired()
        woken = []
        for service, count in sorted(waiting.items()):
            want = desired.get(service)
            if want is None or want.kind != "service" or want.replicas != 0 \
                    or ZeroPolicy.from_spec(policies.get(service)) is None:
                continue
            self.idle.touch(service, now)
            reason = f"{count} request(s) waiting at zero replicas"
            self._record(service, Decision(0, 1, 1, (), reason, History()), now,
                         {"waiting": count})
            woken.append(service)
        return woken

    def _record(self, service: str, decision: Decision, now: float,
                numbers: dict[str, float]) -> None:
        """Act on a scale-to-zero decision: scale, event (with `numbers`), a fresh
        history."""
        self._history[service] = History(((now, decision.desired),))
        self._last[service] = decision
        self.host.set_replicas(service, decision.desired)
        self.host.store.add_event(
            "service.autoscaled", f"{decision.current} -> {decision.desired} replicas: "
            f"{decision.reason}", service, data={**decision.to_dict(), **numbers})

    def _keep(self, ring: deque[Any], sample: Any, now: float) -> None:
        ring.append(sample)
        while len(ring) > 2 and ring[1][0] <= now - self.window:
            ring.popleft()

    def decide(self, service: str, policy: Policy, replicas: int, now: float) -> Decision:
        values = measure(list(self._samples), service)
        if "cpu" in policy.targets:
            reading = self.host.cpu_seconds(service)
            if reading is not None:
                ring = self._cpu.setdefault(service, deque())
                self._keep(ring, (now, reading), now)
                cores = cpu_cores(ring[0], ring[-1]) if len(ring) > 1 else None
                if cores is not None:
                    values["cpu"] = cores
        obs = Observation(replicas, self.host.serving(service), values)
        decision = plan(policy, obs, self._history.get(service, History()), now)
        self._history[service] = decision.history
        self._last[service] = decision
        if decision.changed:
            self.host.set_replicas(service, decision.desired)
            figures = ", ".join(f"{r.metric} {r.value:.4g} (target {r.target:g})"
                                for r in decision.readings)
            self.host.store.add_event(
                "service.autoscaled",
                f"{decision.current} -> {decision.desired} replicas: {decision.reason}"
                + (f" [{figures}]" if figures and figures not in decision.reason else ""),
                service, data=decision.to_dict())
        return decision
