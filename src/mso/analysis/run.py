"""One canary analysis: mso's proxy and the manifest's providers, combined into one verdict.

The rollout controller keeps one :class:`AnalysisRun` per rollout and calls
:meth:`AnalysisRun.poll` on every tick. Every source is a
:class:`~mso.analysis.providers.MetricProvider`: mso's proxy (always, first) and each
entry of ``rollout.analysis.providers`` (Prometheus, webhooks).

How the verdicts combine (:func:`combine`, a pure function)
------------------------------------------------------------
* **Any fail fails**, at any time, and stays failed for the rest of the run (the
  judge's failures are sticky too): the canary is rolled back with the failing
  provider's reason (``prometheus 1: ...``).
* **Pass needs every source to pass at the end** of the analysis duration: the proxy's
  judge concludes pass, and each provider's *latest measurement taken after the
  duration ended* (a sample started with ``final=True`` for the current step) passes.
  A measurement from earlier in the analysis does not count: a Prometheus rate that
  was fine at the start of a step says little about its end.
* **Anything else is inconclusive**: a provider with no measurement yet, or whose
  latest one is inconclusive (no data, NaN, error, timeout, unreachable). The
  controller then holds the rollout and re-polls every tick; held longer than
  ``progress_deadline`` it fails and rolls back. Inconclusive never promotes.

Why not feed Prometheus numbers into the judge's e-processes? The judge's tests are
exact for what the proxy counts: Bernoulli outcomes (request failed or not, slower than
a threshold or not) with known sample sizes, which is what makes them anytime-valid. A
PromQL result is one number already aggregated by the user's query (a ratio of rates
over some window, a quantile estimate, a gauge) whose sampling distribution and sample
size mso does not know; putting it into a likelihood ratio would claim an error
guarantee that does not hold. So a provider is a **deterministic guardrail** on the
user's own statistic, with the stable as the control (see
:mod:`mso.analysis.providers`), combined with the judge by AND for pass and OR for
fail. The judge keeps its guarantee (a healthy canary is rolled back by the judge with
probability at most ``alpha``); by the union bound the whole analysis rolls a healthy
canary back with probability at most ``alpha`` plus the chance that one of the user's
guardrails trips on a healthy canary, which mso cannot bound: it depends on the
query. Smoothing therefore belongs in the query (``rate(...[1m])``, ``increase``),
where the user decides how much noise a single reading may carry.

Sampling. The proxy is sampled inline (a local socket, or the gateway). The providers
are sampled in background tasks, one at a time per provider: a poll harvests a finished
sample and starts the next one, so a slow or hung Prometheus never holds up the
engine's reconcile loop (the rollout tick runs inside it); its timeout (5 s) bounds
how long a sample may take, and a timed-out sample is inconclusive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import httpx

from mso.analysis.judge import Verdict, VerdictKind
from mso.analysis.providers import (
    Measurement,
    PrometheusProvider,
    ProxyMetricsProvider,
    RolloutContext,
    WebhookProvider,
    scrub,
)

__all__ = ["AnalysisRun", "Outcome", "ProviderReport", "combine", "providers_from_spec",
           "request_urls"]


class NamedProvider(Protocol):
    """A provider that can say what it is (for `mso rollout status`, credentials
    redacted)."""

    kind: str

    def describe(self) -> str: ...

    async def sample(self, final: bool = False) -> Measurement: ...


@dataclass(frozen=True)
class ProviderReport:
    """One source's last measurement, as `mso rollout status` shows it."""

    name: str
    kind: str
    target: str
    phase: VerdictKind | None  # None: no measurement yet
    reason: str
    value: float | None = None
    stable_value: float | None = None
    at: float | None = None
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    """The combined verdict of one poll, with every source's last measurement."""

    verdict: VerdictKind
    reason: str
    judge: Verdict | None
    providers: tuple[ProviderReport, ...]
    changed: tuple[ProviderReport, ...] = ()  # providers (not the proxy) whose phase changed

    def to_dict(self) -> dict[str, Any]:
        """The judge's numbers (when it has any), the combined verdict and reason, and
        ``providers``: what the controller stores as the rollout's analysis."""
        data = self.judge.to_dict() if self.judge is not None else {}
        data.update(verdict=self.verdict, reason=self.reason,
                    providers=[p.to_dict() for p in self.providers])
        return data


def combine(proxy: Measurement, others: Sequence[tuple[str, Measurement | None, bool]],
            final: bool) -> tuple[VerdictKind, str]:
    """The combined verdict (pure). ``others``: (name, latest measurement or None,
    whether that measurement was taken after the analysis duration ended)."""
    fails = ([proxy.reason] if proxy.phase == "fail" else []) + [
        f"{name}: {m.reason}" for name, m, _ in others if m is not None and m.phase == "fail"]
    if fails:
        return "fail", "; ".join(fails)
    waiting: list[str] = [] if proxy.phase == "pass" else [proxy.reason]
    for name, m, fresh in others:
        if m is None:
            waiting.append(f"{name}: no measurement yet")
        elif m.phase == "inconclusive":
            waiting.append(f"{name}: {m.reason}")
        elif final and not fresh:
            waiting.append(f"{name}: waiting for a measurement taken after the analysis "
                           "duration ended")
    if not final:
        return "inconclusive", "; ".join(waiting) or \
            "no regression detected so far; analysis continues"
    if waiting:
        return "inconclusive", "; ".join(waiting)
    passed = [proxy.reason] + [f"{name}: {m.reason}" for name, m, _ in others if m is not None]
    return "pass", "; ".join(passed)


def providers_from_spec(items: Sequence[Mapping[str, Any]], context: RolloutContext,
                        transport: httpx.AsyncBaseTransport | None = None
                        ) -> list[tuple[str, NamedProvider]]:
    """The manifest's ``rollout.analysis.providers`` (validated dicts) as providers,
    named ``prometheus 1``, ``webhook 2``... by their position in the list; ``transport``:
    how their requests travel (None: directly; the gateway on Swarm and Kubernetes)."""
    out: list[tuple[str, NamedProvider]] = []
    for number, item in enumerate(items, start=1):
        prom = item.get("prometheus")
        hook = item.get("webhook")
        if prom:
            out.append((f"prometheus {number}", PrometheusProvider(
                str(prom["url"]), str(prom["query"]), float(prom["max"]), context,
                transport=transport)))
        elif hook:
            out.append((f"webhook {number}", WebhookProvider(str(hook["url"]), {
                "service": context.service, "stable_release": context.stable_release,
                "canary_release": context.canary_release}, transport=transport)))
    return out


def request_urls(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """The URLs the providers of ``items`` request, without credentials or query: what
    the gateway's ``fetch`` allow list names (:mod:`mso.proxy.fetch`)."""
    made = providers_from_spec(items, RolloutContext("", 0, 0))
    return [str(getattr(provider, "request_url")) for _, provider in made]


class _Slot:
    """One provider's sampling state within a run."""

    def __init__(self, name: str, provider: NamedProvider) -> None:
        self.name = name
        self.provider = provider
        self.task: asyncio.Task[Measurement] | None = None
        self.task_tag: tuple[bool, int, float] = (False, -1, 0.0)  # final, step, started
        self.last: Measurement | None = None
        self.last_tag: tuple[bool, int, float] = (False, -1, 0.0)
        self.failed: Measurement | None = None
        self.reported: VerdictKind | None = None

    def report(self) -> ProviderReport:
        m = self.failed or self.last
        target = self.provider.describe()
        if m is None:
            return ProviderReport(self.name, self.provider.kind, target, None,
                                  "no measurement yet")
        return ProviderReport(self.name, self.provider.kind, target, m.phase, m.reason,
                              m.value, m.stable_value, self.last_tag[2], self.last_tag[0])


_BACKGROUND: set[asyncio.Task[Measurement]] = set()  # strong references while they run


class AnalysisRun:
    """The analysis of one rollout: proxy judge plus providers (see the module doc)."""

    def __init__(self, proxy: ProxyMetricsProvider,
                 providers: Sequence[tuple[str, NamedProvider]] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.proxy = proxy
        self._slots = [_Slot(name, provider) for name, provider in providers]
        self._clock = clock

    @property
    def names(self) -> list[str]:
        return [slot.name for slot in self._slots]

    async def poll(self, final: bool, step: int) -> Outcome:
        """Sample the proxy, harvest finished provider samples and start the next ones,
        and combine. ``step`` is the rollout's current step index: a sample counts as
        final only for the step it was started in."""
        measured = await self.proxy.sample(final=final)
        changed: list[ProviderReport] = []
        for slot in self._slots:
            self._harvest(slot)
            if slot.task is None:
                self._start(slot, final, step)
            latest = slot.failed or slot.last
            if latest is not None and latest.phase != slot.reported:
                slot.reported = latest.phase
                changed.append(slot.report())
        others = [(slot.name, slot.failed or slot.last,
                   slot.last_tag[0] and slot.last_tag[1] == step) for slot in self._slots]
        verdict, reason = combine(measured, others, final)
        proxy_report = ProviderReport(
            "proxy", self.proxy.kind, self.proxy.describe(), measured.phase, measured.reason,
            measured.value,
            None if measured.verdict is None else measured.verdict.stable.error_rate,
            self._clock(), final)
        return Outcome(verdict, reason, measured.verdict,
                       (proxy_report, *(slot.report() for slot in self._slots)),
                       tuple(changed))

    def _start(self, slot: _Slot, final: bool, step: int) -> None:
        if isinstance(slot.provider, WebhookProvider):
            slot.provider.context["step"] = step + 1
        task = asyncio.ensure_future(slot.provider.sample(final=final))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        slot.task, slot.task_tag = task, (final, step, self._clock())

    def _harvest(self, slot: _Slot) -> None:
        task = slot.task
        if task is None or not task.done():
            return
        slot.task = None
        if task.cancelled():  # its event loop ended (a test's asyncio.run): sample again
            return
        error = task.exception()
        if error is not None:
            url = str(getattr(slot.provider, "base_url", None) or
                      getattr(slot.provider, "url", ""))
            text = f"provider error: {error!r}"
            measurement = Measurement("inconclusive", scrub(text, url) if url else text)
        else:
            measurement = task.result()
        slot.last, slot.last_tag = measurement, slot.task_tag
        if measurement.phase == "fail" and slot.failed is None:
            slot.failed = measurement

    async def settle(self) -> None:
        """Wait for the samples in flight (for tests: the controller never waits)."""
        tasks = [slot.task for slot in self._slots if slot.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    def close(self) -> None:
        """The rollout ended: drop the samples in flight (they end by their timeout;
        cancelled here when this is their event loop)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for slot in self._slots:
            if slot.task is not None and slot.task.get_loop() is loop:
                slot.task.cancel()
            slot.task = None
