"""Synthetic load for canary analysis (`rollout.analysis.load`).

A service that gets little or no user traffic never collects the judge's
``min_samples``, so its canary stays inconclusive until the progress deadline rolls it
back. With ``analysis.load`` mso sends requests of its own, at ``rate`` per second *to
each subset* (stable and canary, or the blue/green stable and preview), straight to the
subsets' replicas: they never pass through mso's proxy, so they are not counted as user
traffic (dashboard, ``mso metrics``, the proxy's Prometheus exposition). Each answer's
status (5xx, a refused connection and a timeout are errors) and latency go into
per-subset :class:`~mso.analysis.windows.SubsetWindow` increments with the proxy's
latency buckets, which the controller adds to the proxy's windows before they reach the
same :class:`~mso.analysis.judge.CanaryJudge`: the judge's tests count Bernoulli
outcomes, and a synthetic request is one more such outcome, so its guarantee holds
unchanged.

The generator sees the replicas only through a ``targets`` callable (subset -> base
URLs, e.g. ``http://127.0.0.1:41234``) and sends through a narrow :class:`Sender`
(``httpx`` in production, a fake in tests). Requests go round-robin over the subset's
replicas and over every (method, path) pair. At most ``rate`` requests per subset are
in flight; a tick that finds its subset saturated skips its request (a hung replica
does not make mso pile up connections) and counts it as ``skipped``.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from mso.analysis.windows import SubsetWindow

__all__ = ["HttpxSender", "LoadSpec", "LoadTotals", "Sender", "SyntheticLoad",
           "LATENCY_BUCKETS_MS", "merge_windows"]

#: The proxy's latency buckets (mso.proxy.metrics.LATENCY_BUCKETS_MS; a test keeps them
#: equal): synthetic and user windows must share bounds to be summed for the judge.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000,
)

#: The header every synthetic request carries, so a service's own logs can tell them apart.
SYNTHETIC_HEADER = "x-mso-synthetic"


@dataclass(frozen=True)
class LoadSpec:
    """``rollout.analysis.load`` as validated by the manifest (mso.spec.rollout)."""

    rate: float = 10.0
    paths: tuple[str, ...] = ("/",)
    methods: tuple[str, ...] = ("GET",)
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 2.0

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any]) -> LoadSpec:
        return cls(rate=float(raw.get("rate", 10.0)),
                   paths=tuple(str(p) for p in raw.get("paths") or ("/",)),
                   methods=tuple(str(m).upper() for m in raw.get("methods") or ("GET",)),
                   headers={str(k): str(v) for k, v in dict(raw.get("headers") or {}).items()},
                   timeout=float(raw.get("timeout", 2.0)))


class Sender(Protocol):
    """Sends one request; returns its HTTP status or raises (connection refused, timeout)."""

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   timeout: float) -> int: ...

    async def close(self) -> None: ...


class HttpxSender:
    """The production :class:`Sender`: one pooled ``httpx.AsyncClient``."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(follow_redirects=False)

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   timeout: float) -> int:
        response = await self._client.request(method, url, headers=dict(headers),
                                              timeout=timeout)
        return response.status_code

    async def close(self) -> None:
        await self._client.aclose()


@dataclass
class LoadTotals:
    """What one subset was sent since the load started (for events and status)."""

    sent: int = 0
    errors: int = 0
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # "2xx" / "5xx" / "error"

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "errors": self.errors, "skipped": self.skipped,
                "statuses": dict(self.statuses)}


class _Window:
    """Increments since the last drain."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)

    def add(self, failed: bool, latency_ms: float) -> None:
        self.requests += 1
        self.errors += int(failed)
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1

    def window(self) -> SubsetWindow:
        if not self.requests:
            return SubsetWindow(0, 0)
        return SubsetWindow(self.requests, self.errors, LATENCY_BUCKETS_MS, tuple(self.counts))


def merge_windows(a: SubsetWindow, b: SubsetWindow) -> SubsetWindow:
    """The sum of two increments of one subset (user and synthetic). Bounds must agree
    when both have latencies (both use the proxy's buckets)."""
    if not b.latency_counts:
        return SubsetWindow(a.requests + b.requests, a.errors + b.errors,
                            a.latency_buckets_ms, a.latency_counts)
    if not a.latency_counts:
        return SubsetWindow(a.requests + b.requests, a.errors + b.errors,
                            b.latency_buckets_ms, b.latency_counts)
    if a.latency_buckets_ms != b.latency_buckets_ms:
        raise ValueError("latency bucket bounds differ between user and synthetic windows")
    return SubsetWindow(a.requests + b.requests, a.errors + b.errors, a.latency_buckets_ms,
                        tuple(x + y for x, y in zip(a.latency_counts, b.latency_counts,
                                                    strict=True)))


_BACKGROUND: set[asyncio.Task[None]] = set()


class SyntheticLoad:
    """Sends ``spec`` load to each subset that ``targets()`` names (see the module doc).

    ``subsets`` maps the judge's names to the engine's subsets: ``{"stable": "stable",
    "canary": "canary"}`` for a canary, ``{"stable": "stable", "canary": "preview"}``
    for blue/green."""

    def __init__(self, spec: LoadSpec, targets: Callable[[str], Sequence[str]],
                 subsets: Mapping[str, str] | None = None, sender: Sender | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self._targets = targets
        self.subsets = dict(subsets or {"stable": "stable", "canary": "canary"})
        self._sender = sender
        self._monotonic = monotonic
        self._requests = itertools.cycle([(m, p) for m in spec.methods for p in spec.paths])
        self._turn = {name: 0 for name in self.subsets}
        self._inflight = {name: 0 for name in self.subsets}
        self._windows = {name: _Window() for name in self.subsets}
        self.totals = {name: LoadTotals() for name in self.subsets}
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._headers = {**spec.headers, SYNTHETIC_HEADER: "1"}

    # -- the judge's side -------------------------------------------------------------
    def drain(self) -> tuple[SubsetWindow, SubsetWindow]:
        """(stable, canary) increments since the previous drain."""
        out = []
        for name in ("stable", "canary"):
            out.append(self._windows[name].window())
            self._windows[name] = _Window()
        return out[0], out[1]

    def summary(self) -> dict[str, Any]:
        """Totals per subset (the judge's names), for events and `mso rollout status`."""
        return {name: totals.to_dict() for name, totals in self.totals.items()}

    # -- sending -----------------------------------------------------------------------
    def fire(self) -> list[asyncio.Task[None]]:
        """Start one request to each subset (those with a replica and room in flight)."""
        started = []
        for name, subset in self.subsets.items():
            urls = list(self._targets(subset))
            if not urls:
                continue
            if self._inflight[name] >= max(1, int(self.spec.rate)):
                self.totals[name].skipped += 1
                continue
            base = urls[self._turn[name] % len(urls)]
            self._turn[name] += 1
            method, path = next(self._requests)
            task = asyncio.ensure_future(self._one(name, method, base.rstrip("/") + path))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            started.append(task)
        return started

    async def _one(self, name: str, method: str, url: str) -> None:
        sender = self._sender
        if sender is None:
            sender = self._sender = HttpxSender()
        self._inflight[name] += 1
        began = self._monotonic()
        totals = self.totals[name]
        try:
            status = await sender.send(method, url, self._headers, self.spec.timeout)
            label = f"{status // 100}xx"
            failed = status >= 500
        except Exception:  # refused, reset, timed out: the replica failed this request
            label, failed = "error", True
        finally:
            self._inflight[name] -= 1
        latency_ms = (self._monotonic() - began) * 1000.0
        totals.sent += 1
        totals.errors += int(failed)
        totals.statuses[label] = totals.statuses.get(label, 0) + 1
        self._windows[name].add(failed, latency_ms)

    async def _run(self) -> None:
        period = 1.0 / self.spec.rate
        next_at = self._monotonic()
        while True:
            self.fire()
            next_at += period
            delay = next_at - self._monotonic()
            if delay < -1.0:  # fell far behind (a stalled loop): do not burst to catch up
                next_at = self._monotonic()
            await asyncio.sleep(max(0.0, delay))

    def start(self) -> None:
        """Start sending in the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
            _BACKGROUND.add(self._task)
            self._task.add_done_callback(_BACKGROUND.discard)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stop(self) -> None:
        """Stop sending; requests in flight are cancelled, the client closed."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            if task.get_loop() is loop:
                task.cancel()
        self._task = None
        sender, self._sender = self._sender, None
        if sender is not None and loop is not None:
            closing = asyncio.ensure_future(sender.close())
            _BACKGROUND.add(closing)
            closing.add_done_callback(_BACKGROUND.discard)
