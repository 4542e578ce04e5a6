"""Gateway port allocation and the route table built from Swarm tasks."""

from __future__ import annotations

from mso.engines.swarm.gateway import (allocate_ports, gateway_spec, route_table,
                                       service_routing)
from mso.engines.swarm.observe import parse


def test_allocated_ports_never_move_and_skip_reserved_ones() -> None:
    first = allocate_ports({}, ["a/http", "b/http"], {20000})
    assert first == {"a/http": 20001, "b/http": 20002}
    again = allocate_ports(first, ["c/http", "a/http"], {20000})
    assert again["a/http"] == 20001 and again["c/http"] == 20003


def _service(role: str, subset: str, sid: str) -> dict[str, object]:
    return {"ID": sid, "Version": {"Index": 3}, "Spec": {
        "Name": f"app_web{'-canary' if role == 'second' else ''}",
        "Labels": {"mso.service": "web", "mso.role": role, "mso.subset": subset,
                   "mso.release": "1", "mso.deploy-hash": "h"},
        "Mode": {"Replicated": {"Replicas": 1}}}}


def _task(tid: str, sid: str, ip: str, state: str = "running") -> dict[str, object]:
    return {"ID": tid, "ServiceID": sid, "Slot": 1, "NodeID": "n", "DesiredState": "running",
            "Status": {"State": state, "ContainerStatus": {"ContainerID": "c"}},
            "Spec": {"ContainerSpec": {"Labels": {"mso.release": "1"}}},
            "NetworksAttachments": [{"Network": {"ID": "net"}, "Addresses": [f"{ip}/24"]}]}


def test_table_routes_to_ready_task_ips_with_subset_weights() -> None:
    obs = parse([_service("main", "stable", "s1"), _service("second", "canary", "s2")],
                [_task("aaaaaaa1", "s1", "10.0.0.5"), _task("bbbbbbb1", "s2", "10.0.0.6"),
                 _task("ccccccc1", "s1", "10.0.0.7", state="starting")], "net")
    routing = service_routing("web", {"ports": {"http": {"port": 8000, "protocol": "http"}}},
                              {"web/http": 20001}, obs, {"stable": 90, "canary": 10})
    table = route_table(gateway_port=8080, metrics_port=20000, routes=[], services=[routing])
    subsets = table["clusters"]["web/http"]["subsets"]
    assert subsets["stable"]["weight"] == 90
    assert [e["address"] for e in subsets["stable"]["endpoints"]] == ["10.0.0.5:8000"]
    assert [e["address"] for e in subsets["canary"]["endpoints"]] == ["10.0.0.6:8000"]
    assert all(listener["bind"] == "0.0.0.0" for listener in table["listeners"])


def test_plan_subsets_override_labels_and_the_preview_port_answers_preview_alone() -> None:
    obs = parse([_service("main", "stable", "s1"), _service("second", "preview", "s2")],
                [_task("aaaaaaa1", "s1", "10.0.0.5"), _task("bbbbbbb1", "s2", "10.0.0.6")],
                "net")
    model = {"ports": {"http": {"port": 8000, "protocol": "http"}}}
    before = service_routing("web", model, {"web/http": 20001}, obs,
                             {"stable": 100, "preview": 0}, preview_port=9090)
    table = route_table(gateway_port=8080, metrics_port=20000, routes=[], services=[before])
    preview = next(lis for lis in table["listeners"] if lis["port"] == 9090)
    assert preview["bind"] == "0.0.0.0"
    eps = table["clusters"][preview["cluster"]]["subsets"]["preview"]["endpoints"]
    assert [e["address"] for e in eps] == ["10.0.0.6:8000"]
    # promoted: the plan says the second service is stable, whatever its label still says
    after = service_routing("web", model, {"web/http": 20001}, obs,
                            {"stable": 100, "previous": 0},
                            {"main": "previous", "second": "stable"})
    subsets = route_table(gateway_port=8080, metrics_port=20000, routes=[],
                          services=[after])["clusters"]["web/http"]["subsets"]
    assert [e["address"] for e in subsets["stable"]["endpoints"]] == ["10.0.0.6:8000"]
    assert subsets["previous"]["weight"] == 0


def test_gateway_publishes_preview_ports_and_keeps_its_hash_without_them() -> None:
    plain, _ = gateway_spec("app", "img", "net", 8080, "/tmp/x", "node")
    again, _ = gateway_spec("app", "img", "net", 8080, "/tmp/x", "node", [])
    with_preview, extra = gateway_spec("app", "img", "net", 8080, "/tmp/x", "node", [9090])
    assert plain.deploy_hash == again.deploy_hash != with_preview.deploy_hash
    published = [(p["PublishedPort"], p["PublishMode"]) for p in extra["endpoint_spec"]["Ports"]]
    assert published == [(8080, "host"), (9090, "host")]
