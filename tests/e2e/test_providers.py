"""Analysis providers end to end on the local engine, against a real Prometheus.

The conformance scenario `analysis_prometheus` shows a bad canary rolled back and a good
one promoted by a per-subset query. Here: a query that returns no data for the canary is
inconclusive, so even a canary mso's proxy finds healthy is held and, at its progress
deadline, failed and rolled back; and the credentials in the provider's URL appear
nowhere the user (or a log reader) can see them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import MsoApp, wait_for
from tests.e2e.load import Load
from tests.e2e.prometheus import running_prometheus

pytestmark = pytest.mark.e2e

MANIFEST = """
app: prov
gateway: {port: GATEWAY_PORT}
routes:
  - {path: /, service: echo}
services:
  echo:
    run: [PYTHON, ECHO_APP]
    replicas: 2
    ports: {http: 8000}
    env: {GREETING: "@VERSION@"}
    health:
      readiness: {http: /ready, period: 200ms, timeout: 3s, failure_threshold: 2}
    stop: {grace: 5s}
    rollout:
      strategy: canary
      progress_deadline: 6s
      steps: [{set_weight: 50}, {analysis: {duration: 3s}}]
      analysis:
        interval: 500ms
        min_samples: 20
        providers:
          - prometheus:
              url: http://admin:hunter22@127.0.0.1:@PROM_PORT@
              query: sum(rate(echo_errors_total{release="{{release}}"}[30s]))
              max: 0.01
"""


def test_a_query_without_data_never_promotes_and_credentials_never_show(
        app: MsoApp, tmp_path: Path) -> None:
    with running_prometheus(tmp_path / "prometheus") as prometheus:
        # The echo app exports no metrics: the canary's query has no data.
        text = MANIFEST.replace("@PROM_PORT@", str(prometheus.port))
        app.write(text.replace("@VERSION@", "v1"))
        app.up()
        with Load(app.gateway_port, rate=100, threads=2) as load:
            app.write(text.replace("@VERSION@", "v2"))
            app.cli("deploy")
            held = wait_for(lambda: (s := app.json("rollout", "status", "echo"))["phase"]
                            == "Inconclusive" and "no data" in s["reason"] and s, timeout=60,
                            message="the analysis held inconclusive")
            watch = app.cli("rollout", "status", "-w", "echo", "--timeout", "60",
                            check=False)
        assert load.result.ok > 0
    assert "prometheus 1: query returned no data: " in held["reason"], held
    assert 'no data: sum(rate(echo_errors_total{release="2"}[30s]))' in held["reason"], held
    measured = {p["name"]: p for p in held["analysis"]["providers"]}
    assert measured["prometheus 1"]["phase"] == "inconclusive", measured
    assert measured["prometheus 1"]["target"].startswith("http://***@127.0.0.1:"), measured
    # Held, then failed at the deadline: never promoted on no data.
    assert watch.returncode == 1, (watch.stdout, watch.stderr)
    final = app.json("rollout", "status", "echo")
    assert final["phase"] == "Failed" and "progress_deadline" in final["reason"], final
    assert "prometheus 1: query returned no data" in final["reason"], final
    assert [r["outcome"] for r in app.json("releases", "echo")] == ["promoted", "failed"]
    wait_for(lambda: {r["release"] for r in app.ps()} == {1}, timeout=60,
             message="the canary removed")
    table = app.cli("rollout", "status", "echo").stdout
    assert "prometheus 1" in table, table
    seen = (table + app.cli("rollout", "status", "echo", "-o", "json").stdout
            + app.cli("events", "--tail", "10000", "-o", "json").stdout
            + watch.stdout + watch.stderr + app.daemon_log())
    assert "hunter22" not in seen and "admin:" not in seen
