"""The `mso-gateway` Swarm service and the route table it is fed (pure).

The gateway is mso's own proxy (`python -m mso.proxy`) running as a Swarm service on the
manager node, publishing only the app's gateway port (host mode: there is no IPVS for the
routing mesh). Its control socket lives in a host folder bind-mounted into the container,
so the controller on the manager drives it with the ordinary control protocol.

Inside the app's network the gateway also listens on one stable port per service port;
dependents get `<SERVICE>_URL=http://mso-gateway:<port>`, never a task's address. Its
endpoints are the tasks' overlay IPs, with the stable/canary weights of each rollout.
"""

from __future__ import annotations

from typing import Any

from mso.controllers.routing import (EndpointView, GatewayTls, RouteView, ServiceRouting,
                                     build_table)
from mso.releases.ports import port_map
from mso.engines.swarm import names
from mso.engines.swarm.observe import ServiceObs
from mso.engines.swarm.spec import ServiceSpec, digest

CONTROL_DIR = "/run/mso"
#: The proxy under its supervisor: killing the serving process costs no connection (a
#: spare takes over its listening sockets), and a restarted container serves the last
#: table (saved in the bind-mounted folder) before the controller pushes one.
COMMAND = ["python3", "-m", "mso.proxy", "--supervise", "--control",
           f"{CONTROL_DIR}/control.sock", "--state", f"{CONTROL_DIR}/table.json",
           "--grace", "5"]
FIRST_STABLE_PORT = 20000


def allocate_ports(current: dict[str, int], wanted: list[str],
                   reserved: set[int]) -> dict[str, int]:
    """Stable gateway ports for "svc/port" keys; existing ones never move."""
    out = dict(current)
    used = set(out.values()) | reserved
    port = FIRST_STABLE_PORT
    for key in wanted:
        if key in out:
            continue
        while port in used:
            port += 1
        out[key] = port
        used.add(port)
    return out


def gateway_spec(app: str, image: str, network: str, port: int, host_dir: str,
                 node_id: str, extra_ports: list[int] | None = None
                 ) -> tuple[ServiceSpec, dict[str, Any]]:
    """The gateway service; `extra_ports` (blue/green preview ports) are published too.
    They come from the manifest, so they change only when it does, never mid-rollout."""
    template = {
        "ContainerSpec": {
            "Image": image,
            "Command": COMMAND,
            "Labels": {**names.base_labels(app), names.LABEL_SERVICE: names.GATEWAY},
            "Mounts": [{"Type": "bind", "Source": host_dir, "Target": CONTROL_DIR}],
            "StopGracePeriod": 10 * 1_000_000_000,
        },
        "RestartPolicy": {"Condition": "any", "Delay": 500_000_000, "MaxAttempts": 0},
        "Placement": {"Constraints": [f"node.id=={node_id}"]},
        "Networks": [{"Target": network, "Aliases": [names.GATEWAY]}],
    }
    endpoint = {"Mode": "dnsrr", "Ports": [
        {"Protocol": "tcp", "TargetPort": p, "PublishedPort": p, "PublishMode": "host"}
        for p in [port, *sorted(set(extra_ports or []) - {port})]]}
    deploy_hash = digest({"template": template, "endpoint": endpoint})
    labels = {**names.base_labels(app), names.LABEL_SERVICE: names.GATEWAY,
              names.LABEL_ROLE: "gateway", names.LABEL_SUBSET: "stable",
              names.LABEL_DEPLOY_HASH: deploy_hash}
    # A host-published port cannot be held by two tasks on one node: stop-first.
    update = {"Parallelism": 1, "Order": "stop-first", "FailureAction": "continue"}
    spec = ServiceSpec(names.service_name(app, names.GATEWAY, "gateway"), labels, template, 1,
                       endpoint, update, [], deploy_hash)
    return spec, {"update_config": update, "endpoint_spec": endpoint}


def endpoint_views(obs: ServiceObs, ports: dict[str, int],
                   subset: str | None = None) -> list[EndpointView]:
    """The ready-or-not tasks of one Swarm service, in `subset` (default: main services
    are stable, a second service plays the subset on its label)."""
    role = obs.role
    subset = subset or (obs.subset if role == "second" else "stable")
    views = []
    for task in obs.tasks:
        if task.address is None or task.stopping:
            continue
        views.append(EndpointView(names.endpoint_id(obs.service, role, task.slot, task.id),
                                  subset, task.address, ports, task.ready))
    return views


def route_table(*, gateway_port: int, metrics_port: int, routes: list[RouteView],
                services: list[ServiceRouting], tls: GatewayTls | None = None,
                max_client_connections: int = 0) -> dict[str, Any]:
    """A TABLE whose listeners all bind the container's every address."""
    table = build_table(bind="0.0.0.0", gateway_port=gateway_port, metrics_port=metrics_port,
                        routes=routes, services=services, tls=tls,
                        max_client_connections=max_client_connections)
    for listener in table["listeners"]:
        listener["bind"] = "0.0.0.0"
    return table


def service_routing(name: str, model: dict[str, Any], stable_ports: dict[str, int],
                    observed: list[ServiceObs], weights: dict[str, int],
                    subsets: dict[str, str] | None = None,
                    preview_port: int | None = None,
                    hold: dict[str, float] | None = None) -> ServiceRouting:
    """`subsets`: role -> subset from this tick's plan (a blue/green swap); `preview_port`:
    where a blue/green preview answers alone."""
    named = port_map(model)
    declared = {p: port for p, (_, port) in named.items()}
    endpoints: list[EndpointView] = []
    for obs in observed:
        endpoints.extend(endpoint_views(obs, declared, (subsets or {}).get(obs.role)))
    return ServiceRouting(
        name=name,
        ports={p: (proto, stable_ports[f"{name}/{p}"]) for p, (proto, _) in named.items()
               if f"{name}/{p}" in stable_ports},
        endpoints=endpoints, weights=weights, preview_port=preview_port, hold=hold)
