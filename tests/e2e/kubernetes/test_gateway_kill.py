"""The Kubernetes gateway survives the death of its proxy (issue 15 part 1, Kubernetes).

Each of the two gateway pods runs the proxy under mso's supervisor (gatewayd): a SIGKILLed
serving proxy is replaced by the pod's spare, which takes over the listening sockets the
supervisor holds, so no connection is refused; the requests the killed process was
serving die with it (at most one per client thread), as on the embedded engine
(tests/e2e/test_proxy_failover.py). A deleted gateway pod costs nothing: the other pod
serves while kube-proxy drops it (a killed container does cost: see docs/benchmarks.md).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.e2e.kubernetes.gateway_kill import (echo_app, gateway_address, gateway_pods,
                                               gateway_ping, kube, restarts,
                                               serving_proxy)
from tests.e2e.kubernetes.helpers import Lab, Mso, wait_for
from tests.e2e.load import Load

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(1200)]
NAMESPACE = "gwkill-e2e"
THREADS = 4


@pytest.fixture(scope="module")
def app(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mso]:
    mso = echo_app(tmp_path_factory.mktemp("k8s-gwkill") / "gwkill", lab.kubeconfig,
                   NAMESPACE)
    try:
        yield mso
    finally:
        mso.run("down", check=False)


def test_killing_a_gateway_pods_proxy_refuses_no_connection(app: Mso) -> None:
    app.run("deploy", timeout=600)
    pods = wait_for("two ready gateway pods with a spare proxy each", lambda: (
        p if len(p := gateway_pods(app)) == 2
        and all(gateway_ping(app, pod).get("spare") for pod in p) else None), timeout=180)
    host, port = gateway_address(app)
    kills: list[float] = []
    with Load(port, rate=200, threads=THREADS, keepalive=False, host=host) as load:
        wait_for("traffic", lambda: load.result.ok > 100, timeout=60, interval=0.1)
        for round_ in range(3):
            pod = pods[round_ % 2]  # both pods serve: kill in each
            before = gateway_ping(app, pod)
            killed, on_host = serving_proxy(app, pod)  # looked up before the clock starts
            kills.append(time.monotonic())
            os.kill(on_host, signal.SIGKILL)
            wait_for("the spare to take over and a new spare", lambda: (
                (p := gateway_ping(app, pod))["proxy"] != killed and p["spare"]
                and p["failovers"] == before["failovers"] + 1), timeout=30, interval=0.1)
            seen = load.result.ok
            wait_for("traffic after the takeover", lambda: load.result.ok > seen + 100,
                     timeout=30, interval=0.1)
    result = load.stop()
    result.assert_only_in_flight_at(kills, threads=THREADS)
    assert result.ok > 600
    # The supervisor absorbed every kill: no gateway container restarted.
    assert [restarts(app, p) for p in pods] == [0, 0]
    assert [gateway_ping(app, p)["failovers"] for p in pods] == [2, 1]


def test_deleting_a_gateway_pod_fails_no_request(app: Mso) -> None:
    pods = gateway_pods(app)
    assert len(pods) == 2, pods
    host, port = gateway_address(app)
    with Load(port, rate=200, threads=THREADS, keepalive=False, host=host) as load:
        wait_for("traffic", lambda: load.result.ok > 100, timeout=60, interval=0.1)
        kube(app).delete_pod(pods[0]["metadata"]["name"], NAMESPACE)
        wait_for("a new gateway pod ready with a spare", lambda: (
            len(p := gateway_pods(app)) == 2 and pods[0]["metadata"]["name"] not in
            {x["metadata"]["name"] for x in p}
            and all(gateway_ping(app, x).get("spare") for x in p)), timeout=180)
        seen = load.result.ok
        wait_for("traffic through both pods", lambda: load.result.ok > seen + 200,
                 timeout=30, interval=0.1)
    result = load.stop()
    assert result.failures == [], result.failures[:10]
    assert result.ok > 400
