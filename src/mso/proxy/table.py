"""Route table (TABLE) parsing and validation.

Turns the JSON route table of the control protocol (docs/architecture.md) into
immutable, pre-computed structures, so that nothing about routing has to be
derived again on the per-request hot path.  Pure: no I/O, no clocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping
from mso.errors import UsageError

from .tracing import Settings as TracingSettings

LISTENER_MODES = frozenset({"http", "tcp", "metrics"})
BALANCERS = frozenset({"round_robin", "least_request"})


class TableError(UsageError, ValueError):
    """The table is malformed; the message says which field and why."""


@dataclass(frozen=True)
class Timeouts:
    """Per-cluster upstream timeouts in seconds."""

    connect: float = 5.0
    response_header: float = 30.0
    request: float = 300.0
    #: Idempotent requests: a try with no response head after this many seconds gets a
    #: second try on another endpoint (the first keeps going; the first answer wins);
    #: one that loses to a faster answer counts as a failure toward ejection. 0: off.
    per_try: float = 0.0
    #: Idempotent requests: send the second try already after this long. 0: off.
    hedge: float = 0.0


@dataclass(frozen=True)
class OutlierPolicy:
    """Passive outlier ejection settings for one cluster."""

    consecutive_failures: int = 5
    base_ejection_s: float = 10.0
    max_ejection_s: float = 300.0
    max_ejected_percent: float = 50.0


@dataclass(frozen=True)
class EndpointSpec:
    id: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SubsetSpec:
    name: str
    weight: int
    endpoints: tuple[EndpointSpec, ...]
    release: int = 0  # the release this subset runs (0: not said); a metrics label


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    service: str
    balancer: str
    subsets: tuple[SubsetSpec, ...]
    timeouts: Timeouts = field(default_factory=Timeouts)
    outlier: OutlierPolicy = field(default_factory=OutlierPolicy)
    retries: int = 2
    #: Why the control plane has no ready endpoint for this cluster (the 503 body).
    unavailable: str = ""
    #: Scale to zero: hold requests while no endpoint is ready (mso.proxy.hold).
    hold: HoldSpec | None = None
    #: Keep idle upstream connections for reuse. False for an endpoint that stands for
    #: many backends (a Kubernetes Service: kube-proxy picks a pod per connection, so a
    #: pooled connection would pin every request to one pod).
    pool: bool = True


@dataclass(frozen=True)
class HoldSpec:
    queue: int = 100
    timeout: float = 30.0


MAX_UNAVAILABLE = 1000


@dataclass(frozen=True)
class RateLimitSpec:
    """A token bucket per client address, or per value of `header` (limits.py)."""

    rate: float  # tokens per second
    burst: int
    header: str = ""  # "": by client address


@dataclass(frozen=True)
class RouteSpec:
    host: str | None
    path: str
    cluster: str
    rate_limit: RateLimitSpec | None = None
    max_body: int = -1  # bytes of request body; -1: no limit


@dataclass(frozen=True)
class CertSpec:
    """PEM files the proxy reads itself (key material never travels in a table);
    `rev` changes when a file does, so an equal table means equal certificates."""

    cert: str
    key: str
    rev: str = ""
    #: The certificate's DNS names, when the table's maker read them (a gateway in a
    #: container has no x509 parser); empty: the proxy reads them from `cert`.
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsSpec:
    certs: tuple[CertSpec, ...]  # the first is the default (clients without SNI)
    hsts: str = ""  # Strict-Transport-Security value added to responses; "": none


@dataclass(frozen=True)
class ListenerSpec:
    name: str
    bind: str
    port: int
    mode: str
    routes: tuple[RouteSpec, ...] = ()
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    tls: TlsSpec | None = None  # terminate TLS (http listeners)
    #: Answer every request with 308 to https on this port (0: serve the routes).
    redirect: int = 0
    #: Open connections one client address may hold here (limits.py); 0: no limit.
    max_client_connections: int = 0

    @property
    def socket_key(self) -> tuple[str, int, str, bool]:
        """Listeners with an equal key can keep their socket across tables."""
        return (self.bind, self.port, self.mode, self.tls is not None)


@dataclass(frozen=True)
class Table:
    version: int
    listeners: tuple[ListenerSpec, ...]
    clusters: Mapping[str, ClusterSpec]
    tracing: TracingSettings | None = None  # None: no request is traced


def _req(obj: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise TableError(f"{where}: missing required field {key!r}")
    value = obj[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise TableError(f"{where}.{key}: expected {_tname(typ)}, got {type(value).__name__}")
    return value


def _opt_num(obj: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise TableError(f"{where}.{key}: expected a positive number, got {value!r}")
    return float(value)


def _opt_seconds(obj: Mapping[str, Any], key: str, where: str) -> float:
    """An optional duration where 0 (the default) means off."""
    value = obj.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise TableError(f"{where}.{key}: expected a number >= 0 (0: off), got {value!r}")
    return float(value)


def _tname(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def parse_address(address: str, where: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:80") and validate the port."""
    host, sep, port_s = address.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise TableError(f"{where}: address {address!r} is not host:port")
    port = int(port_s)
    if not 0 < port < 65536:
        raise TableError(f"{where}: port {port} out of range 1-65535")
    return host.strip("[]"), port


def _parse_endpoint(raw: Any, where: str) -> EndpointSpec:
    if not isinstance(raw, Mapping):
        raise TableError(f"{where}: expected an object")
    ep_id = _req(raw, "id", str, where)
    host, port = parse_address(_req(raw, "address", str, where), where)
    return EndpointSpec(id=ep_id, host=host, port=port)


def _parse_subset(name: str, raw: Any, where: str) -> SubsetSpec:
    if not isinstance(raw, Mapping):
        raise TableError(f"{where}: expected an object")
    weight = raw.get("weight", 100)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise TableError(f"{where}.weight: expected an integer >= 0, got {weight!r}")
    eps_raw = _req(raw, "endpoints", list, where)
    endpoints = tuple(_parse_endpoint(e, f"{where}.endpoints[{i}]") for i, e in enumerate(eps_raw))
    ids = [e.id for e in endpoints]
    if len(set(ids)) != len(ids):
        raise TableError(f"{where}.endpoints: duplicate endpoint ids {sorted(ids)}")
    release = raw.get("release", 0)
    if isinstance(release, bool) or not isinstance(release, int) or release < 0:
        raise TableError(f"{where}.release: expected an integer >= 0, got {release!r}")
    return SubsetSpec(name=name, weight=weight, endpoints=endpoints, release=release)


def _parse_cluster(name: str, raw: Any) -> ClusterSpec:
    where = f"clusters[{name!r}]"
    if not isinstance(raw, Mapping):
        raise TableError(f"{where}: expected an object")
    balancer = raw.get("balancer", "round_robin")
    if balancer not in BALANCERS:
        raise TableError(f"{where}.balancer: {balancer!r} is not one of {sorted(BALANCERS)}")
    subsets_raw = _req(raw, "subsets", Mapping, where)
    subsets = tuple(
        _parse_subset(str(k), v, f"{where}.subsets[{k!r}]") for k, v in subsets_raw.items()
    )
    t_raw = raw.get("timeouts", {})
    o_raw = raw.get("outlier", {})
    if not isinstance(t_raw, Mapping) or not isinstance(o_raw, Mapping):
        raise TableError(f"{where}: timeouts and outlier must be objects")
    timeouts = Timeouts(
        connect=_opt_num(t_raw, "connect", Timeouts.connect, f"{where}.timeouts"),
        response_header=_opt_num(
            t_raw, "response_header", Timeouts.response_header, f"{where}.timeouts"
        ),
        request=_opt_num(t_raw, "request", Timeouts.request, f"{where}.timeouts"),
        per_try=_opt_seconds(t_raw, "per_try", f"{where}.timeouts"),
        hedge=_opt_seconds(t_raw, "hedge", f"{where}.timeouts"),
    )
    outlier = OutlierPolicy(
        consecutive_failures=int(
            _opt_num(o_raw, "consecutive_failures", 5, f"{where}.outlier")
        ),
        base_ejection_s=_opt_num(o_raw, "base_ejection_s", 10.0, f"{where}.outlier"),
        max_ejection_s=_opt_num(o_raw, "max_ejection_s", 300.0, f"{where}.outlier"),
        max_ejected_percent=_opt_num(o_raw, "max_ejected_percent", 50.0, f"{where}.outlier"),
    )
    retries = raw.get("retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise TableError(f"{where}.retries: expected an integer >= 0")
    unavailable = raw.get("unavailable", "")
    if not isinstance(unavailable, str):
        raise TableError(f"{where}.unavailable: expected a string")
    hold = _parse_hold(raw.get("hold"), f"{where}.hold")
    pool = raw.get("pool", True)
    if not isinstance(pool, bool):
        raise TableError(f"{where}.pool: expected true or false")
    return ClusterSpec(
        name=name,
        service=str(raw.get("service", name)),
        balancer=balancer,
        subsets=subsets,
        timeouts=timeouts,
        outlier=outlier,
        retries=retries,
        unavailable=unavailable[:MAX_UNAVAILABLE],
        hold=hold,
        pool=pool,
    )


def _parse_hold(raw: Any, where: str) -> HoldSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise TableError(f"{where}: expected an object or null")
    queue = raw.get("queue", HoldSpec.queue)
    if isinstance(queue, bool) or not isinstance(queue, int) or queue < 1:
        raise TableError(f"{where}.queue: expected an integer >= 1")
    timeout = _opt_num(raw, "timeout", HoldSpec.timeout, where)
    if timeout <= 0:
        raise TableError(f"{where}.timeout: expected a number > 0")
    return HoldSpec(queue=queue, timeout=timeout)


def _parse_route(raw: Any, where: str, clusters: Mapping[str, ClusterSpec]) -> RouteSpec:
    if not isinstance(raw, Mapping):
        raise TableError(f"{where}: expected an object")
    host = raw.get("host")
    if host is not None and not isinstance(host, str):
        raise TableError(f"{where}.host: expected a string or null")
    path = raw.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/"):
        raise TableError(f"{where}.path: expected a path starting with '/', got {path!r}")
    cluster = _req(raw, "cluster", str, where)
    if cluster not in clusters:
        raise TableError(f"{where}.cluster: unknown cluster {cluster!r}; add it to 'clusters'")
    max_body = raw.get("max_body", -1)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < -1:
        raise TableError(f"{where}.max_body: expected a number of bytes (-1: none), "
                         f"got {max_body!r}")
    return RouteSpec(host=host.lower().split(":")[0] if host else None, path=path,
                     cluster=cluster, max_body=max_body,
                     rate_limit=_parse_rate_limit(raw.get("rate_limit"), f"{where}.rate_limit"))


def _parse_rate_limit(raw: Any, where: str) -> RateLimitSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise TableError(f"{where}: expected an object")
    rate = _opt_num(raw, "rate", 0.0, where) if "rate" in raw else None
    if rate is None:
        raise TableError(f"{where}: missing required field 'rate'")
    burst = raw.get("burst", 1)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise TableError(f"{where}.burst: expected an integer >= 1, got {burst!r}")
    header = raw.get("header", "")
    if not isinstance(header, str) or (header and not all(
            c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in header)):
        raise TableError(f"{where}.header: expected a header name, got {header!r}")
    return RateLimitSpec(rate=rate, burst=burst, header=header)


def _parse_listener(raw: Any, where: str, clusters: Mapping[str, ClusterSpec]) -> ListenerSpec:
    if not isinstance(raw, Mapping):
        raise TableError(f"{where}: expected an object")
    name = _req(raw, "name", str, where)
    mode = raw.get("mode", "http")
    if mode not in LISTENER_MODES:
        raise TableError(f"{where}.mode: {mode!r} is not one of {sorted(LISTENER_MODES)}")
    port = _req(raw, "port", int, where)
    if not 0 <= port < 65536:
        raise TableError(f"{where}.port: {port} out of range 0-65535")
    routes: tuple[RouteSpec, ...] = ()
    if mode != "metrics":
        if "routes" in raw:
            routes_raw = _req(raw, "routes", list, where)
            routes = tuple(
                _parse_route(r, f"{where}.routes[{i}]", clusters) for i, r in enumerate(routes_raw)
            )
        else:
            routes = (_parse_route({"cluster": _req(raw, "cluster", str, where)}, where, clusters),)
        if mode == "tcp" and len(routes) != 1:
            raise TableError(f"{where}: a tcp listener needs exactly one 'cluster'")
    tls = _parse_tls(raw.get("tls"), f"{where}.tls") if mode == "http" else None
    redirect = raw.get("redirect", 0)
    if isinstance(redirect, bool) or not isinstance(redirect, int) or not 0 <= redirect < 65536:
        raise TableError(f"{where}.redirect: expected a port number (0: off), got {redirect!r}")
    max_conns = raw.get("max_client_connections", 0)
    if isinstance(max_conns, bool) or not isinstance(max_conns, int) or max_conns < 0:
        raise TableError(f"{where}.max_client_connections: expected an integer >= 0 "
                         f"(0: no limit), got {max_conns!r}")
    return ListenerSpec(
        max_client_connections=max_conns,
        tls=tls,
        redirect=redirect,
        name=name,
        bind=str(raw.get("bind", "127.0.0.1")),
        port=port,
        mode=mode,
        routes=routes,
        header_timeout=_opt_num(raw, "header_timeout", 10.0, where),
        idle_timeout=_opt_num(raw, "idle_timeout", 75.0, where),
    )


def _parse_tls(raw: Any, where: str) -> TlsSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise TableError(f"{where}: expected an object")
    certs_raw = _req(raw, "certificates", list, where)
    if not certs_raw:
        raise TableError(f"{where}.certificates: expected at least one certificate")
    certs = []
    for i, c in enumerate(certs_raw):
        w = f"{where}.certificates[{i}]"
        if not isinstance(c, Mapping):
            raise TableError(f"{w}: expected an object")
        names = c.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TableError(f"{w}.names: expected a list of strings")
        certs.append(CertSpec(cert=_req(c, "cert", str, w), key=_req(c, "key", str, w),
                              rev=str(c.get("rev", "")), names=tuple(names)))
    hsts = raw.get("hsts", "")
    if not isinstance(hsts, str) or not (hsts.isascii() and hsts.isprintable()):
        raise TableError(f"{where}.hsts: expected a header value")
    return TlsSpec(certs=tuple(certs), hsts=hsts)


def _parse_tracing(raw: Any) -> TracingSettings | None:
    if raw is None:
        return None
    where = "table.tracing"
    if not isinstance(raw, Mapping):
        raise TableError(f"{where}: expected an object")
    endpoint = raw.get("endpoint", "")
    if not isinstance(endpoint, str) or (
            endpoint and not endpoint.startswith(("http://", "https://"))):
        raise TableError(f"{where}.endpoint: expected an http(s) URL, got {endpoint!r}")
    sample = raw.get("sample", TracingSettings.sample)
    if isinstance(sample, bool) or not isinstance(sample, (int, float)) \
            or not 0.0 <= sample <= 1.0:
        raise TableError(f"{where}.sample: expected a fraction 0-1, got {sample!r}")
    names = {k: raw.get(k, "") for k in ("service_name", "app")}
    for k, v in names.items():
        if not isinstance(v, str):
            raise TableError(f"{where}.{k}: expected a string")
    return TracingSettings(endpoint=endpoint, sample=float(sample),
                           service_name=names["service_name"] or TracingSettings.service_name,
                           app=names["app"])


def parse_table(raw: Any) -> Table:
    """Validate a TABLE document; raise TableError naming the offending field."""
    if not isinstance(raw, Mapping):
        raise TableError("table: expected an object")
    version = _req(raw, "version", int, "table")
    clusters_raw = raw.get("clusters", {})
    if not isinstance(clusters_raw, Mapping):
        raise TableError("table.clusters: expected an object")
    clusters = {str(k): _parse_cluster(str(k), v) for k, v in clusters_raw.items()}
    listeners_raw = _req(raw, "listeners", list, "table")
    listeners = tuple(
        _parse_listener(x, f"listeners[{i}]", clusters) for i, x in enumerate(listeners_raw)
    )
    names = [x.name for x in listeners]
    if len(set(names)) != len(names):
        raise TableError(f"table.listeners: duplicate listener names in {names}")
    binds = [(x.bind, x.port) for x in listeners if x.port != 0]
    if len(set(binds)) != len(binds):
        raise TableError("table.listeners: two listeners share one bind address and port")
    fetch = raw.get("fetch", [])
    if not isinstance(fetch, list) or not all(
            isinstance(u, str) and u.startswith(("http://", "https://")) for u in fetch):
        raise TableError("table.fetch: expected a list of http(s) URLs (the analysis "
                         "providers the gateway may query)")
    hosts = raw.get("hosts", {})
    if not isinstance(hosts, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in hosts.items()):
        raise TableError("table.hosts: expected an object of name -> address strings")
    return Table(version=version, listeners=listeners, clusters=clusters,
                 tracing=_parse_tracing(raw.get("tracing")))
