"""The rollout controller: drives rolling, canary and blue/green rollouts on any engine.

Each tick it polls the rollout's analysis (`mso.analysis.run.AnalysisRun`: the proxy's
per-subset metrics fed to the canary judge, plus the manifest's Prometheus and webhook
providers, sampled in the background and combined: any fail rolls back, a pass needs
every source, no data never promotes), asks the pure strategy for the next state,
persists it, and records the numbers behind every decision as events. What should run, and with which weights, follows from `targets()`; the
engine's own reconcile loop makes it so. The controller sees the engine only through the
narrow `RolloutHost` protocol, so the same code drives local processes, Swarm services
and Kubernetes Deployments.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx

from mso.errors import Conflict
from mso.analysis import AnalysisConfig, ProxyMetricsProvider
from mso.analysis.providers import RolloutContext, redact_url
from mso.analysis.load import LoadSpec, SyntheticLoad
from mso.analysis.run import AnalysisRun, Outcome, providers_from_spec, request_urls
from mso.controllers.notify import Notifier
from mso.releases.ports import port_map
from mso.releases.rollback import ReleaseImage, rollback_target
from mso.strategies import bluegreen, canary, rolling
from mso.strategies.canary import Decision, Tick
from mso.strategies.state import Phase, RolloutState
from mso.store.db import Store
from mso.store.records import Desired

log = logging.getLogger("mso.controllers.rollouts")


class RolloutError(Conflict):
    """A rollout command that cannot be carried out (shown to the user as is)."""


@dataclass(frozen=True)
class SubsetTarget:
    subset: str
    release: int
    replicas: int


@dataclass(frozen=True)
class Member:
    """One replica (or task, or pod) as the rollout controller sees it."""

    subset: str
    release: int
    ready: bool
    stopping: bool = False


class RolloutHost(Protocol):
    """What the controller needs from an engine."""

    store: Store

    def members(self, service: str) -> list[Member]: ...

    async def metrics(self) -> dict[str, Any]:
        """The gateway/proxy SNAPSHOT (docs/architecture.md)."""
        ...

    def relabel(self, service: str, mapping: dict[str, str]) -> None:
        """Blue/green: rename subsets of running replicas (e.g. preview -> stable)."""
        ...

    def wake(self) -> None:
        """Something changed: reconcile soon."""
        ...


@runtime_checkable
class DirectHost(Protocol):
    """An engine whose controller can reach each replica itself (the local engine): it
    can send `rollout.analysis.load`'s synthetic requests straight to a subset."""

    def subset_addresses(self, service: str, subset: str, port: str) -> list[str]:
        """Base URLs (`http://127.0.0.1:41234`) of the subset's READY replicas."""
        ...


#: blue/green's preview is judged as the canary, against the stable.
_BG_SUBSETS = {"stable": "stable", "canary": "preview"}
BLUE_GREEN_ANALYSIS = 30.0  # seconds, when `analysis.duration` is not written


def canary_replicas(replicas: int, weight: int) -> int:
    return max(1, math.ceil(replicas * weight / 100.0))


class RolloutController:
    """Drives every rollout of one app through its host (local daemon, Swarm or Kubernetes
    controller). `clock` is the wall clock every decision by time reads (step durations,
    pauses, progress deadlines, analysis ticks): injected, so tests can move it."""

    def __init__(self, host: RolloutHost, clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.d = host
        self._clock = clock
        #: How the providers' requests travel: directly (local), or through the gateway
        #: inside the app's network (Swarm, Kubernetes: `mso.analysis.relay`).
        self._transport = transport
        self._runs: dict[str, AnalysisRun] = {}
        #: Each run's last poll: (when, final, outcome), read again until the analysis
        #: `interval` has passed.
        self._polled: dict[str, tuple[float, bool, Outcome]] = {}
        self._next_tick: dict[str, float] = {}
        self._last_verdict: dict[str, str] = {}
        self._members: dict[str, tuple[Member, ...]] = {}  # at each service's last tick
        self._due: float | None = None
        self._loads: dict[str, SyntheticLoad] = {}
        self.notifier = Notifier(host.store)

    # -- state ------------------------------------------------------------------------
    def get(self, service: str) -> RolloutState | None:
        raw = self.d.store.get_rollout(service)
        return None if raw is None else RolloutState.from_json(raw)

    def active(self, service: str) -> RolloutState | None:
        state = self.get(service)
        return state if state is not None and state.active else None

    def _save(self, state: RolloutState) -> None:
        self.d.store.set_rollout(state.service, state.to_json())

    def spec(self, service: str, release: int) -> dict[str, Any]:
        rel = self.d.store.release(service, release)
        return dict((rel.spec["model"].get("rollout") or {}) if rel else {})

    def recover(self) -> None:
        """After a restart: resume every active rollout; interrupted analyses start over."""
        for service in self.d.store.services_with_releases():
            state = self.active(service)
            if state is None:
                continue
            steps = self.spec(service, state.to_release).get("steps") or []
            if state.step < len(steps) and canary.step_kind(steps[state.step]) == "analysis":
                now = self._clock()
                # The whole duration again; a user's pause stays, with the full duration
                # left once resumed.
                state = dataclasses.replace(state, step_started=now,
                                            paused_at=None if state.paused_at is None else now)
            elif _preview_analysed(state):
                # A blue/green preview under analysis: its whole duration again.
                state = dataclasses.replace(state, step_started=self._clock(),
                                            phase=Phase.PROGRESSING)
            self._save(state)
            number = canary.step_number(state, steps)
            message = (f"resumed at step {number}; analysis restarted from zero"
                       if number is not None else f"resumed the {state.strategy} rollout")
            self.d.store.add_event("rollout.resumed", message, service,
                                   data={"step": number})

    # -- starting -----------------------------------------------------------------------
    def begin(self, service: str, from_release: int, to_release: int,
              strategy: str | None = None) -> RolloutState:
        current = self.active(service)
        if current is not None:
            from_release = self._supersede(current, to_release)
        chosen = strategy or self.spec(service, to_release).get("strategy", "rolling")
        state = RolloutState(service, chosen, from_release, to_release, started=self._clock())
        self._end_run(service)
        self._last_verdict.pop(service, None)
        self._save(state)
        self.d.store.set_release_outcome(service, to_release, "progressing")
        self.d.store.add_event("rollout.started", f"{chosen} rollout {from_release} -> "
                               f"{to_release}", service,
                               data={"strategy": chosen, "from": from_release,
                                     "to": to_release})
        return state

    def _supersede(self, current: RolloutState, to_release: int) -> int:
        """End `current` for a newer release; returns the release the new rollout starts
        from: the one that serves stable traffic now."""
        now = self._clock()
        if current.promoting or current.promoted_at is not None:
            # Already promoted (a canary replacing stable, or blue/green keeping the
            # previous release): the promotion stands; only its wait is cut short.
            # Starting from `from_release` would bring the release it replaced back.
            ended = dataclasses.replace(current, phase=Phase.PROMOTED, finished=now,
                                        reason=f"promoted; superseded by release {to_release}")
            start = current.to_release
        else:
            ended = dataclasses.replace(current, phase=Phase.ROLLED_BACK, finished=now,
                                        reason=f"superseded by release {to_release}")
            start = current.from_release
            self.d.store.set_release_outcome(current.service, current.to_release, "superseded")
        self._finish(ended, rollback=False)
        self.d.store.add_event("rollout.superseded", f"rollout {current.from_release} -> "
                               f"{current.to_release} ended ({ended.reason}); the next one "
                               f"starts from release {start}", current.service,
                               data={"from": current.from_release, "to": current.to_release,
                                     "phase": ended.phase.value, "next_from": start})
        return start

    # -- what should run ----------------------------------------------------------------
    def targets(self, service: str, desired: Desired) -> tuple[list[SubsetTarget], dict[str, int]]:
        n = desired.replicas
        state = self.active(service)
        if state is None or state.strategy in ("rolling", "recreate"):
            return [SubsetTarget("stable", desired.release, n)], {"stable": 100}
        if state.strategy == "canary":
            stable_release = state.to_release if state.promoting else state.from_release
            return ([SubsetTarget("stable", stable_release, n),
                     SubsetTarget("canary", state.to_release,
                                  canary_replicas(n, state.weight))],
                    {"stable": 100 - state.weight, "canary": state.weight})
        if state.promoted_at is None:
            return ([SubsetTarget("stable", state.from_release, n),
                     SubsetTarget("preview", state.to_release, n)],
                    {"stable": 100, "preview": 0})
        return ([SubsetTarget("stable", state.to_release, n),
                 SubsetTarget("previous", state.from_release, n)],
                {"stable": 100, "previous": 0})

    def _subset_ready(self, service: str, subset: str, release: int, count: int) -> bool:
        reps = [m for m in self.d.members(service) if m.subset == subset and not m.stopping]
        return (len(reps) == count and count > 0
                and all(m.release == release and m.ready for m in reps))

    # -- the loop -----------------------------------------------------------------------
    def due(self) -> float | None:
        """When the next rollout tick is due (the clock's time), or None when no rollout
        was active at the last tick: an engine's loop can wake up then, not later."""
        return self._due

    async def tick(self) -> None:
        now = self._clock()
        due: list[float] = []
        try:
            await self._tick(now, due)
        finally:
            self._due = min(due, default=None)
            try:
                self.notifier.pump()  # rollout events (any process's) to the webhooks
            except Exception:
                log.exception("rollout notifications failed")

    async def _tick(self, now: float, due: list[float]) -> None:
        for service, want in self.d.store.desired().items():
            raw = self.d.store.get_rollout(service) if want.kind == "service" else None
            if raw is None:
                continue
            state = RolloutState.from_json(raw)
            if not state.active:
                continue
            due.append(self._next_tick.get(service, 0.0))
            # Every `interval`, or at once when a replica of the service changed (a
            # canary became ready: its weight should not wait for the next interval).
            members = tuple(self.d.members(service))
            if now < self._next_tick.get(service, 0.0) and \
                    members == self._members.get(service):
                continue
            self._members[service] = members
            spec = self.spec(service, state.to_release)
            interval = float((spec.get("analysis") or {}).get("interval", 1.0))
            # The rollout itself ticks at least every second (step durations, pauses);
            # the analysis reads and judges every `interval` (`_analyse`).
            self._next_tick[service] = due[-1] = now + min(interval, 1.0)
            try:
                decision = await self._decide(state, spec, want, now)
            except Exception:
                log.exception("rollout tick for %s failed", service)
                continue
            polled = self._polled.get(service)
            if polled is not None and now < polled[0] + interval:
                # A tick for a replica change did not read the analysis: its next
                # reading stays due `interval` after the last one.
                self._next_tick[service] = due[-1] = min(due[-1], polled[0] + interval)
            # A command (promote, abort, pause; from another process on Kubernetes) may
            # have changed the rollout while this decision awaited the metrics: a decision
            # made from the old state must not overwrite it. Decide again next tick.
            if not self.d.store.replace_rollout(service, decision.state.to_json(), raw):
                log.info("rollout of %s changed while deciding; deciding again", service)
                self._next_tick[service] = due[-1] = 0.0
                continue
            self._apply(state, decision, saved=True)

    async def _decide(self, state: RolloutState, spec: dict[str, Any], want: Desired,
                      now: float) -> Decision:
        deadline = float(spec.get("progress_deadline", 600.0))
        if state.strategy in ("rolling", "recreate"):
            complete = self._rolled(state.service, state.to_release, want.replicas)
            updated = self._updated(state.service, state.to_release)
            return rolling.advance(state, Tick(now, complete, None, "", deadline,
                                               updated=updated, wanted=want.replicas), complete)
        if state.strategy == "blue_green":
            ready = self._subset_ready(state.service, "preview" if state.promoted_at is None
                                       else "stable", state.to_release, want.replicas)
            keep = float(spec.get("keep_previous", 300.0))
            duration = _preview_analysis(spec)
            if duration is None:
                return bluegreen.advance(state, Tick(now, ready, None, "", deadline), keep)
            kind, reason = None, ""
            if ready and state.promoted_at is None and state.phase != Phase.PAUSED:
                # The preview, judged against the stable (fed by `analysis.load`).
                kind, reason = await self._verdict(
                    state, spec, state.step_started > 0
                    and canary.step_elapsed(state, now) >= duration, now)
            return bluegreen.advance(state, Tick(now, ready, kind, reason, deadline), keep,
                                     duration)
        steps = spec.get("steps") or []
        if state.promoting:
            if self._rolled(state.service, state.to_release, want.replicas):
                done = dataclasses.replace(state, phase=Phase.PROMOTED, finished=now,
                                           weight=100, reason="canary promoted")
                return Decision(done, ("stable replicas run the new release; promoted",))
            return Decision(state)
        ready = self._subset_ready(state.service, "canary", state.to_release,
                                   canary_replicas(want.replicas, state.weight))
        kind, reason = await self._verdict(state, spec, canary.analysis_due(state, steps, now),
                                           now)
        return canary.advance(state, steps, Tick(now, ready, kind, reason, deadline))

    async def _verdict(self, state: RolloutState, spec: dict[str, Any],
                       final: bool, now: float) -> tuple[str | None, str]:
        """Poll the analysis and keep its numbers in `state.analysis`: the verdict (None
        without one) and its reason (what a sample-starved analysis still needs)."""
        outcome = await self._analyse(state, spec, final, now)
        if outcome is None:
            return None, ""
        state.analysis = self._with_load(state.service, outcome.to_dict())
        if outcome.verdict == "inconclusive":
            return outcome.verdict, analysis_needs(state.analysis, _min_samples(spec)) \
                or outcome.reason
        return outcome.verdict, outcome.reason

    def _rolled(self, service: str, release: int, replicas: int) -> bool:
        stable = [m for m in self.d.members(service) if m.subset == "stable" and not m.stopping]
        return (len(stable) == replicas and all(m.release == release and m.ready
                                                for m in stable))

    def _updated(self, service: str, release: int) -> int:
        """Replicas of `release` serving stable traffic and READY: a rolling update's
        progress."""
        return sum(1 for m in self.d.members(service) if m.subset == "stable"
                   and not m.stopping and m.release == release and m.ready)

    async def _analyse(self, state: RolloutState, spec: dict[str, Any],
                       final: bool, now: float) -> Outcome | None:
        """One poll of the rollout's analysis (`mso.analysis.run`): the proxy's judge
        and the manifest's providers, combined; None when the service has no HTTP port
        for the proxy to measure. Polled every `analysis.interval`: between polls the
        last outcome stands, except that the first poll after an analysis step's duration
        ended (the final one) is taken at once."""
        run = self._runs.get(state.service)
        if run is None:
            made = self._new_run(state, spec)
            if made is None:
                return None
            run = self._runs[state.service] = made
        interval = float((spec.get("analysis") or {}).get("interval", 1.0))
        last = self._polled.get(state.service)
        if last is not None and now < last[0] + interval and (last[1] or not final):
            return last[2]
        outcome = await run.poll(final, state.step)
        self._polled[state.service] = (now, final, dataclasses.replace(outcome, changed=()))
        for report in outcome.changed:
            self.d.store.add_event("analysis.provider", f"{report.name} {report.phase}: "
                                   f"{report.reason}", state.service, data=report.to_dict())
        first_poll = outcome.judge is None and outcome.verdict == "inconclusive" \
            and state.service not in self._last_verdict
        if self._last_verdict.get(state.service) != outcome.verdict and not first_poll:
            self._last_verdict[state.service] = outcome.verdict
            self.d.store.add_event("analysis." + outcome.verdict, outcome.reason,
                                   state.service, data=_numbers(outcome))
        return outcome

    def _new_run(self, state: RolloutState, spec: dict[str, Any]) -> AnalysisRun | None:
        cluster = self._cluster(state.service, state.to_release)
        if cluster is None:
            return None
        a = spec.get("analysis") or {}
        load = self._start_load(state, spec, cluster.split("/", 1)[1])
        config = AnalysisConfig(
            min_samples=_min_samples(spec),
            confidence=float(a.get("confidence", 0.99)),
            max_error_rate_increase=float(a.get("max_error_rate_increase", 0.01)),
            max_latency_p99_increase=float(a.get("max_latency_p99_increase", 0.25)))
        context = RolloutContext(state.service, state.from_release, state.to_release)
        proxy = ProxyMetricsProvider(
            self.d.metrics, cluster, config=config,
            canary_subset="preview" if state.strategy == "blue_green" else "canary",
            extra=None if load is None else load.drain)
        return AnalysisRun(proxy, providers_from_spec(a.get("providers") or [], context,
                                                      self._transport),
                           clock=self._clock)

    def _start_load(self, state: RolloutState, spec: dict[str, Any],
                    port: str) -> SyntheticLoad | None:
        """`analysis.load`: mso's own requests to both subsets (mso.analysis.load), on an
        engine that reaches replicas directly (others refuse the key)."""
        raw = (spec.get("analysis") or {}).get("load")
        host = self.d
        if not raw or not isinstance(host, DirectHost):
            return None
        service = state.service
        subsets = _BG_SUBSETS if state.strategy == "blue_green" else None
        load = SyntheticLoad(LoadSpec.from_spec(raw),
                             lambda subset: host.subset_addresses(service, subset, port),
                             subsets)
        self._end_load(service)
        self._loads[service] = load
        load.start()
        names = " and ".join(load.subsets.values())
        self.d.store.add_event("analysis.load", f"synthetic load started: {load.spec.rate:g} "
                               f"req/s to each of {names}", service,
                               data={"rate": load.spec.rate, "subsets": list(load.subsets.values()),
                                     "running": True})
        return load

    def _with_load(self, service: str, analysis: dict[str, Any]) -> dict[str, Any]:
        """The analysis as stored, with the synthetic load's totals when it runs."""
        load = self._loads.get(service)
        if load is not None:
            analysis["load"] = {subset: load.summary()[judged]
                                for judged, subset in load.subsets.items()}
        return analysis

    def _end_load(self, service: str) -> None:
        load = self._loads.pop(service, None)
        if load is None:
            return
        load.stop()
        totals = load.summary()
        parts = []
        for judged, subset in load.subsets.items():
            t = totals[judged]
            parts.append(f"{subset} {t['sent']} sent, {t['errors']} errors")
        self.d.store.add_event("analysis.load", "synthetic load ended: " + "; ".join(parts),
                               service, data={"running": False, "subsets": {
                                   subset: totals[judged]
                                   for judged, subset in load.subsets.items()}})

    def provider_urls(self) -> list[str]:
        """The URLs the providers of the active rollouts request (no credentials, no
        query): the gateway's `fetch` allow list on Swarm and Kubernetes."""
        urls: list[str] = []
        for service in self.d.store.services_with_releases():
            state = self.active(service)
            if state is not None:
                items = (self.spec(service, state.to_release).get("analysis") or {}
                         ).get("providers") or []
                urls.extend(u for u in request_urls(items) if u not in urls)
        return urls

    def _end_run(self, service: str) -> None:
        self._polled.pop(service, None)
        run = self._runs.pop(service, None)
        if run is not None:
            run.close()
        self._end_load(service)

    def _cluster(self, service: str, release: int) -> str | None:
        rel = self.d.store.release(service, release)
        if rel is None:
            return None
        ports = port_map(rel.spec["model"])
        name = next((n for n, (proto, _) in ports.items() if proto == "http"), None)
        return None if name is None else f"{service}/{name}"

    # -- applying decisions ---------------------------------------------------------------
    def _apply(self, before: RolloutState, decision: Decision, saved: bool = False) -> None:
        state = decision.state
        steps = (self.spec(state.service, state.to_release).get("steps") or []
                 if decision.events else [])
        for message in decision.events:
            self.d.store.add_event("rollout." + state.phase.value.lower(), message,
                                   state.service, data=_event_data(state, steps))
        if not state.active:
            self._finish(state, rollback=state.phase in (Phase.ROLLED_BACK, Phase.FAILED),
                         saved=saved)
            return
        if not saved:
            self._save(state)
        if state.strategy == "blue_green" and (state.phase == Phase.PAUSED
                                               or state.promoted_at is not None):
            self._end_run(state.service)  # the preview was judged (or promoted)
        if decision.changed or before.weight != state.weight:
            self.d.wake()

    def _finish(self, state: RolloutState, rollback: bool, saved: bool = False) -> None:
        store = self.d.store
        if not saved:
            self._save(state)
        self._end_run(state.service)
        if rollback:
            if state.strategy == "blue_green" and state.promoted_at is not None:
                self.d.relabel(state.service, {"stable": "preview", "previous": "stable"})
            want = store.desired().get(state.service)
            if want is not None:
                store.set_desired(dataclasses.replace(want, release=state.from_release))
            store.set_release_outcome(state.service, state.to_release,
                                      "rolled back" if state.phase == Phase.ROLLED_BACK
                                      else "failed")
        elif state.phase == Phase.PROMOTED:
            store.set_release_outcome(state.service, state.to_release, "promoted")
            if state.from_release != state.to_release:
                store.set_release_outcome(state.service, state.from_release, "superseded")
        self.d.wake()

    # -- commands -------------------------------------------------------------------------
    def _require(self, service: str) -> RolloutState:
        if service not in self.d.store.desired():
            raise KeyError(service)
        state = self.active(service)
        if state is None:
            raise RolloutError(f"{service} has no rollout in progress")
        return state

    def promote(self, service: str) -> RolloutState:
        state = self._require(service)
        now = self._clock()
        if state.strategy == "canary":
            steps = self.spec(service, state.to_release).get("steps") or []
            decision = canary.promote(state, steps, now)
        elif state.strategy == "blue_green":
            decision = bluegreen.promote(state, now)
            if decision.changed:
                self.d.relabel(service, {"stable": "previous", "preview": "stable"})
        else:
            raise RolloutError(f"{service} is doing a {state.strategy} update; "
                               "there is nothing to promote")
        self._apply(state, decision)
        return decision.state

    def abort(self, service: str) -> RolloutState:
        state = self._require(service)
        decision = canary.rollback(state, "aborted by user", self._clock())
        self._apply(state, decision)
        return decision.state

    def pause(self, service: str, paused: bool) -> RolloutState:
        """Pause or resume; the step's clock stands still while paused
        (`canary.set_paused`)."""
        state = self._require(service)
        decision = canary.set_paused(state, paused, self._clock())
        if decision.changed:
            self._apply(state, decision)
        return decision.state

    def rollback(self, service: str, to: int | None, author: str | None = None,
                 image_of: ReleaseImage = lambda number: None) -> int:
        """Roll `service` back to release `to` (default: the newest earlier good one):
        a new release carrying the old spec and secrets, rolled out with a rolling update
        (the target is chosen by `mso.releases.rollback`, the rule of every engine;
        `image_of`: the code each release ran, its image or source digest)."""
        store = self.d.store
        want = store.desired().get(service)
        if want is None or want.kind != "service":
            raise KeyError(service)
        current = store.release(service, want.release)
        assert current is not None
        target = rollback_target(store.releases(service), current, to, image_of)
        if self.active(service) is not None:
            self.abort(service)
            want = store.desired()[service]
        secrets = store.release_secrets(service, target.number)
        new = store.add_release(service, target.spec_hash, target.spec, secrets,
                                author or "mso", f"rollback to release {target.number}")
        store.set_desired(dataclasses.replace(want, release=new.number))
        store.add_event("release.created", f"release {new.number}: rollback to release "
                        f"{target.number}", service,
                        data={"release": new.number, "rollback_to": target.number})
        self.begin(service, want.release, new.number, strategy="rolling")
        return new.number

    def command(self, action: str, service: str) -> dict[str, Any]:
        """`mso rollout ACTION SERVICE` on any engine: promote, abort, pause or resume
        (anything else, e.g. status, changes nothing); returns the status afterwards."""
        if action == "promote":
            self.promote(service)
        elif action == "abort":
            self.abort(service)
        elif action in ("pause", "resume"):
            self.pause(service, action == "pause")
        return self.status(service)

    def status(self, service: str) -> dict[str, Any]:
        if service not in self.d.store.desired():
            raise KeyError(service)
        state = self.get(service)
        if state is None:
            return {"service": service, "strategy": None, "phase": None, "step": None,
                    "steps": None, "weight": None, "analysis": {}, "next": []}
        return _status(state, self.spec(service, state.to_release), self._clock())


def _preview_analysis(spec: dict[str, Any]) -> float | None:
    """How long a blue/green preview is analysed (None: no analysis, no `load`)."""
    analysis = spec.get("analysis") or {}
    if not analysis.get("load"):
        return None
    return float(analysis.get("duration") or BLUE_GREEN_ANALYSIS)


def _preview_analysed(state: RolloutState) -> bool:
    """A blue/green preview whose analysis began and has not ended (passed: Paused)."""
    return (state.strategy == "blue_green" and state.promoted_at is None
            and state.step_started > 0 and state.phase != Phase.PAUSED)


def _min_samples(spec: dict[str, Any]) -> int:
    return int((spec.get("analysis") or {}).get("min_samples", 50))


def analysis_needs(analysis: dict[str, Any], min_samples: int) -> str | None:
    """What a sample-starved analysis still needs, from a verdict's numbers, e.g.
    `canary has 3 of 50 requests needed, stable 0 of 50`; None once both have enough."""
    stable = int((analysis.get("stable") or {}).get("requests") or 0)
    canary_requests = int((analysis.get("canary") or {}).get("requests") or 0)
    if min(stable, canary_requests) >= min_samples:
        return None
    return (f"canary has {canary_requests} of {min_samples} requests needed, "
            f"stable {stable} of {min_samples}")


def _numbers(outcome: Outcome) -> dict[str, Any]:
    data = outcome.to_dict()
    return {"verdict": outcome.verdict, "reason": outcome.reason, "stable": data.get("stable"),
            "canary": data.get("canary"), "errors": data.get("errors"),
            "latency_p99": data.get("latency_p99"),
            "latency_p50": data.get("latency_p50"), "alpha": data.get("alpha"),
            "providers": data.get("providers")}


def _event_data(state: RolloutState, steps: list[dict[str, Any]]) -> dict[str, Any]:
    # `step`: the 1-based number of the current step after the decision, as `mso rollout
    # status` shows it (None for strategies without steps).
    return {"phase": state.phase.value, "step": canary.step_number(state, steps),
            "weight": state.weight,
            "from": state.from_release, "to": state.to_release,
            "analysis": state.analysis or None}


# -- status ---------------------------------------------------------------------------
# `mso rollout status` on every engine (the local API, the Swarm controller's socket and
# the Kubernetes CLI all call `RolloutController.status`). It shows only what applies to
# the strategy: a rolling/recreate update has no steps, weights, thresholds nor analysis
# (it shows how many replicas are updated); blue/green shows its preview and how long the
# previous release is kept; a canary shows its steps with 1-based numbers (the same as in
# events), its weight and its analysis. `next` lists, as sentences, the ways forward from
# where the rollout stands (the table prints them), and `deadline_at` says when the
# progress deadline ends a rollout that waits by itself (None when it does not).


def _clock(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S")


def human_seconds(seconds: float) -> str:
    """`12s`, `2m30s`, `1h5m`: a duration as people read it (rounded up to a second)."""
    total = max(0, math.ceil(seconds - 1e-9))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


def describe_step(step: dict[str, Any]) -> str:
    kind = canary.step_kind(step)
    if kind == "set_weight":
        return f"weight {int(step['set_weight'])}%"
    duration = canary.step_duration(step)
    if kind == "pause":
        return "pause until promoted" if duration is None else f"pause {human_seconds(duration)}"
    return f"analysis {human_seconds(duration or 0.0)}"


def _step_left(state: RolloutState, steps: list[dict[str, Any]], now: float) -> float | None:
    """Seconds left in the current timed step (frozen while the user pauses it)."""
    if not state.active or state.promoting or state.step >= len(steps):
        return None
    duration = canary.step_duration(steps[state.step])
    if duration is None:
        return None
    if state.step_started <= 0.0:
        return duration
    return max(0.0, duration - canary.step_elapsed(state, now))


def _held(state: RolloutState, steps: list[dict[str, Any]]) -> bool:
    """A canary analysis whose duration ended without a verdict to move on."""
    return (state.phase == Phase.INCONCLUSIVE and state.step < len(steps)
            and canary.step_kind(steps[state.step]) == "analysis")


def _deadline_at(state: RolloutState, steps: list[dict[str, Any]],
                 deadline: float, analysis_for: float | None = None) -> float | None:
    """When the progress deadline ends the rollout unless it progresses; None when the
    rollout is not waiting by itself (planned pauses, the user's pause, promotion)."""
    if not state.active or state.paused_by_user or state.promoting:
        return None
    if state.waiting_since is not None:
        return state.waiting_since + deadline
    if state.strategy == "canary" and _held(state, steps) and state.step_started > 0:
        return state.step_started + (canary.step_duration(steps[state.step]) or 0.0) + deadline
    if state.strategy == "blue_green" and state.phase == Phase.INCONCLUSIVE \
            and state.step_started > 0:
        return state.step_started + (analysis_for or 0.0) + deadline
    return None


def _current_step(state: RolloutState, steps: list[dict[str, Any]], now: float) -> str | None:
    if not state.active:
        return None
    if state.promoting:
        return f"promoting: stable replicas move to release {state.to_release}"
    if state.step >= len(steps):
        return None
    text = describe_step(steps[state.step])
    left = _step_left(state, steps, now)
    if _held(state, steps):
        return f"{text} (done; held: inconclusive)"
    if state.waiting_since is not None:
        return f"{text} (waiting for the canary replicas to be ready)"
    if left is not None:
        return f"{text} ({human_seconds(left)} left{', paused' if state.paused_by_user else ''})"
    if state.paused_by_user:
        return f"{text} (paused)"
    return text


def _ways_forward(state: RolloutState, spec: dict[str, Any], now: float,
                  deadline_at: float | None) -> list[str]:
    """What the user can do from here, most likely first."""
    if not state.active:
        return []
    svc, steps = state.service, spec.get("steps") or []
    deadline = float(spec.get("progress_deadline", 600.0))
    abort = f"`mso rollout abort {svc}` rolls back to release {state.from_release}"
    out: list[str] = []
    if state.paused_by_user:
        left = _step_left(state, steps, now) if state.strategy == "canary" else None
        more = f" (the step has {human_seconds(left)} left)" if left is not None else ""
        out += [f"`mso rollout resume {svc}` continues{more}", abort]
        return out
    if state.waiting_since is not None:
        what = {"canary": "canary replicas", "blue_green": "preview replicas"}.get(
            state.strategy, "new replicas")
        if state.strategy in ("rolling", "recreate"):
            out.append(f"`mso ps` and `mso logs {svc}` show how the new replicas are doing")
        else:
            out.append(f"the {what} are not ready yet: `mso ps` and `mso logs {svc}` "
                       "show why")
            out.append(abort)
    elif state.strategy == "canary" and _held(state, steps):
        if analysis_needs(state.analysis or {}, _min_samples(spec)) is not None:
            out.append("send traffic through the gateway, or pin requests to the canary "
                       "with the header `x-mso-route: canary`")
        for provider in (state.analysis or {}).get("providers") or []:
            if provider.get("kind") != "proxy" and provider.get("phase") != "pass":
                out.append(f"{provider.get('name')} ({provider.get('target')}) has not "
                           f"passed ({provider.get('reason')}): check that it answers and "
                           "that its query returns a number for both subsets")
        out.append(f"`mso rollout promote {svc}` skips the analysis and promotes "
                   f"release {state.to_release} now")
        out.append(abort)
    elif state.strategy == "canary" and state.phase == Phase.PAUSED \
            and state.step < len(steps):
        number = state.step + 1
        follow = (f"continues with step {number + 1}" if number < len(steps)
                  else f"promotes release {state.to_release}")
        out += [f"`mso rollout promote {svc}` {follow}", abort]
    elif state.strategy == "blue_green" and state.promoted_at is None \
            and state.phase in (Phase.INCONCLUSIVE, Phase.PROGRESSING) \
            and state.step_started > 0:
        if state.phase == Phase.INCONCLUSIVE:
            out.append("the preview's analysis needs more requests: raise "
                       "`analysis.load.rate`, or check that the preview answers")
        out += [f"`mso rollout promote {svc}` skips the analysis and switches all traffic "
                f"to release {state.to_release}", abort]
    elif state.strategy == "blue_green" and state.promoted_at is None \
            and state.phase == Phase.PAUSED:
        port = spec.get("preview_port")
        if port:
            out.append(f"try release {state.to_release} on the preview port {port}")
        out += [f"`mso rollout promote {svc}` switches all traffic to release "
                f"{state.to_release}", abort]
    elif state.strategy == "blue_green" and state.promoted_at is not None:
        until = state.promoted_at + float(spec.get("keep_previous", 300.0))
        out.append(f"`mso rollout abort {svc}` switches traffic straight back to release "
                   f"{state.from_release} until {_clock(until)} (keep_previous)")
    if deadline_at is not None:
        when = ("if no more replicas become ready, " if state.waiting_since is not None
                else "otherwise ")
        out.append(f"{when}the progress deadline ({human_seconds(deadline)}) fails the "
                   f"rollout and rolls it back at {_clock(deadline_at)}, in "
                   f"{human_seconds(deadline_at - now)}")
    return out


def _status(state: RolloutState, spec: dict[str, Any], now: float) -> dict[str, Any]:
    steps: list[dict[str, Any]] = list(spec.get("steps") or [])
    deadline = float(spec.get("progress_deadline", 600.0))
    deadline_at = _deadline_at(state, steps, deadline, _preview_analysis(spec))
    out: dict[str, Any] = {
        "service": state.service, "strategy": state.strategy, "phase": state.phase.value,
        "from_release": state.from_release, "to_release": state.to_release,
        "reason": state.reason, "started": state.started, "finished": state.finished,
        "paused": state.paused_by_user, "promoting": state.promoting,
        "step": None, "steps": None, "weight": None,
        "progress_deadline": deadline, "deadline_at": deadline_at,
        "next": _ways_forward(state, spec, now, deadline_at)}
    if state.strategy in ("rolling", "recreate"):
        out["replicas"] = {"updated": state.updated, "wanted": state.wanted}
        return out
    out["weight"] = state.weight
    if state.strategy == "blue_green":
        keep = float(spec.get("keep_previous", 300.0))
        out.update({"preview_port": spec.get("preview_port"),
                    "promoted_at": state.promoted_at, "keep_previous": keep,
                    "previous_until": None if state.promoted_at is None
                    else state.promoted_at + keep})
        if state.analysis:
            out["analysis"] = dict(state.analysis)
        return out
    analysis = dict(state.analysis or {})
    left = _step_left(state, steps, now)
    out.update({
        "step": canary.step_number(state, steps), "steps": len(steps),
        "plan": [describe_step(step) for step in steps],
        "current_step": _current_step(state, steps, now),
        "step_left": None if left is None else round(left, 1),
        "thresholds": _redacted(spec.get("analysis") or {}),
        "analysis": {"verdict": analysis.get("verdict", "inconclusive"),
                     "stable": analysis.get("stable") or {},
                     "canary": analysis.get("canary") or {},
                     "reason": analysis.get("reason", "no analysis yet"),
                     "errors": analysis.get("errors"), "latency_p99": analysis.get("latency_p99"),
                     "latency_p50": analysis.get("latency_p50"),
                     "alpha": analysis.get("alpha"),
                     "providers": analysis.get("providers") or []}})
    return out


def _redacted(thresholds: dict[str, Any]) -> dict[str, Any]:
    """The analysis settings as shown: providers' URLs without their credentials."""
    out = dict(thresholds)
    providers = []
    for item in out.get("providers") or []:
        shown = {}
        for kind, settings in dict(item).items():
            if settings is None:  # the model's other kind of provider, unset
                continue
            settings = dict(settings)
            if "url" in settings:
                settings["url"] = redact_url(str(settings["url"]))
            shown[kind] = settings
        providers.append(shown)
    if "providers" in out:
        out["providers"] = providers
    if out.get("load"):
        # Header values may be credentials for the service's own endpoints: names only.
        load = dict(out["load"])
        load["headers"] = {name: "***" for name in dict(load.get("headers") or {})}
        out["load"] = load
    return out


def stored_status(store: Store, service: str) -> dict[str, Any]:
    """`mso rollout status` from the store alone (no engine running): the last rollout of
    `service` as it was recorded. KeyError when the service has never had a release."""
    raw = store.get_rollout(service)
    if raw is None:
        if store.latest_release(service) is None:
            raise KeyError(service)
        return {"service": service, "strategy": None, "phase": None, "step": None,
                "weight": None, "analysis": {}}
    state = RolloutState.from_json(raw)
    rel = store.release(service, state.to_release)
    spec = dict((rel.spec["model"].get("rollout") or {}) if rel else {})
    return _status(state, spec, time.time())
