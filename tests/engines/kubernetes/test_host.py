"""Pure decisions of the Kubernetes engine: weights, waves, ports (rollback targets:
tests/releases/test_rollback.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mso.engines.kubernetes import naming
from mso.engines.kubernetes.deploy import waves
from mso.engines.kubernetes.host import effective_weights
from mso.engines.kubernetes.views import pod_state
from mso.spec.load import load_manifest

SHOP = Path(__file__).resolve().parents[3] / "examples" / "shop" / "mso.yaml"


def test_canary_without_ready_pods_gets_no_traffic() -> None:
    assert effective_weights({"stable": 80, "canary": 20}, {"stable": 2, "canary": 0}) == \
        {"stable": 100, "canary": 0}


def test_ready_canary_keeps_its_weight() -> None:
    assert effective_weights({"stable": 80, "canary": 20}, {"stable": 2, "canary": 1}) == \
        {"stable": 80, "canary": 20}


def test_traffic_follows_the_only_ready_subset() -> None:
    assert effective_weights({"stable": 50, "canary": 50}, {"stable": 0, "canary": 2}) == \
        {"stable": 0, "canary": 100}


def test_shop_waves_follow_dependencies() -> None:
    order = waves(load_manifest(SHOP).manifest)
    position = {name: i for i, wave in enumerate(order) for name in wave}
    assert position["kvstore"] < position["migrate"] < position["inventory"]
    assert position["inventory"] < position["orders"] < position["web"]
    assert position["payments"] < position["orders"]


def test_listener_ports_are_stable_when_services_come_and_go() -> None:
    few = naming.listener_ports(["web/http", "orders/http"])
    more = naming.listener_ports(["web/http", "orders/http", "new/http", "other/kv"])
    assert few["web/http"] == more["web/http"] and few["orders/http"] == more["orders/http"]
    assert len(set(more.values())) == 4


def test_port_names_kubernetes_cannot_take_are_dropped() -> None:
    assert naming.k8s_port_name("http") == "http"
    assert naming.k8s_port_name("metrics_port") == "metrics-port"
    assert naming.k8s_port_name("a-very-long-port-name") is None
    assert naming.k8s_port_name("8080") is None


def _pod(**status: object) -> dict[str, object]:
    return {"metadata": {"name": "p", "labels": {}}, "status": status}


def test_pod_states_map_to_mso_states() -> None:
    ready = _pod(phase="Running", conditions=[{"type": "Ready", "status": "True"}])
    assert pod_state(ready)[0] == "READY"
    assert pod_state(_pod(phase="Running", conditions=[]))[0] == "RUNNING"
    crash = _pod(phase="Running", containerStatuses=[
        {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
    assert pod_state(crash)[0] == "BACKOFF"
    assert pod_state(_pod(phase="Pending"))[0] == "STARTING"
    stopping = {"metadata": {"name": "p", "deletionTimestamp": "x"}, "status": {}}
    assert pod_state(stopping)[0] == "STOPPING"


def test_providers_naming_the_apps_services_reach_them_by_cluster_ip() -> None:
    from mso.engines.kubernetes.gateway import provider_hosts
    services = {"prom-stable": "10.96.0.12", "web-stable": "10.96.0.13"}
    urls = ["http://prom-stable:9090/api/v1/query",
            "http://prom-stable.shop.svc.cluster.local:9090/api/v1/query",
            "http://prom-stable.other:9090/api/v1/query",  # another namespace: DNS's
            "http://prometheus.monitoring:9090/api/v1/query", "https://hooks.example/x"]
    assert provider_hosts(urls, services, "shop") == {
        "prom-stable": "10.96.0.12", "prom-stable.shop.svc.cluster.local": "10.96.0.12"}
