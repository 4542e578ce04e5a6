"""The shop on a real Kubernetes 1.20 cluster: deploy, self-healing, canaries, down.

The tests share one deployed shop and run in file order (each builds on the last).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mso.engines.kubernetes.kube import Kube
from tests.e2e.kubernetes.helpers import (ROOT, Lab, Load, Mso, conntrack_flows, get,
                                          lab_process_peers, outside_lab, wait_for)

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(3600)]
NAMESPACE = "shop-e2e"
FAST_CANARY = {"strategy": "canary", "max_surge": 1, "max_unavailable": 0,
               "progress_deadline": "3m",
               "steps": [{"set_weight": 20}, {"analysis": {"duration": "6s"}},
                         {"set_weight": 50}, {"analysis": {"duration": "6s"}}],
               "analysis": {"interval": "1s", "min_samples": 20, "confidence": 0.99,
                            "max_error_rate_increase": 0.01,
                            "max_latency_p99_increase": 5.0}}


def edit(folder: Path, change: dict[str, object]) -> None:
    path = folder / "mso.yaml"
    data = yaml.safe_load(path.read_text())
    data["services"]["orders"].update(change)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def shop(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mso]:
    folder = tmp_path_factory.mktemp("k8s") / "shop"
    shutil.copytree(ROOT / "examples" / "shop", folder,
                    ignore=shutil.ignore_patterns(".mso", "__pycache__"))
    shutil.copy(Path(__file__).parent / "bad_orders.py", folder / "bad_orders.py")
    edit(folder, {"rollout": FAST_CANARY})
    mso = Mso(folder, lab.kubeconfig, NAMESPACE)
    try:
        yield mso
    finally:
        mso.run("down", check=False)


def gateway(mso: Mso) -> tuple[str, int]:
    host, port = mso.json("endpoints")["gateway"].rsplit(":", 1)
    return host, int(port)


def kube(mso: Mso) -> Kube:
    return Kube(str(mso.kubeconfig), None)


def test_deploy_shop_all_pods_ready_and_the_page_is_served(shop: Mso) -> None:
    refused = shop.run("deploy", check=False)  # the shop's `watch:`: development keys
    assert refused.returncode == 2 and "services.web.watch: not supported on kubernetes: " \
        "watch is a development key" in refused.stderr, refused.stderr
    started = time.monotonic()
    shop.run("deploy", "--dev", timeout=600)
    took = time.monotonic() - started
    ps = shop.json("ps")
    states = {r["replica"]: r["state"] for r in ps["replicas"]}
    assert len(states) == 9 and set(states.values()) == {"READY"}, states
    assert ps["jobs"] == {"migrate": "completed"}
    host, port = gateway(shop)
    status, body = wait_for("the shop page", lambda: (lambda r: r if r[0] == 200 else None)(
        get(host, port, "/")), timeout=60)
    assert "mso" in body.lower() and "<html" in body.lower()
    status, body = get(host, port, "/api/inventory/products")
    assert status == 200 and "products" in body  # web -> gateway -> inventory -> kvstore
    print(f"\nshop deploy took {took:.1f}s")


def test_logs_scale_and_releases(shop: Mso) -> None:
    records = json.loads(shop.run("logs", "web", "--tail", "5", "-o", "json").stdout)
    assert records and {r["service"] for r in records} == {"web"}
    assert any("listening" in r["line"] or "GET" in r["line"] for r in records)
    shop.run("scale", "web=3")
    wait_for("3 ready web pods", lambda: len([r for r in serving(shop, "web")
                                              if r["state"] == "READY"]) == 3, timeout=120)
    shop.run("scale", "web=2")
    wait_for("2 web pods", lambda: len(serving(shop, "web")) == 2, timeout=120)
    assert [r["number"] for r in shop.json("releases", "web")] == [1]


def test_the_dashboard_shows_the_kubernetes_app(shop: Mso) -> None:
    import sys
    from tests.e2e.dashboard import RemoteDashboard, check_remote_dashboard
    host, port = gateway(shop)
    argv = [sys.executable, "-m", "mso", "dashboard", "--no-open", "--engine", "kubernetes",
            "--file", str(shop.folder / "mso.yaml"), "--kubeconfig", str(shop.kubeconfig),
            "--namespace", shop.namespace]
    with RemoteDashboard(argv, cwd=str(shop.folder)) as dash:
        check_remote_dashboard(dash, "web", {"web", "orders", "inventory", "payments"},
                               lambda: [get(host, port, "/healthz") for _ in range(5)])
    assert dash.proc.returncode == 0  # Ctrl-C ends it cleanly


def test_a_deleted_pod_costs_no_failed_get(shop: Mso) -> None:
    host, port = gateway(shop)
    web = [r["replica"] for r in shop.json("ps")["replicas"] if r["service"] == "web"]
    with Load(host, port, "/", rate=40) as load:
        time.sleep(2)
        kube(shop).delete_pod(web[0], NAMESPACE)
        wait_for("a replacement web pod", lambda: sum(
            1 for r in shop.json("ps")["replicas"]
            if r["service"] == "web" and r["state"] == "READY" and r["replica"] != web[0]) == 2,
            timeout=120)
        time.sleep(3)
    result = load.stop()
    assert result.ok > 100 and result.failures == [], (result.failures[:10], result.statuses)


def serving(mso: Mso, service: str) -> list[dict[str, object]]:
    """The service's pods that are not terminating (those get no new traffic)."""
    return [r for r in mso.json("ps")["replicas"]
            if r["service"] == service and r["state"] != "STOPPING"]


def rollout_phase(mso: Mso) -> str:
    return str(mso.json("rollout", "status", "orders")["phase"])


def test_a_healthy_canary_is_promoted_without_failed_requests(shop: Mso) -> None:
    host, port = gateway(shop)
    before = {r["number"] for r in shop.json("releases", "orders")}
    edit(shop.folder, {"env": {"ORDERS_FLAVOR": "v2"}})
    with Load(host, port, "/api/orders?limit=1", rate=60, ok=lambda s: s == 200) as load:
        shop.run("deploy", "--dev")
        wait_for("the canary to be promoted", lambda: rollout_phase(shop) == "Promoted",
                 timeout=240)
        time.sleep(2)
    result = load.stop()
    releases = shop.json("releases", "orders")
    new = max(r["number"] for r in releases)
    assert new not in before
    assert next(r for r in releases if r["number"] == new)["outcome"] == "promoted"
    pods = [r for r in shop.json("ps")["replicas"] if r["service"] == "orders"]
    wait_for("only stable pods of the new release", lambda: all(
        r["release"] == new and r["subset"] == "stable" for r in serving(shop, "orders")),
        timeout=60)
    assert kube(shop).get("apps/v1", "Deployment", "orders-canary", NAMESPACE) is None or \
        wait_for("the canary Deployment deleted", lambda: kube(shop).get(
            "apps/v1", "Deployment", "orders-canary", NAMESPACE) is None, timeout=60)
    assert pods and result.ok > 200 and result.failures == [], (result.failures[:10],
                                                               result.statuses)
    print(f"\ncanary promotion: {result.ok} ok, {len(result.failures)} failed")


def test_a_bad_canary_is_rolled_back_automatically_under_traffic(shop: Mso) -> None:
    host, port = gateway(shop)
    stable = max(r["number"] for r in shop.json("releases", "orders"))
    edit(shop.folder, {"run": ["python3", "bad_orders.py"], "env": {"ORDERS_FLAVOR": "bad"}})
    with Load(host, port, "/api/orders?limit=1", rate=60, ok=lambda s: s == 200) as load:
        shop.run("deploy", "--dev")
        started = time.monotonic()
        wait_for("the canary to be rolled back", lambda: rollout_phase(shop) == "RolledBack",
                 timeout=180)
        took = time.monotonic() - started
        wait_for("no canary pods", lambda: not any(
            r["subset"] == "canary" for r in serving(shop, "orders")), timeout=90)
        failed_until_rollback = len(load.result.failures)
        time.sleep(3)
    result = load.stop()
    releases = shop.json("releases", "orders")
    bad = max(r["number"] for r in releases)
    assert next(r for r in releases if r["number"] == bad)["outcome"] == "rolled back"
    assert {r["release"] for r in serving(shop, "orders")} == {stable}
    assert result.ok > 100 and result.failures[failed_until_rollback:] == []
    assert kube(shop).get("apps/v1", "Deployment", "orders-canary", NAMESPACE) is None
    print(f"\nbad canary rolled back {took:.1f}s after deploy returned; "
          f"{len(result.failures)} failed requests during the canary")


def test_rollback_to_the_first_release_under_traffic(shop: Mso) -> None:
    host, port = gateway(shop)
    releases = shop.json("releases", "orders")
    first = min(r["number"] for r in releases)
    with Load(host, port, "/api/orders?limit=1", rate=40, ok=lambda s: s == 200) as load:
        shop.run("rollback", "orders", "--to", str(first))
        new = max(r["number"] for r in shop.json("releases", "orders"))
        assert new == max(r["number"] for r in releases) + 1
        wait_for("the rollback to be deployed", lambda: rollout_phase(shop) == "Promoted"
                 and {r["release"] for r in serving(shop, "orders")} == {new}, timeout=240)
        time.sleep(2)
    result = load.stop()
    latest = shop.json("releases", "orders")[-1]
    assert latest["number"] == new and f"rollback to release {first}" in latest["change"]
    assert result.ok > 50 and result.failures == [], (result.failures[:10], result.statuses)


def test_deploy_refuses_to_touch_objects_it_does_not_own(lab: Lab,
                                                        tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "shop", folder,
                    ignore=shutil.ignore_patterns(".mso", "__pycache__"))
    k = Kube(str(lab.kubeconfig), None)
    namespace = "foreign-e2e"
    k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": namespace, "labels": {"app.kubernetes.io/managed-by": "mso", "mso.dev/app": "shop"}}},
        "shop")
    k.core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "mso-gateway-table"}, "data": {"mine": "yes"}})
    mso = Mso(folder, lab.kubeconfig, namespace)
    try:
        done = mso.run("deploy", "--dev", check=False)
        assert done.returncode == 1 and "refusing to modify ConfigMap" in done.stderr
        found = k.get("v1", "ConfigMap", "mso-gateway-table", namespace)
        assert found is not None and found["data"] == {"mine": "yes"}
    finally:
        mso.run("down", check=False)
        k.core.delete_namespace(namespace)


def test_down_removes_only_msos_objects(shop: Mso) -> None:
    k = kube(shop)
    k.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "not-mso"},
                                                    "data": {"keep": "me"}})
    shop.run("down")
    for kind, api in (("Deployment", "apps/v1"), ("Service", "v1"), ("ConfigMap", "v1"),
                      ("Secret", "v1"), ("Job", "batch/v1")):
        wait_for(f"no mso {kind}", lambda: not k.list(api, kind, NAMESPACE,
                                                       {"mso.dev/app": "shop"}), timeout=60)
    assert k.get("v1", "ConfigMap", "not-mso", NAMESPACE) is not None
    assert k.get("v1", "Namespace", NAMESPACE, None) is not None  # it holds a foreign object
    k.core.delete_namespaced_config_map("not-mso", NAMESPACE)
    shop.run("down")  # now the namespace is mso's alone: it goes too
    wait_for("the namespace to go", lambda: (k.get("v1", "Namespace", NAMESPACE, None) or {})
             .get("status", {}).get("phase") in (None, "Terminating"), timeout=60)


def test_nothing_connects_outside_the_lab(lab: Lab) -> None:
    flows = conntrack_flows()
    assert flows, "conntrack shows no flows at all: the check would be blind"
    lab_sources = [f for f in flows if re.match(r"^(10\.200\.0\.|172\.1[6-9]\.|172\.2\d\.)", f["src"])]
    assert lab_sources, "no flow from the lab's node or pods was seen"
    bad = [f for f in lab_sources if outside_lab(f["dst"])]
    assert bad == [], bad[:10]
    metadata = [f for f in flows if f["dst"].startswith("169.254.")]
    assert metadata == [], metadata
    peers = lab_process_peers(("kubelet", "kube-", "etcd"))
    assert peers, "ss shows no socket of the lab's processes"
    assert [p for p in peers if outside_lab(p[1])] == []
