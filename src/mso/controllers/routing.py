"""The proxy's route table, computed from services, their ports and their ready replicas.

Pure but for `file_rev` (a stat of the certificate files): the daemon calls `build_table` whenever readiness, membership or weights change and
pushes the result to the proxy only if it differs from the last one pushed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mso.spec.loaded import LoadedManifest

from mso.spec.models import RateLimit


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
    #: Each certificate's DNS names, read here for a gateway that cannot (no x509 parser
    #: in its image); empty: the proxy reads them.
    names: list[tuple[str, ...]] = field(default_factory=list)

    def table(self) -> dict[str, Any]:
        out: dict[str, Any] = {"certificates": [{"cert": c, "key": k, "rev": r}
                                                for c, k, r in self.certificates]}
        for entry, names in zip(out["certificates"], self.names):
            entry["names"] = list(names)
        if self.hsts:
            out["hsts"] = self.hsts
        return out


def tls_config(loaded: LoadedManifest) -> dict[str, Any] | None:
    """`gateway.tls` as every engine's app settings keep it: certificate *paths* only
    (absolute, on the machine that runs mso), never their content."""
    tls = loaded.manifest.gateway.tls
    if tls is None:
        return None
    return {"port": tls.port, "redirect": tls.redirect,
            "hsts": tls.hsts.header() if tls.hsts is not None else "",
            "certificates": [{"cert": str(c), "key": str(k)} for c, k in loaded.tls_files()]}


def gateway_tls(raw: dict[str, Any] | None, paths: list[tuple[str, str]] | None = None,
                rev: Callable[[str, str], str] | None = None) -> GatewayTls | None:
    """The table's TLS settings from `tls_config`'s dict; `paths`: where the gateway reads
    each (cert, key) pair when that is not where mso reads them (a copy in a container's
    folder). Each pair's `rev` is taken from mso's own files (`file_rev`, or `rev`)."""
    if not raw:
        return None
    pairs = [(c["cert"], c["key"]) for c in raw["certificates"]]
    revs = [(rev or file_rev)(c, k) for c, k in pairs]
    return GatewayTls(port=int(raw["port"]), redirect=bool(raw.get("redirect", True)),
                      hsts=str(raw.get("hsts") or ""),
                      certificates=[(w[0], w[1], rev)
                                    for w, rev in zip(paths or pairs, revs)],
                      names=[] if paths is None else
                      [_cert_names(c, rev) for (c, _), rev in zip(pairs, revs)])


@functools.lru_cache(maxsize=64)
def _cert_names(path: str, rev: str) -> tuple[str, ...]:
    """A certificate file's DNS names, read once per version of the file (`rev`)."""
    from mso.spec.certs import names_in_file  # cryptography: only when TLS is used
    return names_in_file(path)


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
class RouteLimits:
    """A route's `rate_limit` and `max_body_size` as the proxy enforces them
    (mso.proxy.limits)."""

    rate: float = 0.0  # requests per second; 0: no rate limit
    burst: int = 1
    header: str = ""  # "": a bucket per client address
    max_body: int = -1  # bytes; -1: no limit

    @classmethod
    def of(cls, route: Mapping[str, Any]) -> RouteLimits:
        """From a route as the manifest writes it (and the engines keep it in state)."""
        raw, max_body = route.get("rate_limit"), route.get("max_body_size")
        body = -1 if max_body is None else int(max_body)
        if not raw:
            return cls(max_body=body)
        limit = RateLimit.model_validate(raw)
        return cls(limit.rate, limit.bucket_size(), limit.header(), body)

    def table(self) -> dict[str, Any]:
        """The route-table fields (none for a route without limits)."""
        out: dict[str, Any] = {}
        if self.rate > 0:
            out["rate_limit"] = {"rate": self.rate, "burst": self.burst, "header": self.header}
        if self.max_body >= 0:
            out["max_body"] = self.max_body
        return out


@dataclass(frozen=True)
class RouteView:
    path: str
    host: str | None
    service: str
    port: str
    limits: RouteLimits = field(default_factory=RouteLimits)


def cluster_name(service: str, port: str) -> str:
    return f"{service}/{port}"


def build_table(*, bind: str, gateway_port: int, metrics_port: int | None,
                routes: list[RouteView], services: list[ServiceRouting],
                draining: frozenset[str] = frozenset(),
                tracing: dict[str, Any] | None = None,
                container_bind: str | None = None,
                tls: GatewayTls | None = None,
                max_client_connections: int = 0) -> dict[str, Any]:
    """Return a TABLE (docs/architecture.md) without its version number. `tracing`: the
    table's tracing object (endpoint, sample, app), or None for no tracing.
    `container_bind`: the host's address on the containers' bridge (local containers reach
    the services they depend on there: 127.0.0.1 is their own), or None. `tls`: HTTPS on
    its own port ("gateway-tls"), the plain gateway port redirecting to it unless
    `tls.redirect` is false. `max_client_connections`: open connections per client
    address at the gateway (0: no limit)."""
    gateway_routes = [{"host": r.host, "path": r.path,
                       "cluster": cluster_name(r.service, r.port), **r.limits.table()}
                      for r in routes]
    listeners: list[dict[str, Any]] = [{
        "name": "gateway", "bind": bind, "port": gateway_port, "mode": "http",
        "routes": gateway_routes}]
    if tls is not None:
        if tls.redirect:
            listeners[0].update(routes=[], redirect=tls.port)
        listeners.append({"name": "gateway-tls", "bind": bind, "port": tls.port,
                          "mode": "http", "routes": gateway_routes, "tls": tls.table()})
    if max_client_connections:
        for listener in listeners:
            listener["max_client_connections"] = max_client_connections
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
