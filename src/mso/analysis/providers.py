"""Metric providers behind one narrow protocol: the mso proxy, Prometheus, and webhooks.

Every provider answers ``await provider.sample(final)`` with a :class:`Measurement`
(phase ``pass``/``fail``/``inconclusive``, a reason, optional values and, for the
proxy, the judge's full :class:`~mso.analysis.judge.Verdict`). Providers never raise
for a broken backend: network errors, timeouts, bad status codes and malformed
answers are translated at this boundary into ``inconclusive`` with a reason, because
an unreachable metrics source says nothing about the canary — and ``inconclusive``
never promotes (:mod:`mso.analysis.run` combines the providers).

* :class:`ProxyMetricsProvider` diffs consecutive proxy SNAPSHOTs into per-subset
  windows and feeds the sequential :class:`CanaryJudge` (anytime-valid, see
  :mod:`mso.analysis.judge`).
* :class:`PrometheusProvider` runs one instant query (``GET /api/v1/query``) *per
  subset*: ``{{subset}}``, ``{{service}}`` and ``{{release}}`` in the query become
  ``stable``/``canary``, the service's name and that subset's release number. The
  canary fails when its value exceeds ``max`` while the stable's does not; the stable
  is the control. Why a control: a canary runs beside the stable precisely so that
  whatever hits both (a slow database, a bad hour) is not blamed on the new release;
  when the stable breaks ``max`` too, the metric cannot tell the two apart, so the
  answer is ``inconclusive`` (the rollout holds and, past ``progress_deadline``,
  fails and rolls back: never a promotion on such a reading). A query in which no
  placeholder differs between the subsets (``up``, a database's error rate) is a
  global guardrail: it runs once and its value is held against ``max`` directly.
  Empty results, NaN (e.g. ``0/0`` of two idle rates), an error answer, a non-2xx
  status, an unreachable server and a timeout are all ``inconclusive``.
* :class:`WebhookProvider` POSTs a JSON context; a 2xx answer passes, any other
  status fails (the body's start is the reason); unreachable or timed out is
  ``inconclusive``.

On Swarm and Kubernetes the requests go through mso's gateway, inside the app's network
(``transport``: :class:`mso.analysis.relay.GatewayTransport`); the handling above is the
same.

URLs may carry credentials (``https://user:token@prometheus/``, which httpx sends as
basic auth): every reason and every description shown to users goes through
:func:`redact_url` / :func:`scrub`, so the userinfo never reaches events, logs or
``mso rollout status``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from mso.analysis.judge import AnalysisConfig, CanaryJudge, Verdict, VerdictKind
from mso.analysis.load import merge_windows
from mso.analysis.windows import SnapshotError, SubsetWindow, window_from_snapshots

DEFAULT_TIMEOUT_S = 5.0
SUBSETS = ("stable", "canary")
PLACEHOLDERS = ("subset", "service", "release")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Measurement:
    """One provider sample, the same shape for every provider.

    ``value`` is the canary's number (the proxy's canary error rate, the canary
    query's result, the webhook's HTTP status); ``stable_value`` the stable's, when
    the provider measures it."""

    phase: VerdictKind
    reason: str
    value: float | None = None
    verdict: Verdict | None = None
    stable_value: float | None = None


class MetricProvider(Protocol):
    """A source of canary measurements, polled once per analysis interval."""

    async def sample(self, final: bool = False) -> Measurement:
        """Take one measurement; ``final`` marks the last poll of the analysis."""
        ...


@dataclass(frozen=True)
class RolloutContext:
    """What a provider may know about the rollout it judges."""

    service: str
    stable_release: int
    canary_release: int

    def release(self, subset: str) -> int:
        return self.canary_release if subset == "canary" else self.stable_release

    def placeholders(self, subset: str) -> dict[str, str]:
        return {"subset": subset, "service": self.service, "release": str(self.release(subset))}


def unknown_placeholders(template: str) -> list[str]:
    """Placeholders in ``template`` that :func:`substitute` would not replace."""
    return [name for name in _PLACEHOLDER.findall(template) if name not in PLACEHOLDERS]


def substitute(template: str, values: Mapping[str, str]) -> str:
    """``{{subset}}``, ``{{service}}``, ``{{release}}`` (spaces inside the braces
    allowed) replaced by ``values``; anything else is left as written (the manifest's
    validation refuses unknown placeholders)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def redact_url(url: str) -> str:
    """``url`` without its userinfo: ``https://u:secret@host/`` -> ``https://***@host/``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc="***@" + host))


def credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """``url`` without its userinfo, and the userinfo as basic auth: the URL that httpx
    logs and puts in its exceptions then carries no secret."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), httpx.BasicAuth(unquote(user),
                                                                     unquote(password))


def scrub(text: str, url: str) -> str:
    """``text`` with ``url``'s userinfo (and the URL as given) replaced by the redacted
    form: exception messages may quote either."""
    redacted = redact_url(url)
    if redacted == url:
        return text
    text = text.replace(url, redacted)
    userinfo = urlsplit(url).netloc.rsplit("@", 1)[0]
    for secret in (userinfo, userinfo.partition(":")[2]):
        if len(secret) >= 3:  # shorter ones would mangle unrelated words
            text = text.replace(secret, "***")
    return text


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


class ProxyMetricsProvider:
    """Feeds the proxy's per-subset counters for ``cluster`` to a :class:`CanaryJudge`."""

    kind = "proxy"

    def __init__(
        self,
        fetch_snapshot: Callable[[], Awaitable[Mapping[str, Any]]],
        cluster: str,
        judge: CanaryJudge | None = None,
        config: AnalysisConfig | None = None,
        canary_subset: str = "canary",
        extra: Callable[[], tuple[SubsetWindow, SubsetWindow]] | None = None,
    ) -> None:
        self._fetch = fetch_snapshot
        self.cluster = cluster
        self.judge = judge or CanaryJudge(config)
        self._prev: Mapping[str, Any] | None = None
        # Blue/green judges its `preview` subset as the canary; `extra` returns the
        # synthetic load's (stable, canary) increments since its last call
        # (mso.analysis.load), added to the proxy's before they reach the judge.
        self.canary_subset = canary_subset
        self._extra = extra

    def describe(self) -> str:
        return f"mso's proxy, cluster {self.cluster}"

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
            canary = window_from_snapshots(prev, snapshot, self.cluster, self.canary_subset)
            if self._extra is not None and prev is not None:
                synthetic = self._extra()
                stable = merge_windows(stable, synthetic[0])
                canary = merge_windows(canary, synthetic[1])
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
    """Instant Prometheus queries, one per subset; see the module docstring for the rule."""

    kind = "prometheus"

    def __init__(
        self,
        url: str,
        query: str,
        max: float,
        context: RolloutContext | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = url
        self.transport = transport
        plain, self.auth = credentials(url)
        self.url = self.request_url = plain.rstrip("/") + "/api/v1/query"
        self.query = query
        self.max = max
        self.context = context or RolloutContext("", 0, 0)
        self.timeout = timeout

    def queries(self) -> dict[str, str]:
        """The query each subset runs (placeholders substituted)."""
        return {s: substitute(self.query, self.context.placeholders(s)) for s in SUBSETS}

    def describe(self) -> str:
        return f"{redact_url(self.base_url)} `{self.query}`"

    async def sample(self, final: bool = False) -> Measurement:
        queries = self.queries()
        try:
            async with httpx.AsyncClient(timeout=self.timeout, auth=self.auth,
                                         transport=self.transport) as client:
                if queries["stable"] == queries["canary"]:
                    value = await self._value(client, queries["canary"])
                    return self._guardrail(queries["canary"], value)
                answers = await asyncio.gather(
                    self._value(client, queries["stable"]), self._value(client, queries["canary"]),
                    return_exceptions=True,
                )
        except _Inconclusive as exc:
            return Measurement("inconclusive", scrub(str(exc), self.base_url))
        problems = [str(a) for a in answers if isinstance(a, _Inconclusive)]
        if problems:  # both subsets' problems, stable first
            return Measurement("inconclusive", scrub("; ".join(problems), self.base_url))
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        stable, canary = (float(a) for a in answers if not isinstance(a, BaseException))
        return self._judge(queries["canary"], stable, canary)

    async def _value(self, client: httpx.AsyncClient, query: str) -> float:
        """The query's value, or :class:`_Inconclusive` saying why there is none."""
        try:
            response = await client.get(self.url, params={"query": query})
        except httpx.TimeoutException:
            raise _Inconclusive(f"prometheus timed out after {self.timeout:g}s: {query}") from None
        except httpx.HTTPError as exc:
            raise _Inconclusive(f"prometheus unreachable: {exc!r}") from None
        if not response.is_success:
            raise _Inconclusive(f"prometheus answered HTTP {response.status_code}: {query}")
        try:
            value = _query_value(response.json())
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise _Inconclusive(f"unusable prometheus answer to {query}: {exc}") from None
        if value is None:
            raise _Inconclusive(f"query returned no data: {query}")
        if math.isnan(value):
            raise _Inconclusive(f"query returned NaN: {query}")
        return value

    def _guardrail(self, query: str, value: float) -> Measurement:
        if value > self.max:
            return Measurement("fail", f"{query} = {_fmt(value)} > max {_fmt(self.max)}", value)
        return Measurement("pass", f"{query} = {_fmt(value)} <= max {_fmt(self.max)}", value)

    def _judge(self, query: str, stable: float, canary: float) -> Measurement:
        numbers = f"canary {_fmt(canary)}, stable {_fmt(stable)}, max {_fmt(self.max)}"
        if canary <= self.max:
            return Measurement("pass", f"{query}: {numbers}", canary, stable_value=stable)
        if stable > self.max:
            return Measurement(
                "inconclusive",
                f"{query}: {numbers}: the stable is above max too, so the metric does not "
                "single out the canary",
                canary,
                stable_value=stable,
            )
        return Measurement(
            "fail", f"{query}: canary {_fmt(canary)} > max {_fmt(self.max)} (stable "
            f"{_fmt(stable)})", canary, stable_value=stable,
        )


class _Inconclusive(Exception):
    """A query that yields no usable number (internal to :class:`PrometheusProvider`)."""


def _query_value(body: Any) -> float | None:
    """The largest sample value of an instant-query answer (vector or scalar); NaN when
    any series is NaN."""
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

    kind = "webhook"

    def __init__(
        self, url: str, context: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.transport = transport
        self.request_url, self.auth = credentials(url)
        self.context: dict[str, Any] = dict(context or {})
        self.timeout = timeout

    def describe(self) -> str:
        return redact_url(self.url)

    async def sample(self, final: bool = False) -> Measurement:
        payload = {**self.context, "final": final}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, auth=self.auth,
                                         transport=self.transport) as client:
                response = await client.post(self.request_url, json=payload)
        except httpx.TimeoutException:
            return Measurement("inconclusive", f"webhook timed out after {self.timeout:g}s")
        except httpx.HTTPError as exc:
            return Measurement("inconclusive", scrub(f"webhook unreachable: {exc!r}", self.url))
        status = float(response.status_code)
        if response.is_success:
            return Measurement("pass", f"webhook answered HTTP {response.status_code}", status)
        excerpt = " ".join(response.text[:200].split())
        return Measurement(
            "fail", scrub(f"webhook answered HTTP {response.status_code}: {excerpt}", self.url),
            status,
        )
