"""The manifest model (`mso.yaml`) and its cross-reference checks.

All models are frozen pydantic v2 models that reject unknown keys. This module also
re-exports every model so callers can `from mso.spec.models import Service, Probe, ...`.
Checks across services (dependencies and their cycles, routes, name collisions) run in
`Manifest`'s after-validator and report each problem at its own field path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from mso.spec.errors import Loc, LocatedError
from mso.spec.fields import BindAddress, Count, Name, PortNumber, RelPath, SpecModel
from mso.spec.units import ByteSize, Duration
from mso.spec.graph import find_cycle
from mso.spec.health import Health, Probe, ProbeKind
from mso.spec.rollout import (
    AnalysisSpec,
    Autoscale,
    Pause,
    PrometheusProvider,
    Provider,
    Rollout,
    Step,
    StepAnalysis,
    Strategy,
    WebhookProvider,
)
from mso.spec.service import Backoff, Build, Condition, ConfigFile, Job, Port, Resources, Secret, Service, Stop, Watch, WatchSignal

__all__ = [
    "AnalysisSpec", "Autoscale", "Backoff", "Build", "Certificate", "Condition", "ConfigFile", "Engines", "Gateway", "GatewayTls", "Hsts",
    "Health", "Job", "KubernetesSettings", "Manifest", "Pause", "Port", "Probe", "ProbeKind",
    "PrometheusProvider", "Provider", "RateLimit", "Resources", "Rollout", "Route", "Secret", "Service", "Step",
    "StepAnalysis", "Stop", "Strategy", "SwarmSettings", "Tracing", "Watch", "WatchSignal",
    "WebhookProvider",
]  # fmt: skip


class Certificate(SpecModel):
    """One PEM certificate (chain) and its private key."""

    cert: RelPath = Field(description="PEM file with the certificate, then any intermediates (relative to the manifest).")
    key: RelPath = Field(description="PEM file with the certificate's private key (relative to the manifest); read by the gateway only, never copied into mso's state.")


class Hsts(SpecModel):
    """The Strict-Transport-Security header added to HTTPS responses."""

    max_age: Duration = Field(31536000.0, description="How long browsers remember to use HTTPS only (max-age): a duration or seconds, default one year (8760h).")
    include_subdomains: bool = Field(False, description="Add includeSubDomains.")

    def header(self) -> str:
        return f"max-age={int(self.max_age)}" + ("; includeSubDomains" if self.include_subdomains else "")


def _tls_shorthand(value: Any) -> Any:
    """`tls: [{cert, key}, ...]` is short for `tls: {certificates: [...]}`."""
    if isinstance(value, list):
        return {"certificates": value}
    return value


class GatewayTls(SpecModel):
    """TLS termination at the gateway: HTTPS on `port`, `gateway.port` redirects to it."""

    cert: RelPath | None = Field(None, description="PEM certificate file (with `key`); or list several in `certificates`.")
    key: RelPath | None = Field(None, description="PEM private key file of `cert`.")
    certificates: list[Certificate] = Field(default_factory=list, description="Several certificates; each client gets the one whose names match its SNI server name (wildcards too), a client without SNI the first.")
    port: PortNumber = Field(8443, description="Port the gateway serves HTTPS on (the published port on Swarm/K8s).")
    redirect: bool = Field(True, description="`gateway.port` answers every request with 308 to the same URL on https; false: it keeps serving the routes over plain HTTP.")
    hsts: Hsts | None = Field(None, description="Add Strict-Transport-Security to HTTPS responses that do not carry one.")

    @model_validator(mode="after")
    def _pairs(self) -> GatewayTls:
        if (self.cert is None) != (self.key is None):
            raise LocatedError([((("key" if self.key is None else "cert"),), "cert and key go together: write both")])
        if self.cert is None and not self.certificates:
            raise LocatedError([((), "write cert and key (or a list of them in certificates)")])
        return self

    def pairs(self) -> list[tuple[str, str, str]]:
        """(cert, key, dotted field of the pair) of every certificate, the default first."""
        out = [(self.cert, self.key, "gateway.tls")] if self.cert is not None and self.key is not None else []
        return out + [(c.cert, c.key, f"gateway.tls.certificates.{i}") for i, c in enumerate(self.certificates)]


class Gateway(SpecModel):
    """The one entry point for outside traffic."""

    bind: BindAddress = Field("127.0.0.1", description="Address the gateway listens on (local engine).")
    port: PortNumber = Field(8080, description="Gateway port (plain HTTP); on Swarm/K8s the published port. With `tls`, it redirects to https unless `tls.redirect: false`.")
    tls: Annotated[GatewayTls | None, BeforeValidator(_tls_shorthand)] = Field(None, description="Terminate TLS: `{cert, key}` (PEM files) or a list of them, chosen by SNI; HTTPS on `tls.port` (8443).")
    max_connections_per_client: Count | None = Field(None, ge=1, description="Open connections one client address may hold at the gateway (each gateway process); one more is answered 429 and closed before anything is read.")

    @model_validator(mode="after")
    def _ports(self) -> Gateway:
        if self.tls is not None and self.tls.port == self.port:
            raise LocatedError([(("tls", "port"), f"port {self.port} is gateway.port (plain HTTP); give HTTPS its own port")])
        return self


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}


def _per_second(value: Any) -> Any:
    """`100/s`, `600/m`, `10/h`, or a number of requests per second."""
    if isinstance(value, str):
        match = _RATE.match(value)
        if match is None:
            raise ValueError(f"expected a rate such as 100/s, 600/m or 10/h, got {value!r}")
        value = float(match.group(1)) / _PER[match.group(2)]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"expected a rate above 0 such as 100/s, got {value!r}")
    return float(value)


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class RateLimit(SpecModel):
    """A token bucket per client: `rate` requests refill it, `burst` is its size."""

    rate: Annotated[float, BeforeValidator(_per_second), WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?/(s|sec|second|m|min|minute|h|hour)$"}, {"type": "number", "exclusiveMinimum": 0}], "description": "Requests per second (a number), or 100/s, 600/m, 10/h."})] = Field(description="Sustained requests per client: `100/s`, `600/m`, `10/h`, or a number per second.")
    burst: Count | None = Field(None, ge=1, description="Requests a client may send at once above the rate (the bucket's size); default: one second's worth of `rate`, at least 1.")
    by: str = Field("client", description="Who a bucket belongs to: `client` (the client's address as the gateway sees it) or `header:NAME` (the value of that request header; requests without it count by client address).")

    @field_validator("by")
    @classmethod
    def _by(cls, value: str) -> str:
        if value == "client":
            return value
        kind, sep, name = value.partition(":")
        if kind != "header" or not sep or not _HEADER_NAME.match(name.strip()):
            raise ValueError(f"expected `client` or `header:NAME` (e.g. header:X-Api-Key), got {value!r}")
        return f"header:{name.strip()}"

    def header(self) -> str:
        """The header the buckets are keyed by ("" for the client address)."""
        return self.by.partition(":")[2] if self.by.startswith("header:") else ""

    def bucket_size(self) -> int:
        return self.burst if self.burst is not None else max(1, int(-(-self.rate // 1)))

    def table(self) -> dict[str, Any]:
        """The route table's `rate_limit` (mso.proxy.table)."""
        return {"rate": self.rate, "burst": self.bucket_size(), "header": self.header()}


class Route(SpecModel):
    """Gateway route: first match wins (order routes longest path prefix first)."""

    path: str = Field("/", description="Path prefix to match.")
    host: str | None = Field(None, description="Optional Host header to match.")
    service: Name = Field(description="Service receiving the traffic.")
    port: str | None = Field(None, description="Named http port of the service; default: its first http port.")
    rate_limit: RateLimit | None = Field(None, description="Requests per client over this route: a token bucket per client address or header value; over it, 429 with Retry-After.")
    max_body_size: ByteSize | None = Field(None, description="Largest request body this route takes (`1Mi`, `10k`, bytes); a larger one is answered 413, chunked bodies as soon as they go over.")

    def limits(self) -> dict[str, Any]:
        """The route's limits as the route table (and mso's state) carry them."""
        out: dict[str, Any] = {}
        if self.rate_limit is not None:
            out["rate_limit"] = self.rate_limit.table()
        if self.max_body_size is not None:
            out["max_body"] = self.max_body_size
        return out

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/', got {value!r}")
        return value


class SwarmSettings(SpecModel):
    network: str | None = Field(None, description="Overlay network the stack's services join.")


class KubernetesSettings(SpecModel):
    namespace: str | None = Field(None, description="Namespace for all objects (default: the app name).")


_PERCENTAGE = re.compile(r"^(\d{1,3}(\.\d+)?)%$")


def _fraction(value: Any) -> float:
    """A sampling fraction: a number 0-1 or a percentage string ("1%", "0.5%")."""
    if isinstance(value, str):
        match = _PERCENTAGE.match(value.strip())
        if match and float(match.group(1)) <= 100:
            return float(match.group(1)) / 100.0
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"expected a fraction 0-1 or a percentage such as '1%', got {value!r}")


Fraction = Annotated[
    float,
    BeforeValidator(_fraction),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": 1},
                              {"type": "string", "pattern": r"^\d{1,3}(\.\d+)?%$"}]}),
]


class Tracing(SpecModel):
    """Request traces recorded by mso's proxy (local engine), exported over OTLP/HTTP."""

    endpoint: str | None = Field(None, description="OTLP/HTTP traces URL of a collector, e.g. http://127.0.0.1:4318/v1/traces; without it the traces are only shown by `mso dashboard`.")
    sample: Fraction = Field(0.01, description="Share of requests without a sampled traceparent that are traced: a fraction or a percentage ('1%'). A request whose traceparent says sampled is always traced.")

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL such as http://127.0.0.1:4318/v1/traces, got {value!r}")
        return value


class Engines(SpecModel):
    """Engine-specific settings; the rest of the manifest is the same everywhere."""

    swarm: SwarmSettings = Field(default_factory=SwarmSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)


class Manifest(SpecModel):
    """A whole `mso.yaml`."""

    app: Name = Field(description="DNS-1123 label; names the stack on every engine.")
    engine: Literal["local", "swarm", "kubernetes"] = Field("local", description="Default engine; --engine overrides.")
    gateway: Gateway = Field(default_factory=Gateway, description="The entry point for outside traffic.")
    routes: list[Route] = Field(default_factory=list, description="Gateway routes; first match wins.")
    services: dict[Name, Service] = Field(default_factory=dict, description="Long-running services by name.")
    jobs: dict[Name, Job] = Field(default_factory=dict, description="One-off tasks by name.")
    engines: Engines = Field(default_factory=Engines, description="Engine-specific settings.")
    tracing: Tracing | None = Field(None, description="Trace requests through mso's proxy and export the spans over OTLP/HTTP.")

    @model_validator(mode="after")
    def _cross_references(self) -> Manifest:
        issues: list[tuple[Loc, str]] = []
        for name in self.jobs:
            if name in self.services:
                issues.append((("jobs", name), f"{name!r} is both a service and a job; names must be unique"))
        issues.extend(self._dependency_issues())
        issues.extend(self._route_issues())
        issues.extend(self._preview_port_issues())
        if not issues:
            issues.extend(self._cycle_issues())
        if issues:
            raise LocatedError(issues)
        return self

    def runnable(self, name: str) -> Service | Job:
        """The service or job called `name` (KeyError if neither)."""
        if name in self.services:
            return self.services[name]
        return self.jobs[name]

    def _dependency_issues(self) -> list[tuple[Loc, str]]:
        issues: list[tuple[Loc, str]] = []
        owners: list[tuple[str, str, Service | Job]] = [("services", n, s) for n, s in self.services.items()]
        owners += [("jobs", n, j) for n, j in self.jobs.items()]
        for section, name, item in owners:
            for dep, cond in item.depends_on.items():
                loc: Loc = (section, name, "depends_on", dep)
                issues.extend(self._dependency_issue(loc, name, dep, cond))
        for name, job in self.jobs.items():
            for i, target in enumerate(job.before):
                if target not in self.services:
                    issues.append((("jobs", name, "before", i), f"unknown service {target!r}{self._known('services')}"))
        return issues

    def _dependency_issue(self, loc: Loc, owner: str, dep: str, cond: Condition) -> list[tuple[Loc, str]]:
        if dep == owner:
            return [(loc, f"{owner!r} cannot depend on itself")]
        if dep in self.jobs:
            if cond != "completed":
                return [(loc, f"{dep!r} is a job; the only condition for a job is completed")]
            return []
        if dep not in self.services:
            return [(loc, f"unknown service or job {dep!r}{self._known('services')}")]
        if cond == "completed" and self.services[dep].restart == "always":
            return [(loc, f"{dep!r} has restart: always and never completes; use started or healthy")]
        return []

    def _route_issues(self) -> list[tuple[Loc, str]]:
        issues: list[tuple[Loc, str]] = []
        seen: dict[tuple[str | None, str], int] = {}
        for i, route in enumerate(self.routes):
            service = self.services.get(route.service)
            if service is None:
                issues.append((("routes", i, "service"), f"unknown service {route.service!r}{self._known('services')}"))
                continue
            issues.extend(_route_port_issue(i, route, service))
            key = (route.host, route.path)
            if key in seen:
                issues.append((("routes", i), f"same host and path as route {seen[key]}, which always matches first"))
            seen.setdefault(key, i)
        return issues

    def _preview_port_issues(self) -> list[tuple[Loc, str]]:
        """Blue/green preview ports are opened beside the gateway's: one listener each."""
        issues: list[tuple[Loc, str]] = []
        seen: dict[int, str] = {self.gateway.port: "the gateway (gateway.port)"}
        if self.gateway.tls is not None:
            seen[self.gateway.tls.port] = "the gateway's HTTPS (gateway.tls.port)"
        for name, svc in self.services.items():
            port = svc.rollout.preview_port
            if svc.rollout.strategy != "blue_green" or port is None:
                continue
            if port in seen:
                issues.append((("services", name, "rollout", "preview_port"),
                               f"port {port} is already used by {seen[port]}"))
            else:
                seen[port] = f"service {name!r}"
        return issues

    def _cycle_issues(self) -> list[tuple[Loc, str]]:
        edges: dict[str, list[str]] = {}
        items: list[tuple[str, Service | Job]] = [*self.services.items(), *self.jobs.items()]
        for name, item in items:
            edges.setdefault(name, []).extend(item.depends_on)
        for name, job in self.jobs.items():
            for target in job.before:
                edges.setdefault(target, []).append(name)
        cycle = find_cycle(edges)
        if cycle is None:
            return []
        return [(self._edge_loc(cycle[0], cycle[1 % len(cycle)]), "dependency cycle: " + " -> ".join([*cycle, cycle[0]]))]

    def _edge_loc(self, node: str, dep: str) -> Loc:
        """Where the edge `node` needs `dep` is written: node's depends_on, or dep's before."""
        if dep in self.runnable(node).depends_on:
            section = "services" if node in self.services else "jobs"
            return (section, node, "depends_on", dep)
        return ("jobs", dep, "before", self.jobs[dep].before.index(node))

    def _known(self, section: Literal["services", "jobs"]) -> str:
        names = list(self.services) if section == "services" else list(self.jobs)
        return f" (defined: {', '.join(names)})" if names else ""


def _route_port_issue(index: int, route: Route, service: Service) -> list[tuple[Loc, str]]:
    if route.port is None:
        if service.first_http_port() is None:
            return [(("routes", index, "service"), f"service {route.service!r} has no http port to route to")]
        return []
    port = service.ports.get(route.port)
    if port is None:
        known = ", ".join(service.ports) or "none"
        return [(("routes", index, "port"), f"service {route.service!r} has no port {route.port!r} (defined: {known})")]
    if port.protocol != "http":
        return [(("routes", index, "port"), f"port {route.port!r} is tcp; only http ports can be routed through the gateway")]
    return []
