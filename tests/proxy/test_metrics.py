"""Metrics counters, SNAPSHOT rendering, worker merge and Prometheus text."""
from __future__ import annotations

from bisect import bisect_left

from prometheus_client.parser import text_string_to_metric_families

from mso.proxy.metrics import (
    LATENCY_BUCKETS_MS, Registry, bucket_index, merge_snapshots, render_prometheus,
)


def _snap() -> dict:  # type: ignore[type-arg]
    r = Registry()
    st = r.get("web", "stable", "web-1")
    st.requests += 3
    st.observe(200, 0.0004)
    st.observe(503, 0.004)
    st.observe(200, 99.0)
    return r.snapshot({("web", "stable", "web-1"): 2})


def test_snapshot_shape_matches_protocol() -> None:
    ep = _snap()["clusters"]["web"]["subsets"]["stable"]["endpoints"]["web-1"]
    assert ep["requests"] == 3 and ep["inflight"] == 2
    assert ep["responses"] == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 1}
    assert len(ep["latency_counts"]) == len(ep["latency_buckets_ms"]) + 1
    assert ep["latency_counts"][0] == 1  # 0.4 ms <= 0.5 ms
    assert ep["latency_counts"][LATENCY_BUCKETS_MS.index(5)] == 1
    assert ep["latency_counts"][-1] == 1  # +Inf


def test_merge_sums_workers() -> None:
    merged = merge_snapshots([_snap(), _snap()])
    ep = merged["clusters"]["web"]["subsets"]["stable"]["endpoints"]["web-1"]
    assert ep["requests"] == 6 and ep["responses"]["5xx"] == 2 and sum(ep["latency_counts"]) == 6


def test_prometheus_text_parses() -> None:
    fams = {f.name: f for f in text_string_to_metric_families(render_prometheus(_snap()))}
    reqs = fams["mso_proxy_requests"].samples[0]
    assert reqs.value == 3 and reqs.labels["endpoint"] == "web-1"
    hist = fams["mso_proxy_latency_seconds"]
    inf = [s for s in hist.samples if s.labels.get("le") == "+Inf"][0]
    assert inf.value == 3


def test_bucket_index_agrees_with_bisect_left_at_and_around_every_bound() -> None:
    probes = [0.0, 1e-9, 99999.0]
    for b in LATENCY_BUCKETS_MS:
        probes += [b * 0.999, float(b), b * 1.001]
    for ms in probes:
        assert bucket_index(ms) == bisect_left(LATENCY_BUCKETS_MS, ms), ms
