"""What the dashboard's pages show, gathered through the app's `Source` (mso.web.source).

Every figure comes from code the CLI already runs, so the dashboard and the CLI cannot
disagree: replicas from `mso ps`'s view, routes and the gateway from `mso endpoints`',
releases from `views.releases`, a rollout's steps and the judge's numbers from the
rollout controller's status (what `mso rollout status` prints), the changed keys
between releases from `mso.releases.apply.spec_changes` (names only for secrets and
config files), and per-subset traffic windows from the judge's own
`window_from_snapshots` and `histogram_quantile`.

The only state kept here is the `Sampler`'s short history of traffic: the proxy counts
cumulatively, so a request rate, an error rate or a p99 "now" needs the difference of
two snapshots. It takes one a second (the charts' resolution) while the dashboard is
served and keeps five minutes per service and subset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mso.analysis.latency import histogram_quantile
from mso.analysis.windows import SnapshotError, window_from_snapshots
from mso.api import views
from mso.releases.apply import spec_changes
from mso.store.db import Store
from mso.web.source import Source

log = logging.getLogger("mso.web")

SAMPLE_PERIOD = 1.0
HISTORY = 300  # points per service and subset: five minutes at one a second
SUMMARY_WINDOW = 10.0  # seconds summed for the overview's rate, error rate and p99
KIND_SCAN = 5000  # newest events searched when filtering by kind
VALUE_WIDTH = 120  # characters of an old or new value shown in a release diff


@dataclass(frozen=True)
class Point:
    """One second of one subset's traffic (increments since the previous snapshot)."""

    t: float
    seconds: float
    requests: int
    errors: int
    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), **_figures(self.requests, self.errors, self.seconds,
                                                   self.bounds, self.counts)}


def _figures(requests: int, errors: int, seconds: float, bounds: tuple[float, ...],
             counts: tuple[int, ...] | list[int]) -> dict[str, Any]:
    p50 = histogram_quantile(bounds, counts, 0.5) if counts else None
    p99 = histogram_quantile(bounds, counts, 0.99) if counts else None
    return {"requests": requests, "errors": errors,
            "rate": round(requests / seconds, 2) if seconds > 0 else None,
            "error_rate": round(errors / requests, 4) if requests else None,
            "p50_ms": None if p50 is None else round(p50, 2),
            "p99_ms": None if p99 is None else round(p99, 2)}


class Sampler:
    """Per service and subset traffic, one point a second, from the proxy's snapshots."""

    def __init__(self, fetch: Callable[[], Awaitable[Mapping[str, Any]]],
                 clusters: Callable[[], Mapping[str, str]],
                 clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._clusters = clusters  # cluster name -> service
        self._clock = clock
        self._prev: Mapping[str, Any] | None = None
        self._prev_t = 0.0
        self.history: dict[tuple[str, str], deque[Point]] = {}
        self.error = ""

    async def run(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(SAMPLE_PERIOD)

    async def sample_once(self) -> None:
        try:
            reply = await self._fetch()
        except Exception as exc:  # the proxy restarting or gone: a gap, not a crash
            self.error = f"proxy metrics unavailable: {exc}"
            return
        snapshot = reply.get("metrics", reply) if isinstance(reply, Mapping) else {}
        now = self._clock()
        prev, prev_t = self._prev, self._prev_t
        self._prev, self._prev_t = snapshot, now
        if prev is None:
            return
        self.error = ""
        merged: dict[tuple[str, str], list[Any]] = {}
        clusters = snapshot.get("clusters", {})
        for cluster, service in self._clusters().items():
            subsets = set((clusters.get(cluster) or {}).get("subsets", {}))
            for subset in sorted(subsets):
                try:
                    w = window_from_snapshots(prev, snapshot, cluster, subset)
                except (SnapshotError, ValueError) as exc:
                    self.error = f"unusable proxy snapshot: {exc}"
                    continue
                acc = merged.setdefault((service, subset), [0, 0, (), []])
                acc[0] += w.requests
                acc[1] += w.errors
                if w.latency_counts:
                    if not acc[3]:
                        acc[2], acc[3] = w.latency_buckets_ms, list(w.latency_counts)
                    elif acc[2] == w.latency_buckets_ms:
                        acc[3] = [a + b for a, b in zip(acc[3], w.latency_counts)]
        for key, (requests, errors, bounds, counts) in merged.items():
            self.history.setdefault(key, deque(maxlen=HISTORY)).append(
                Point(now, now - prev_t, requests, errors, tuple(bounds), tuple(counts)))

    def series(self, service: str, after: float = 0.0) -> dict[str, list[dict[str, Any]]]:
        """The points of each of `service`'s subsets newer than `after`."""
        return {subset: [p.to_json() for p in points if p.t > after]
                for (name, subset), points in sorted(self.history.items()) if name == service}

    def summary(self, service: str, subset: str | None = None,
                window: float = SUMMARY_WINDOW) -> dict[str, Any]:
        """Rate, error rate and p50/p99 over the last `window` seconds (all subsets when
        `subset` is None)."""
        since = self._clock() - window
        requests = errors = 0
        seconds = 0.0
        bounds: tuple[float, ...] = ()
        counts: list[int] = []
        for (name, sub), points in self.history.items():
            if name != service or (subset is not None and sub != subset):
                continue
            span = 0.0
            for p in points:
                if p.t <= since:
                    continue
                span += p.seconds
                requests += p.requests
                errors += p.errors
                if p.counts and not counts:
                    bounds, counts = p.bounds, list(p.counts)
                elif p.counts and p.bounds == bounds:
                    counts = [a + b for a, b in zip(counts, p.counts)]
            seconds = max(seconds, span)
        return _figures(requests, errors, seconds, bounds, counts)


# -- pages ------------------------------------------------------------------------------
async def overview(src: Source, sampler: Sampler) -> dict[str, Any]:
    ps, endpoints, weights = await asyncio.gather(src.ps(), src.endpoints(), src.weights())
    rows = []
    for name in src.services():
        replicas = [r for r in ps["replicas"] if r["service"] == name]
        rollout = await src.rollout_status(name)
        rows.append({
            "name": name, "release": src.release_of(name),
            "weights": {k: v for k, v in sorted(weights.get(name, {}).items())},
            "states": dict(sorted(Counter(r["state"] for r in replicas).items())),
            "replicas": len(replicas),
            "rollout": {k: rollout.get(k) for k in ("strategy", "phase", "step", "steps",
                                                     "weight", "to_release")},
            "traffic": sampler.summary(name),
            "address": (endpoints["services"].get(name) or {}).get("address")})
    return {"app": ps["app"], "gateway": endpoints["gateway"],
            "metrics": endpoints["metrics"], "routes": endpoints["routes"],
            "services": rows, "jobs": ps.get("jobs") or [], "waiting": ps.get("waiting") or [],
            "sampler_error": sampler.error, "engine": src.engine}


async def service(src: Source, name: str) -> dict[str, Any]:
    """One service's replicas and releases; KeyError for an unknown service."""
    if name not in src.services():
        raise KeyError(name)
    replicas = [r for r in (await src.ps())["replicas"] if r["service"] == name]
    return {"name": name, "release": src.release_of(name), "replicas": replicas,
            "releases": release_history(src.store(), name),
            "rollout": await src.rollout_status(name)}


def release_history(store: Store, name: str) -> list[dict[str, Any]]:
    """`views.releases` (newest first), each with what changed from the one before it:
    `{"key", "old", "new"}`, where secrets and config files say only "changed"."""
    kept = {r.number: r for r in store.releases(name)}
    out = []
    numbers = sorted(kept)
    for entry in views.releases(store, name):
        number = entry["number"]
        index = numbers.index(number)
        changes: list[dict[str, str]] = []
        if index > 0:
            old, new = kept[numbers[index - 1]], kept[number]
            keys = spec_changes(old.spec, new.spec, store.release_secrets(name, old.number),
                                store.release_secrets(name, new.number))
            changes = [_change(key, old.spec, new.spec) for key in keys]
        out.append({**entry, "changes": changes,
                    "previous": numbers[index - 1] if index > 0 else None})
    out.sort(key=lambda e: -int(e["number"]))
    return out


_MISSING = object()


def _change(key: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, str]:
    if key.startswith(("secrets.", "config.")):
        return {"key": key, "old": "", "new": "changed"}
    if key.startswith("env."):
        env_key = key[4:]
        before, after = (old.get("env") or {}).get(env_key, _MISSING), \
            (new.get("env") or {}).get(env_key, _MISSING)
    elif key == "cwd":
        before, after = old.get("cwd", _MISSING), new.get("cwd", _MISSING)
    else:
        before = _lookup(old.get("model") or {}, key)
        after = _lookup(new.get("model") or {}, key)
    return {"key": key, "old": _show(before), "new": _show(after)}


def _lookup(model: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(model, dict) or part not in model:
            return _MISSING
        model = model[part]
    return model


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 1] + "…"


async def logs(src: Source, name: str, tail: int = 20) -> dict[str, list[dict[str, Any]]]:
    """The last `tail` log lines of each of the service's replicas (already redacted)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for record in await src.log_tail(name, tail * 20):
        out.setdefault(str(record.get("replica")), []).append(record)
    return {replica: lines[-tail:] for replica, lines in sorted(out.items())}


def events(store: Store, service: str | None, kind: str | None, after: int = 0,
           limit: int = 200) -> list[dict[str, Any]]:
    """The newest `limit` events (oldest first) of `service`, whose type starts with
    `kind` (`rollout` matches rollout.started, rollout.promoted, ...)."""
    found = [e.as_json() for e in store.events(after, service, KIND_SCAN if kind else limit)]
    if kind:
        found = [e for e in found if str(e.get("type", "")).startswith(kind)]
    return found[-limit:]


def event_kinds(store: Store) -> list[str]:
    kinds = {str(e.as_json().get("type", "")).split(".")[0]
             for e in store.events(0, None, KIND_SCAN)}
    return sorted(k for k in kinds if k)


def waterfall(traces: list[list[dict[str, Any]]], service: str | None = None
              ) -> list[dict[str, Any]]:
    """The proxy's recent sampled traces (control op `traces`, newest first) as the
    Traces page draws them: per trace a heading and one row per span, each placed on the
    trace's time axis in percent (the server span first, its tries under it)."""
    out = []
    for spans in traces:
        if not spans:
            continue
        root = next((s for s in spans if s.get("kind") == "server"), spans[0])
        attrs = root.get("attrs") or {}
        if service and attrs.get("mso.service") != service:
            continue
        start = min(int(s["start"]) for s in spans)
        total = max(max(int(s["end"]) for s in spans) - start, 1)
        rows = []
        for s in sorted(spans, key=lambda s: (s is not root, int(s["start"]))):
            a = s.get("attrs") or {}
            left = (int(s["start"]) - start) * 100.0 / total
            width = max((int(s["end"]) - int(s["start"])) * 100.0 / total, 0.5)
            if s is root:
                label = f"{a.get('http.request.method', '')} {a.get('url.path', '')}"
            else:
                label = f"try {a.get('mso.try', '?')} → {a.get('mso.endpoint', '?')}"
            rows.append({
                "label": label, "client": s is not root, "error": bool(s.get("error")),
                "status": a.get("http.response.status_code") or s.get("message") or "–",
                "ms": round((int(s["end"]) - int(s["start"])) / 1e6, 3),
                "left": round(min(left, 99.5), 2), "width": round(min(width, 100.0 - left), 2),
                "span_id": s.get("span_id", ""),
                "title": ", ".join(f"{k}={v}" for k, v in sorted(a.items())),
            })
        out.append({"trace_id": root.get("trace_id", ""), "parent": root.get("parent", ""),
                    "t": start / 1e9, "ms": round(total / 1e6, 3),
                    "service": attrs.get("mso.service", ""),
                    "status": attrs.get("http.response.status_code") or "–",
                    "error": bool(root.get("error")), "rows": rows,
                    "tries": sum(1 for s in spans if s is not root)})
    return out


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
