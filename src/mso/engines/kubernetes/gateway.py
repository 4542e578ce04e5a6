"""The mso gateway on Kubernetes: its objects, and the route table it serves.

The gateway is mso's own proxy in `GATEWAY_REPLICAS` pods behind one Service. It serves
the manifest's routes, one listener per service port (the Service named after each mso
service selects the gateway, so a service's stable address is the gateway), and splits
each cluster between the subset Services `svc-stable` and `svc-canary` by weight. The
cluster has no DNS in the lab, so table addresses are the subset Services' ClusterIPs:
`${SVC_STABLE_SERVICE_HOST}` in the rendered table (filled in from the pod's service
variables by `gatewayd`), real IPs when the controller pushes a table (to every ready
gateway pod; the analysis reads each pod's counters).

In each pod the proxy runs under mso's supervisor (`gatewayd`): a killed serving proxy is
replaced by a spare that takes over the held listening sockets, and the table saved in
an emptyDir (`STATE_DIR`) is served at once by a restarted container. A killed container
or a deleted pod leaves the other pod serving; kube-proxy drops the dead one from the
Service once it is not ready.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mso.controllers.routing import (EndpointView, GatewayTls, RouteView, ServiceRouting,
                                     build_table, gateway_tls)
from mso.engines.kubernetes import naming
from mso.engines.kubernetes.kube import KubeError
from mso.engines.kubernetes.render import Obj, meta, pre_stop
from mso.engines.kubernetes.workload import Workload

TABLE_PATH = "/etc/mso/gateway/table.json"
TOKEN_DIR = "/etc/mso/gateway-control"
CONTROL_SECRET = "mso-gateway-control"
STATE_DIR = "/run/mso-gateway"
TLS_DIR = "/etc/mso/gateway-tls"  # `gateway.tls`: the certificate Secret, mounted read-only
GATEWAY_REPLICAS = 2
NEVER = 2**31 - 1  # consecutive failures before an ejection: none


@dataclass(frozen=True)
class GatewaySpec:
    app: str
    namespace: str
    port: int
    routes: tuple[RouteView, ...]
    services: dict[str, dict[str, tuple[str, int]]]  # service -> port name -> (proto, port)
    image: str
    previews: dict[str, int] = field(default_factory=dict)  # blue/green service -> preview_port
    max_client_connections: int = 0  # per client address at the gateway; 0: no limit
    #: `gateway.tls` as the pods read it (pod_tls): files under TLS_DIR, from the Secret.
    tls: GatewayTls | None = None
    #: The certificate files on this machine, for the Secret: ((cert, key), ...).
    tls_files: tuple[tuple[str, str], ...] = ()

    def listener_ports(self) -> dict[str, int]:
        keys = [f"{s}/{p}" for s, ports in self.services.items() for p in ports]
        return naming.listener_ports(keys, reserved=set(self.previews.values()))

    def exposed_ports(self) -> list[tuple[str, int]]:
        """(name, port) the gateway pod serves to the cluster: its Deployment and Service."""
        out = [("http", self.port), ("metrics", naming.GATEWAY_METRICS_PORT)]
        for number in sorted(set(self.previews.values()) - {self.port}):
            out.append((f"preview-{number}", number))
        if self.tls is not None:
            out.append(("https", self.tls.port))
        return out

    def tls_secret_name(self) -> str:
        """Named by the files' content: a renewed certificate is a new Secret, hence a new
        pod template, and the gateway pods roll over to it one at a time (maxUnavailable
        0, each drained by its preStop hook), while the old Secret serves the old pods."""
        h = hashlib.sha256()
        for cert, key in self.tls_files:
            h.update(hashlib.sha256(Path(cert).read_bytes()).digest())
            h.update(hashlib.sha256(Path(key).read_bytes()).digest())
        return f"{naming.GATEWAY}-tls-{h.hexdigest()[:10]}"


def _content_rev(cert: str, key: str) -> str:
    """The pair's rev for a table the pods read: the certificate's content (a Secret's
    files keep no mtime across machines), never the key's."""
    return hashlib.sha256(Path(cert).read_bytes()).hexdigest()[:16]


def pod_tls(raw: dict[str, Any] | None) -> GatewayTls | None:
    """`gateway.tls` (tls_config's dict) with the paths where the gateway pods read each
    pair: TLS_DIR/N.crt and N.key. The certificates' names travel in the table (the
    gateway image has no x509 parser) so SNI chooses among several there too."""
    if not raw:
        return None
    paths = [(f"{TLS_DIR}/{i}.crt", f"{TLS_DIR}/{i}.key")
             for i in range(len(raw["certificates"]))]
    return gateway_tls(raw, paths, rev=_content_rev)


def tls_secret(spec: GatewaySpec) -> Obj:
    data: dict[str, str] = {}
    for i, (cert, key) in enumerate(spec.tls_files):
        data[f"{i}.crt"] = base64.b64encode(Path(cert).read_bytes()).decode()
        data[f"{i}.key"] = base64.b64encode(Path(key).read_bytes()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(spec.tls_secret_name(), spec.namespace, spec.app,
                             {naming.COMPONENT: "gateway"}),
            "data": data}


def preview_ports(models: dict[str, dict[str, Any]]) -> dict[str, int]:
    """service -> preview_port for every blue/green service model that has one (pure)."""
    out = {}
    reserved = {naming.GATEWAY_CONTROL_PORT: "control", naming.GATEWAY_METRICS_PORT: "metrics"}
    for name, model in models.items():
        rollout = model.get("rollout") or {}
        if rollout.get("strategy") == "blue_green" and rollout.get("preview_port"):
            port = int(rollout["preview_port"])
            if port in reserved:
                raise KubeError(f"services.{name}.rollout.preview_port: {port} is the gateway's "
                                f"{reserved[port]} port on Kubernetes; choose another port")
            out[name] = port
    return out


def table(spec: GatewaySpec, hosts: dict[str, str], weights: dict[str, dict[str, int]],
          previews: set[str] | None = None) -> dict[str, Any]:
    """The TABLE for `hosts` (subset Service name -> address) and per-service weights.

    Services in `previews` (a blue/green rollout awaiting promotion) also get their
    preview listener: the preview subset alone, on the service's `preview_port`.
    """
    listeners = spec.listener_ports()
    routing = []
    for name, ports in sorted(spec.services.items()):
        endpoints = []
        for subset in dict.fromkeys(["stable", *weights.get(name, {})]):
            host = hosts.get(naming.subset_service_name(name, subset))
            if host:
                endpoints.append(EndpointView(naming.subset_service_name(name, subset), subset,
                                              host, {p: num for p, (_, num) in ports.items()},
                                              True))
        routing.append(ServiceRouting(
            name, {p: (proto, listeners[f"{name}/{p}"]) for p, (proto, _) in ports.items()},
            endpoints, weights.get(name, {"stable": 100}),
            preview_port=spec.previews.get(name) if name in (previews or set()) else None))
    built = build_table(bind="0.0.0.0", gateway_port=spec.port,
                        metrics_port=naming.GATEWAY_METRICS_PORT,
                        routes=list(spec.routes), services=routing, tls=spec.tls,
                        max_client_connections=spec.max_client_connections)
    for listener in built["listeners"]:
        listener["bind"] = "0.0.0.0"  # inside the pod, every listener serves the pod's IP
    for cluster in built["clusters"].values():
        # Each subset is one endpoint (a Service; kube-proxy balances over its ready pods,
        # and readiness probes take bad pods out). Ejecting it would eject a whole subset
        # and starve the canary analysis of the very errors it must see; retries still
        # spare clients.
        cluster["outlier"] = {"consecutive_failures": NEVER}
        # kube-proxy picks the pod once per connection: a pooled keep-alive connection
        # would send every request of a gateway pod to one pod of the subset (seen: all
        # requests on one of two ready pods). A new connection per request balances; its
        # price is a connect per request and a TIME_WAIT socket in the gateway pod each
        # (Linux's ~28k ephemeral ports per Service address: some 470 requests/s per
        # gateway pod and subset before connects fail; not measured here yet).
        cluster["pool"] = False
    return built


def provider_hosts(urls: list[str], services: dict[str, str], namespace: str
                   ) -> dict[str, str]:
    """The app's Services named by the providers' `urls` (`prom-stable`,
    `prom-stable.NS`, `prom-stable.NS.svc`, `prom-stable.NS.svc.cluster.local`) -> their
    ClusterIP (`services`: Service name -> ClusterIP): the gateway's `fetch` reaches them
    without cluster DNS (`mso.proxy.fetch`)."""
    out = {}
    for url in urls:
        host = (urlsplit(url).hostname or "").lower()
        name, _, rest = host.partition(".")
        if name in services and rest in ("", namespace, f"{namespace}.svc",
                                         f"{namespace}.svc.cluster.local"):
            out[host] = services[name]
    return out


def template_hosts(spec: GatewaySpec) -> dict[str, str]:
    """Stable subsets only, as `${VAR}` placeholders that gatewayd fills in."""
    return {naming.subset_service_name(s, "stable"):
            "${" + naming.service_host_var(naming.subset_service_name(s, "stable")) + "}"
            for s in spec.services}


def stable_address_service(spec: GatewaySpec, service: str) -> Obj:
    """`svc`: the stable address of a service, served by the gateway's listeners."""
    listeners = spec.listener_ports()
    ports = [{"name": naming.k8s_port_name(p) or f"p{num}", "port": num,
              "targetPort": listeners[f"{service}/{p}"], "protocol": "TCP"}
             for p, (_, num) in spec.services[service].items()]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": meta(service, spec.namespace, spec.app, {naming.SERVICE: service}),
            "spec": {"type": "ClusterIP", "selector": naming.gateway_selector(spec.app),
                     "ports": ports}}


def gateway_objects(spec: GatewaySpec, table_json: str) -> list[Obj]:
    labels = {naming.COMPONENT: "gateway"}
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": meta(f"{naming.GATEWAY}-table", spec.namespace, spec.app, labels),
              "data": {"table.json": table_json}}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": meta(naming.GATEWAY, spec.namespace, spec.app, labels),
               "spec": {"type": "NodePort", "selector": naming.gateway_selector(spec.app),
                        "ports": [{"name": name, "port": number, "targetPort": number,
                                   "protocol": "TCP"} for name, number in spec.exposed_ports()]}}
    tls = [tls_secret(spec)] if spec.tls is not None else []
    return [config, service, *tls, _gateway_deployment(spec)]


def _gateway_deployment(spec: GatewaySpec) -> Obj:
    pod_labels = {**naming.owner_labels(spec.app), **naming.gateway_selector(spec.app)}
    container: Obj = {
        "name": "gateway", "image": spec.image, "imagePullPolicy": "Never",
        "command": ["python3", "-m", "mso.engines.kubernetes.gatewayd", "--table", TABLE_PATH,
                    "--token-dir", TOKEN_DIR,
                    "--control-port", str(naming.GATEWAY_CONTROL_PORT),
                    "--state", f"{STATE_DIR}/table.json"],
        "ports": [*({"name": name, "containerPort": number, "protocol": "TCP"}
                    for name, number in spec.exposed_ports()),
                  {"name": "control", "containerPort": naming.GATEWAY_CONTROL_PORT,
                   "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": spec.port}, "periodSeconds": 1,
                           "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": naming.GATEWAY_CONTROL_PORT},
                          "periodSeconds": 5, "failureThreshold": 3},
        "lifecycle": pre_stop(python=True),
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                      "limits": {"memory": "512Mi"}},
        "volumeMounts": [{"name": "table", "mountPath": "/etc/mso/gateway", "readOnly": True},
                         {"name": "control", "mountPath": TOKEN_DIR, "readOnly": True},
                         {"name": "state", "mountPath": STATE_DIR},
                         *([{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}]
                           if spec.tls is not None else [])]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(naming.GATEWAY, spec.namespace, spec.app, {naming.COMPONENT: "gateway"}),
            "spec": {"replicas": GATEWAY_REPLICAS, "revisionHistoryLimit": 3,
                     "selector": {"matchLabels": naming.gateway_selector(spec.app)},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": pod_labels}, "spec": {
                         "containers": [container], "terminationGracePeriodSeconds": 15,
                         "automountServiceAccountToken": False,
                         "affinity": {"podAntiAffinity": {
                             "preferredDuringSchedulingIgnoredDuringExecution": [{
                                 "weight": 100, "podAffinityTerm": {
                                     "topologyKey": "kubernetes.io/hostname",
                                     "labelSelector": {"matchLabels":
                                                       naming.gateway_selector(spec.app)}}}]}},
                         "volumes": [{"name": "table", "configMap": {"name": f"{naming.GATEWAY}-table"}},
                                     {"name": "control", "secret": {
                                         "secretName": CONTROL_SECRET, "optional": True,
                                         "defaultMode": 0o400}},
                                     {"name": "state", "emptyDir": {}},
                                     *([{"name": "tls", "secret": {
                                         "secretName": spec.tls_secret_name(),
                                         "defaultMode": 0o400}}]
                                       if spec.tls is not None else [])]}}}}


def control_secret(namespace: str, app: str, token: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(CONTROL_SECRET, namespace, app, {naming.COMPONENT: "gateway"}),
            "stringData": {"token": token}}


def spec_for(workloads: list[Workload], app: str, namespace: str, port: int,
             routes: list[RouteView], image: str,
             max_client_connections: int = 0,
             tls: dict[str, Any] | None = None) -> GatewaySpec:
    services = {w.service: w.ports for w in workloads if w.kind == "service" and w.ports}
    models = {w.service: w.model for w in workloads if w.service in services}
    return GatewaySpec(app, namespace, port, tuple(routes), services, image,
                       preview_ports(models), max_client_connections, pod_tls(tls),
                       tls_files(tls))


def tls_files(raw: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple((c["cert"], c["key"]) for c in (raw or {}).get("certificates", []))
