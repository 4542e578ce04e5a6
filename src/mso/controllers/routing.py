"""The proxy's route table, computed from services, their ports and their ready replicas.

Pure but for `file_rev` (a stat of the certificate files): the daemon calls `build_table` whenever readiness, membership or weights change and
pushes the result to the proxy only if it differs from the last one pushed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EndpointView:
    id: str
    subset: str
    host: str
    ports: dict[str, int]
    ready: bool


@dataclass(frozen=True)
class ServiceRouting:
    """How one service is reached: its named ports with their stable listener ports."""

    name: str
    ports: dict[str, tuple[str, int]]  # port name -> (protocol, stable listener port)
    endpoints: list[EndpointView] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=lambda: {"stable": 100})
    balancer: str = "round_robin"
    preview_port: int | None = None  # blue/green: where the preview subset answers
    #: Why no endpoint is ready (the gateway's 503 says it), e.g. "web-1 BACKOFF: ...".
    unavailable: str = ""
    #: Idempotent requests: a second try on another endpoint after this many seconds
    #: without an answer (0: the proxy's default, off), and hedging (0: off); the
    #: manifest's `proxy.per_try_timeout` / `proxy.hedge_delay`.
    per_try_timeout: float = 0.0
    hedge_delay: float = 0.0
    #: The release each subset runs (a label of the proxy's metrics).
    releases: dict[str, int] = field(default_factory=dict)
    #: Scale to zero (`autoscale.min: 0`): the proxy holds requests while no endpoint is
    #: ready, {"queue": n, "timeout": s} (mso.proxy.hold); None: 503 at once.
    hold: dict[str, float] | None = None


def proxy_timeouts(svc: ServiceRouting) -> dict[str, float]:
    """The cluster's `timeouts` entries for the per-try timeout and hedging, if any."""
    out = {}
    if svc.per_try_timeout > 0:
        out["per_try"] = svc.per_try_timeout
    if svc.hedge_delay > 0:
        out["hedge"] = svc.hedge_delay
    return out


@dataclass(frozen=True)
class GatewayTls:
    """`gateway.tls` as the route table carries it: file paths (the proxy reads them; no
    key material in a table) and each pair's `rev`, which changes with the files."""

    port: int
    certificates: list[tuple[str, str, str]]  # (cert path, key path, rev)
    redirect: bool = True
    hsts: str = ""

    def table(self) -> dict[str, Any]:
        out: dict[str, Any] = {"certificates": [{"cert": c, "key": k, "rev": r}
                                                for c, k, r in self.certificates]}
        if self.hsts:
            out["hsts"] = self.hsts
        return out


def file_rev(*paths: str) -> str:
    """What changes when one of the files does (size, mtime, inode): cheap enough to
    check on every reconcile; never the content, so nothing of a key leaves its file."""
    parts = []
    for path in paths:
        try:
            st = os.stat(path)
            parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        except OSError as exc:
            parts.append(f"missing:{exc.errno}")
    return "/".join(parts)


@dataclass(frozen=True)
class RouteView:
    path: str
    host: str | None
    service: str
    port: str


def cluster_name(service: str, port: str) -> str:
    return f"{service}/{port}"


def build_table(*, bind: str, gateway_port: int, metrics_port: int | None,
                routes: list[RouteView], services: list[ServiceRouting],
                draining: frozenset[str] = frozenset(),
                tracing: dict[str, Any] | None = None,
                container_bind: str | None = None,
                tls: GatewayTls | None = None) -> dict[str, Any]:
    """Return a TABLE (docs/architecture.md) without its version number. `tracing`: the
    table's tracing object (endpoint, sample, app), or None for no tracing.
    `container_bind`: the host's address on the containers' bridge (local containers reach
    the services they depend on there: 127.0.0.1 is their own), or None. `tls`: HTTPS on
    its own port ("gateway-tls"), the plain gateway port redirecting to it unless
    `tls.redirect` is false."""
    gateway_routes = [{"host": r.host, "path": r.path,
                       "cluster": cluster_name(r.service, r.port)} for r in routes]
    listeners: list[dict[str, Any]] = [{
        "name": "gateway", "bind": bind, "port": gateway_port, "mode": "http",
        "routes": gateway_routes}]
    if tls is not None:
        if tls.redirect:
            listeners[0].update(routes=[], redirect=tls.port)
        listeners.append({"name": "gateway-tls", "bind": bind, "port": tls.port,
                          "mode": "http", "routes": gateway_routes, "tls": tls.table()})
    if metrics_port is not None:
        listeners.append({"name": "metrics", "bind": bind, "port": metrics_port,
                          "mode": "metrics"})
    clusters: dict[str, Any] = {}
    for svc in services:
        for port_name, (protocol, stable_port) in sorted(svc.ports.items()):
            name = cluster_name(svc.name, port_name)
            listeners.append({"name": name, "bind": "127.0.0.1", "port": stable_port,
                              "mode": protocol, "cluster": name})
            if container_bind is not None:
                listeners.append({"name": f"{name}@containers", "bind": container_bind,
                                  "port": stable_port, "mode": protocol, "cluster": name})
            clusters[name] = {"service": svc.name, "balancer": svc.balancer,
                              "subsets": _subsets(svc, port_name, draining)}
            if protocol == "http" and proxy_timeouts(svc):
                clusters[name]["timeouts"] = proxy_timeouts(svc)
            if protocol == "http" and svc.hold is not None:
                clusters[name]["hold"] = dict(svc.hold)
            if svc.unavailable and not any(s["endpoints"] and s["weight"] > 0 for s in
                                           clusters[name]["subsets"].values()):
                clusters[name]["unavailable"] = svc.unavailable
        _add_preview(svc, bind, listeners, clusters, draining)
    # A route to a service that is not (or no longer) desired has nowhere to go: drop it,
    # so the gateway answers 404 for it rather than the whole table being rejected.
    for listener in listeners:
        if listener["name"] in ("gateway", "gateway-tls"):
            listener["routes"] = [r for r in listener["routes"] if r["cluster"] in clusters]
    table: dict[str, Any] = {"listeners": listeners, "clusters": clusters}
    if tracing is not None:
        table["tracing"] = tracing
    return table


def _subsets(svc: ServiceRouting, port_name: str,
             draining: frozenset[str]) -> dict[str, Any]:
    subsets: dict[str, Any] = {name: {"weight": weight, "endpoints": []}
                               for name, weight in svc.weights.items()}
    for ep in sorted(svc.endpoints, key=lambda e: e.id):
        if not ep.ready or ep.id in draining or port_name not in ep.ports:
            continue
        subset = subsets.setdefault(ep.subset, {"weight": 0, "endpoints": []})
        subset["endpoints"].append({"id": ep.id,
                                    "address": f"{ep.host}:{ep.ports[port_name]}"})
    for name, subset in subsets.items():
        if svc.releases.get(name):
            subset["release"] = svc.releases[name]
    return subsets


def _add_preview(svc: ServiceRouting, bind: str, listeners: list[dict[str, Any]],
                 clusters: dict[str, Any], draining: frozenset[str]) -> None:
    """Blue/green: the preview subset alone, on its own port, for testers."""
    http = next((p for p, (proto, _) in sorted(svc.ports.items()) if proto == "http"), None)
    if svc.preview_port is None or http is None:
        return
    name = cluster_name(svc.name, http) + "@preview"
    preview = ServiceRouting(svc.name, svc.ports, [e for e in svc.endpoints
                                                   if e.subset == "preview"],
                             {"preview": 100}, releases=svc.releases)
    listeners.append({"name": name, "bind": bind, "port": svc.preview_port, "mode": "http",
                      "cluster": name})
    clusters[name] = {"service": svc.name, "balancer": svc.balancer,
                      "subsets": _subsets(preview, http, draining)}
    if proxy_timeouts(svc):
        clusters[name]["timeouts"] = proxy_timeouts(svc)
