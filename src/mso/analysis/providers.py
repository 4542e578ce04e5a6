"""Metric providers behind one narrow protocol: the mso proxy, Prometheus, and webhooks.

Every provider answers ``await provider.sample()`` with a :class:`Measurement`
(phase ``pass``/``fail``/``inconclusive``, a reason, an optional value and, for
the proxy, the judge's full :class:`~mso.analysis.judge.Verdict`). Providers
never raise for a broken backend: network errors, bad status codes and
malformed answers are translated at this boundary into ``inconclusive`` with a
reason, because an unreachable metrics source says nothing about the canary.

* :class:`ProxyMetricsProvider` diffs consecutive proxy SNAPSHOTs into
  per-subset windows and feeds the sequential :class:`CanaryJudge`.
* :class:`PrometheusProvider` runs an instant query (``GET /api/v1/query``);
  a value above ``max`` fails.
* :class:`WebhookProvider` POSTs a JSON context; a 2xx answer passes, any
  other status fails.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from mso.analysis.judge import AnalysisConfig, CanaryJudge, Verdict, VerdictKind
from mso.analysis.windows import SnapshotError, window_from_snapshots

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Measurement:
    """One provider sample, the same shape for every provider."""

    phase: VerdictKind
    reason: str
    value: float | None = None
    verdict: Verdict | None = None


class MetricProvider(Protocol):
    """A source of canary measurements, polled once per analysis interval."""

    async def sample(self, final: bool = False) -> Measurement:
        """Take one measurement; ``final`` marks the last poll of the analysis."""
        ...


class ProxyMetricsProvider:
    """Feeds the proxy's per-subset counters for ``cluster`` to a :class:`CanaryJudge`."""

    def __init__(
        self,
        fetch_snapshot: Callable[[], Awaitable[Mapping[str, Any]]],
        cluster: str,
        judge: CanaryJudge | None = None,
        config: AnalysisConfig | None = None,
    ) -> None:
        self._fetch = fetch_snapshot
        self.cluster = cluster
        self.judge = judge or CanaryJudge(config)
        self._prev: Mapping[str, Any] | None = None

    def reset(self) -> None:
        """Start the analysis over: new baseline snapshot, fresh judge state."""
        self._prev = None
        self.judge.reset()

    async def sample(self, final: bool = False) -> Measurement:
        try:
            snapshot = _unwrap(await self._fetch())
        except Exception as exc:  # foreign callable: any failure means "no data"
            return Measurement("inconclusive", f"proxy metrics unavailable: {exc!r}")
        prev, self._prev = self._prev, snapshot
        if prev is None and not final:
            return Measurement("inconclusive", "baseline snapshot taken; analysis starts now")
        try:
            stable = window_from_snapshots(prev, snapshot, self.cluster, "stable")
            canary = window_from_snapshots(prev, snapshot, self.cluster, "canary")
        except (SnapshotError, ValueError) as exc:
            return Measurement("inconclusive", f"unusable proxy snapshot: {exc}")
        if prev is None:
            verdict = self.judge.conclude()
        else:
            verdict = self.judge.observe(stable, canary, final=final)
        return Measurement(verdict.verdict, verdict.reason, verdict.canary.error_rate, verdict)


def _unwrap(reply: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept either a SNAPSHOT or the control socket's ``{"ok", "metrics"}`` reply."""
    if not isinstance(reply, Mapping):
        raise SnapshotError(f"snapshot is {type(reply).__name__}, not an object")
    if "metrics" in reply:
        if reply.get("ok") is False:
            raise SnapshotError(f"proxy refused: {reply.get('error')}")
        inner = reply["metrics"]
        if not isinstance(inner, Mapping):
            raise SnapshotError("metrics is not an object")
        return inner
    return reply


class PrometheusProvider:
    """Instant Prometheus query; the canary fails when the (largest) value exceeds ``max``."""

    def __init__(
        self, url: str, query: str, max: float, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.url = url.rstrip("/") + "/api/v1/query"
        self.query = query
        self.max = max
        self.timeout = timeout

    async def sample(self, final: bool = False) -> Measurement:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self.url, params={"query": self.query})
        except httpx.HTTPError as exc:
            return Measurement("inconclusive", f"prometheus unreachable: {exc!r}")
        if not response.is_success:
            return Measurement("inconclusive", f"prometheus answered HTTP {response.status_code}")
        try:
            value = _query_value(response.json())
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return Measurement("inconclusive", f"unusable prometheus answer: {exc}")
        if value is None:
            return Measurement("inconclusive", f"query returned no data: {self.query}")
        if math.isnan(value):
            return Measurement("inconclusive", "query returned NaN", value)
        if value > self.max:
            return Measurement("fail", f"{self.query} = {value:g} > max {self.max:g}", value)
        return Measurement("pass", f"{self.query} = {value:g} <= max {self.max:g}", value)


def _query_value(body: Any) -> float | None:
    """The largest sample value of an instant-query answer (vector or scalar)."""
    if not isinstance(body, dict):
        raise ValueError(f"answer is {type(body).__name__}, not an object")
    if body.get("status") != "success":
        raise ValueError(f"status {body.get('status')!r}: {body.get('error', '')}")
    data = body["data"]
    result = data["result"]
    if data.get("resultType") in ("scalar", "string"):
        return float(result[1])
    values = [float(series["value"][1]) for series in result]
    if not values:
        return None
    return math.nan if any(math.isnan(v) for v in values) else max(values)


class WebhookProvider:
    """POSTs a JSON context to ``url``: 2xx passes, any other status fails."""

    def __init__(
        self, url: str, context: Mapping[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.url = url
        self.context = dict(context or {})
        self.timeout = timeout

    async def sample(self, final: bool = False) -> Measurement:
        payload = {**self.context, "final": final}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, json=payload)
        except httpx.HTTPError as exc:
            return Measurement("inconclusive", f"webhook unreachable: {exc!r}")
        status = float(response.status_code)
        if response.is_success:
            return Measurement("pass", f"webhook answered HTTP {response.status_code}", status)
        excerpt = response.text[:200]
        return Measurement(
            "fail", f"webhook answered HTTP {response.status_code}: {excerpt}", status
        )
