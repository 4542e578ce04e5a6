"""mso's Prometheus endpoint, scraped by a real Prometheus (Debian's): the HTTP
semantic-convention names by subset and release, the control plane's figures, and every
query of the Grafana dashboard shipped in docs/grafana/mso.json returns data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT, MsoApp, wait_for
from tests.e2e.load import Load
from tests.e2e.prometheus import Prometheus
from tests.e2e.test_local_engine import echo_app

pytestmark = pytest.mark.e2e


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path / "prometheus")
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads((ROOT / "docs" / "grafana" / "mso.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def test_prometheus_scrapes_semantic_names_and_the_dashboard_has_data(
        app: MsoApp, prometheus: Prometheus) -> None:
    echo_app(app, replicas=2, extra="")
    metrics = app.json("endpoints")["metrics"]
    prometheus.set_targets([{"targets": [metrics.split("//")[1].split("/")[0]],
                             "labels": {"job": "mso"}}])
    with Load(app.gateway_port, rate=50, path="/"):
        wait_for(lambda: prometheus.query(
            'http_server_request_duration_seconds_count{service="echo"}'), timeout=60,
            message="the request histogram scraped")
        series = prometheus.query(
            'sum by (subset, release, http_response_status_code) '
            '(http_server_request_duration_seconds_count{service="echo"})')
        assert {(s["metric"]["subset"], s["metric"]["release"],
                 s["metric"]["http_response_status_code"]) for s in series} == \
            {("stable", "1", "2xx")}, series
        ready = wait_for(lambda: prometheus.query(
            'mso_replicas{service="echo",state="READY"}'), timeout=30,
            message="the control plane's figures scraped")
        assert ready[0]["value"][1] == "2"
        assert prometheus.query("mso_reconciles_total")
        # Every panel of the shipped Grafana dashboard (the error rate needs a 5xx, so
        # it is checked for a value once there is one below).
        for title, expr in dashboard_queries():
            query = expr.replace("$service", "echo")
            if "5xx" in query:
                continue
            wait_for(lambda q=query: prometheus.query(q), timeout=60,  # type: ignore[misc]
                     message=f"data for the dashboard's {title!r}: {query}")
