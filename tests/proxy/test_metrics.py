"""Metrics counters, SNAPSHOT rendering, worker merge and Prometheus text."""
from __future__ import annotations

from bisect import bisect_left
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mso.proxy.exposition import Exposition
from mso.proxy.metrics import LATENCY_BUCKETS_MS, Registry, bucket_index, merge_snapshots


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


def _families(exposition: Exposition) -> dict:  # type: ignore[type-arg]
    return {f.name: f for f in text_string_to_metric_families(exposition.render().decode())}


def test_prometheus_text_uses_the_http_semantic_convention_names() -> None:
    snap = _snap()
    snap["clusters"]["web/http"] = snap["clusters"].pop("web")
    fams = _families(Exposition(lambda: snap, lambda: {("web/http", "stable"): 4}))
    reqs = fams["mso_proxy_requests"].samples[0]
    assert reqs.value == 3 and reqs.labels["endpoint"] == "web-1"
    hist = fams["http_server_request_duration_seconds"]
    assert hist.type == "histogram"
    counts = {s.labels["http_response_status_code"]: s.value for s in hist.samples
              if s.name.endswith("_count")}
    assert counts == {"2xx": 2, "5xx": 1}
    ok = [s for s in hist.samples if s.labels["http_response_status_code"] == "2xx"]
    assert {s.labels["service"] for s in ok} == {"web"}
    assert {s.labels["release"] for s in ok} == {"4"}
    assert [s.value for s in ok if s.name.endswith("_sum")] == [pytest.approx(99.0004)]
    fast = [s for s in ok if s.labels.get("le") == "0.0005"]
    assert fast[0].value == 1


def test_control_plane_metrics_are_exposed_and_checked() -> None:
    exposition = Exposition(lambda: {"clusters": {}}, dict)
    exposition.control.update({
        "mso_replica_restarts": {"help": "Restarts.", "samples": [[{"service": "web"}, 3]]},
        "mso_rollout_phase": {"help": "Phase.",
                              "samples": [[{"service": "web", "phase": "Progressing"}, 1]]}})
    fams = _families(exposition)
    assert fams["mso_replica_restarts"].samples[0].value == 3
    assert fams["mso_rollout_phase"].samples[0].labels == {"service": "web",
                                                           "phase": "Progressing"}
    for bad in ({"made_up": {"samples": []}}, {"mso_replicas": {"samples": [["x", 1]]}},
                {"mso_replicas": {"samples": [[{"a": 1}, 1]]}}, []):
        with pytest.raises(ValueError):
            exposition.control.update(bad)
    assert "mso_replica_restarts" in _families(exposition)  # a refused update kept the last


def test_bucket_index_agrees_with_bisect_left_at_and_around_every_bound() -> None:
    probes = [0.0, 1e-9, 99999.0]
    for b in LATENCY_BUCKETS_MS:
        probes += [b * 0.999, float(b), b * 1.001]
    for ms in probes:
        assert bucket_index(ms) == bisect_left(LATENCY_BUCKETS_MS, ms), ms


def test_tagged_snapshots_keep_each_proxys_counters_apart() -> None:
    from mso.analysis.windows import window_from_snapshots
    from mso.proxy.metrics import tag_snapshots

    def snap(requests: int) -> dict[str, Any]:
        return {"clusters": {"web/http": {"subsets": {"stable": {"endpoints": {
            "web-stable": {"requests": requests, "responses": {"2xx": requests}}}}}}}}

    before = tag_snapshots({"gw-a": snap(100), "gw-b": snap(90)})
    assert set(before["clusters"]["web/http"]["subsets"]["stable"]["endpoints"]) == \
        {"web-stable@gw-a", "web-stable@gw-b"}
    # gw-b's proxy restarted (its counters start again): only its own count resets.
    after = tag_snapshots({"gw-a": snap(110), "gw-b": snap(5)})
    assert window_from_snapshots(before, after, "web/http", "stable").requests == 10 + 5
