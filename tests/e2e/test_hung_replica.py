"""A hung replica (SIGSTOP) under steady GET load through the gateway: no GET fails, and
the proxy takes it out of rotation after its first few requests (per-try timeout and
passive outlier detection on timeouts, with the manifest's defaults)."""

from __future__ import annotations

import os
import signal
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import MsoApp, wait_for
from tests.e2e.load import Load

pytestmark = pytest.mark.e2e

MANIFEST = """
app: hung
gateway: {port: GATEWAY_PORT}
routes:
  - {path: /, service: echo}
services:
  echo:
    run: [PYTHON, ECHO_APP]
    replicas: 2
    ports: {http: 8000}
    health:
      # Slow to notice on purpose: the proxy, not readiness, must take the replica out.
      readiness: {http: /ready, period: 1s, timeout: 20s, failure_threshold: 3}
    stop: {grace: 2s}
"""


def proxy_counter(app: MsoApp, metric: str, replica: str) -> int:
    url = app.json("endpoints")["metrics"]
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and sample.labels.get("endpoint") == replica \
                    and sample.labels.get("cluster") == "echo/http":
                return int(sample.value)
    return 0


def test_a_sigstopped_replica_costs_no_get_and_leaves_the_rotation(app: MsoApp) -> None:
    app.write(MANIFEST)
    app.up()
    victim = app.replicas("echo")[0]
    name = victim["replica"]
    with Load(app.gateway_port, rate=100.0) as load:
        wait_for(lambda: load.result.ok >= 100, 30, message="steady load")
        before = proxy_counter(app, "mso_proxy_requests_total", name)
        os.kill(victim["pid"], signal.SIGSTOP)
        try:
            wait_for(lambda: proxy_counter(app, "mso_proxy_ejections_total", name) >= 1, 30,
                     message=f"{name} ejected")
            sent_while_hung = proxy_counter(app, "mso_proxy_requests_total", name) - before
            ok = load.result.ok
            wait_for(lambda: load.result.ok >= ok + 200, 30, message="2 s more of load")
            # Ejected, it got nothing more while hung.
            assert proxy_counter(app, "mso_proxy_requests_total", name) - before \
                == sent_while_hung
        finally:
            os.kill(victim["pid"], signal.SIGCONT)
        result = load.stop()
    assert result.failures == [], result.failures[:5]
    # Out of rotation within about a second: at 100 req/s over two replicas it gets 50
    # requests a second, and it was ejected after far fewer than that.
    assert sent_while_hung <= 50, sent_while_hung
    assert proxy_counter(app, "mso_proxy_try_timeouts_total", name) >= 5
