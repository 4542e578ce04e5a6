"""The Prometheus endpoint (`/metrics` on the metrics listener), made with prometheus-client.

Custom collectors turn the proxy's SNAPSHOT (plain counters bumped on the hot path) into
metric families when Prometheus scrapes; nothing here runs per request.

Names follow OpenTelemetry's HTTP semantic conventions where one exists:

* `http_server_request_duration_seconds` (histogram): every response the proxy relayed,
  by `http_response_status_code` (the status *class*, `2xx`..`5xx`: the exact code
  would multiply the series for little gain) and mso's labels `service`, `subset`,
  `release` and `endpoint` (the replica). Stable against canary is
  `sum by (subset) (rate(http_server_request_duration_seconds_count[1m]))`.
* mso's own counters, which have no convention: `mso_proxy_requests_total` (requests
  sent to an endpoint, retries included), `mso_proxy_responses_total`,
  `mso_proxy_connect_errors_total`, `mso_proxy_retries_total`,
  `mso_proxy_try_timeouts_total`, `mso_proxy_hedges_total`, `mso_proxy_ejections_total`
  and the gauge `mso_proxy_inflight`, labelled `cluster`, `subset`, `endpoint`.
* With `tracing:` on, the exporter's counters `mso_proxy_spans_exported_total`,
  `mso_proxy_spans_dropped_total` (queue full, or given up after retries) and
  `mso_proxy_span_exports_failed_total` (export requests given up).
* Limits at the edge (limits.py): `mso_proxy_rate_limited_total` and
  `mso_proxy_body_too_large_total` (requests answered 429 / 413, by `route` (host and
  path) and `service`), `mso_proxy_connections_refused_total` (connections over the
  per-client limit) and the gauge `mso_proxy_limited_clients` (client addresses holding
  connections on a listener with a limit).
* The control plane's figures (reconcile duration, probe failures, restarts, replicas
  by state, rollout phase), which the daemon hands to the proxy (control op
  `set_control_metrics`) so one endpoint serves the whole app; see `ControlMetrics`.

docs/grafana/mso.json is a Grafana dashboard over these names.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .metrics import _endpoints

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_COUNTERS = (
    ("mso_proxy_connect_errors", "connect_errors", "Failed connects to an endpoint."),
    ("mso_proxy_retries", "retries", "Retries sent to an endpoint."),
    ("mso_proxy_try_timeouts", "timeouts",
     "Tries past the per-try timeout that lost to a faster answer."),
    ("mso_proxy_hedges", "hedges", "Second tries sent to an endpoint (slow or hedged)."),
    ("mso_proxy_ejections", "ejections", "Times outlier detection ejected an endpoint."),
)
#: The control-plane families a daemon may send, and their type (anything else is refused).
CONTROL_FAMILIES = {
    "mso_reconcile_duration_seconds": "gauge",
    "mso_reconciles": "counter",
    "mso_probe_failures": "counter",
    "mso_replica_restarts": "counter",
    "mso_replicas": "gauge",
    "mso_rollout_phase": "gauge",
    "mso_rollout_weight": "gauge",
}


def service_of(cluster: str) -> str:
    """The service a cluster belongs to ("web/http@preview" -> "web")."""
    return cluster.split("/", 1)[0]


class TrafficCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]],
                 releases: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.snapshot = snapshot
        self.releases = releases

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        releases = self.releases()
        rows = list(_endpoints(snap))
        duration = HistogramMetricFamily(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests relayed by mso's proxy.",
            labels=["service", "subset", "release", "endpoint", "http_response_status_code"],
            unit="seconds")
        for c, s, e, d in rows:
            bounds = [b / 1000.0 for b in d["latency_buckets_ms"]]
            release = str(releases.get((c, s), ""))
            for cls, counts in sorted(d.get("latency_by_class", {}).items()):
                cum, buckets = 0, []
                for bound, n in zip(bounds, counts):
                    cum += n
                    buckets.append((_le(bound), cum))
                cum += counts[-1]
                buckets.append(("+Inf", cum))
                total = float(d.get("latency_sum_by_class", {}).get(cls, 0.0))
                duration.add_metric([service_of(c), s, release, e, cls], buckets, total)
        yield duration
        requests = CounterMetricFamily("mso_proxy_requests",
                                       "Requests sent to an upstream endpoint.",
                                       labels=["cluster", "subset", "endpoint"])
        responses = CounterMetricFamily("mso_proxy_responses", "Responses by status class.",
                                        labels=["cluster", "subset", "endpoint", "code"])
        for c, s, e, d in rows:
            requests.add_metric([c, s, e], d["requests"])
            for cls, n in d["responses"].items():
                responses.add_metric([c, s, e, cls], n)
        yield requests
        yield responses
        for name, key, doc in _COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["cluster", "subset", "endpoint"])
            for c, s, e, d in rows:
                family.add_metric([c, s, e], d.get(key, 0))
            yield family
        inflight = GaugeMetricFamily("mso_proxy_inflight", "Requests in flight.",
                                     labels=["cluster", "subset", "endpoint"])
        for c, s, e, d in rows:
            inflight.add_metric([c, s, e], d.get("inflight", 0))
        yield inflight


def _le(bound: float) -> str:
    return f"{bound:g}"


class ControlMetrics(Collector):
    """The control plane's figures as the daemon last sent them:
    {name: {"help": str, "samples": [[{label: value}, number], ...]}}."""

    def __init__(self) -> None:
        self.families: dict[str, Any] = {}

    def update(self, raw: Any) -> None:
        """Validate and keep a `set_control_metrics` payload; ValueError if malformed."""
        if not isinstance(raw, dict):
            raise ValueError("metrics must be an object")
        checked: dict[str, Any] = {}
        for name, fam in raw.items():
            if name not in CONTROL_FAMILIES:
                raise ValueError(f"unknown control metric {name!r}")
            if not isinstance(fam, dict) or not isinstance(fam.get("samples"), list):
                raise ValueError(f"{name}: expected {{help, samples}}")
            samples = []
            for item in fam["samples"]:
                if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], dict)
                        or isinstance(item[1], bool) or not isinstance(item[1], (int, float))
                        or not all(isinstance(k, str) and isinstance(v, str)
                                   for k, v in item[0].items())):
                    raise ValueError(f"{name}: a sample is [{{label: value}}, number]")
                samples.append((item[0], float(item[1])))
            checked[name] = (str(fam.get("help") or name), samples)
        self.families = checked

    def collect(self) -> Iterator[Metric]:
        for name, (doc, samples) in sorted(self.families.items()):
            labels = sorted({k for labels, _ in samples for k in labels})
            cls = CounterMetricFamily if CONTROL_FAMILIES[name] == "counter" \
                else GaugeMetricFamily
            family = cls(name, doc, labels=labels)
            for values, number in samples:
                family.add_metric([values.get(k, "") for k in labels], number)
            yield family


class SpanCollector(Collector):
    """The trace exporter's counters (tracing.Recorder.counters), once tracing is on."""

    FAMILIES = (("mso_proxy_spans_exported", "exported", "Spans the OTLP collector took."),
                ("mso_proxy_spans_dropped", "dropped",
                 "Spans dropped: the export queue was full, or the collector refused them."),
                ("mso_proxy_span_exports_failed", "failed_exports",
                 "OTLP export requests given up after their retries."))

    def __init__(self, counters: Callable[[], dict[str, int] | None]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        counts = self.counters()
        if counts is None:
            return
        for name, key, doc in self.FAMILIES:
            yield CounterMetricFamily(name, doc, value=counts.get(key, 0))


class LimitsCollector(Collector):
    """What the limits at the edge refused (limits.Limits.snapshot)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        routes = snap.get("routes", {})
        for name, key, doc in (
                ("mso_proxy_rate_limited", "rate_limited",
                 "Requests answered 429 by a route's rate limit."),
                ("mso_proxy_body_too_large", "body_too_large",
                 "Requests answered 413: the body was over the route's max_body_size.")):
            family = CounterMetricFamily(name, doc, labels=["route", "service"])
            for label, r in sorted(routes.items()):
                family.add_metric([label, r.get("service", "")], r.get(key, 0))
            yield family
        conns = snap.get("connections", {})
        yield CounterMetricFamily("mso_proxy_connections_refused",
                                  "Connections refused: over the per-client limit.",
                                  value=conns.get("refused", 0))
        yield GaugeMetricFamily("mso_proxy_limited_clients",
                                "Client addresses holding connections where a per-client "
                                "connection limit applies.", value=conns.get("clients", 0))


class Exposition:
    """One registry per proxy process: the traffic, the tracer and the control plane."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]],
                 releases: Callable[[], dict[tuple[str, str], int]],
                 spans: Callable[[], dict[str, int] | None] = lambda: None,
                 limits: Callable[[], dict[str, Any]] | None = None) -> None:
        self.control = ControlMetrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(TrafficCollector(snapshot, releases))
        self.registry.register(SpanCollector(spans))
        if limits is not None:
            self.registry.register(LimitsCollector(limits))
        self.registry.register(self.control)

    def render(self) -> bytes:
        return generate_latest(self.registry)
