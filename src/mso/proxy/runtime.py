"""The proxy of one process: applies route tables, owns listeners, drains, reports.

`Runtime` implements the control operations (`ControlHandler`) for a single
serving process.  Table application is planned first (`plan_listeners`, pure)
and then carried out; listeners whose bind/port/mode did not change keep their
sockets and connections, and only their routing context is swapped.
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, cast

from mso.ports import port_holder

from . import hold, native, tracing, upstream
from .balancer import ClusterState, EndpointState, build_cluster
from .http_server import (FORWARDED_HTTP, FORWARDED_HTTPS, ClientConnection, Hub,
                          ListenerContext, Route)
from .exposition import Exposition
from .limits import Limits, route_label
from .metrics import Registry
from .metrics_http import MetricsConnection
from .table import ListenerSpec, Table, TableError, parse_table
from .tcp import TcpClient, TcpContext
from .tls import ServerTls, Staged

log = logging.getLogger("mso.proxy")

WATCHDOG_INTERVAL = 0.25


@dataclass
class ListenerPlan:
    keep: list[str]
    create: list[str]
    close: list[str]


def plan_listeners(old: dict[str, ListenerSpec], new: dict[str, ListenerSpec]) -> ListenerPlan:
    """Decide which listeners keep their socket, which are (re)bound, which close."""
    keep = [n for n, s in new.items() if n in old and old[n].socket_key == s.socket_key]
    create = [n for n in new if n not in keep]
    close = [n for n in old if n not in keep]
    return ListenerPlan(keep=keep, create=create, close=close)


def _key(spec: ListenerSpec) -> tuple[str, int]:
    return (spec.bind, spec.port)


@dataclass
class Listener:
    spec: ListenerSpec
    server: asyncio.Server
    ctx: ListenerContext | TcpContext | None
    tls: ServerTls | None = None


class Runtime:
    def __init__(self, reuse_port: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.hub = Hub(now=self.loop.time())
        self.registry = Registry()
        self.clusters: dict[str, ClusterState] = {}
        self.listeners: dict[str, Listener] = {}
        self.retired: list[EndpointState] = []
        self.version = 0
        self.raw_table: Any = None  # the last table applied, as sent
        self.reuse_port = reuse_port
        # Listening sockets ready to serve a listener with the same (bind, port): handed
        # over by the daemon (a spare proxy taking over) or kept while a port moves from
        # one listener to another, so the port never stops listening (handoff.py).
        self.spare: dict[tuple[str, int], socket.socket] = {}
        self.releases: dict[tuple[str, str], int] = {}  # (cluster, subset) -> release
        self.limits = Limits()  # per-route rate and body limits, per-client connections
        self.exposition = Exposition(
            lambda: self.registry.snapshot(self.inflight_map()), lambda: self.releases,
            lambda: tracing.RECORDER.counters() if tracing.enabled else None,
            self.limits.snapshot)
        self._lock = asyncio.Lock()
        self._watchdog = self.loop.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            now = self.hub.now = self.loop.time()
            for client in list(self.hub.clients):
                client.check_timeouts(now)
            if self.retired:
                self.retired = [e for e in self.retired if e.inflight > 0]

    # --- control operations ---------------------------------------------------
    async def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "version": self.version, "listeners": self.bound_ports(),
                "build": "mypyc" if native.COMPILED else "python"}

    async def set_table(self, raw: Any) -> int:
        table = parse_table(raw)
        async with self._lock:
            await self._apply(table)
            self.raw_table = raw
        return self.version

    async def _apply(self, table: Table) -> None:
        new_specs = {s.name: s for s in table.listeners}
        plan = plan_listeners({n: x.spec for n, x in self.listeners.items()}, new_specs)
        clusters = {
            name: build_cluster(
                spec,
                {(e.id, e.host, e.port): e for e in self._old_endpoints(name)},
                self.registry,
                self.hub.clock,
            )
            for name, spec in table.clusters.items()
        }
        # Certificates are read before anything changes: one that cannot serve rejects
        # the table and the listeners keep what they serve.
        staged: dict[str, Staged | None] = {}
        for name in plan.keep:
            old_tls, new_tls = self.listeners[name].tls, new_specs[name].tls
            if old_tls is not None and new_tls is not None:
                staged[name] = old_tls.stage(new_tls, f"listener {name!r}.tls")
        fresh_tls = {n: ServerTls(tls, f"listener {n!r}.tls")
                     for n in plan.create if (tls := new_specs[n].tls) is not None}
        # A port handed from one listener to another (the gateway moved onto the metrics
        # port, which moves elsewhere) is free only once its old listener is closed; every
        # other old listener stays open until the new ones are bound.
        wanted = {new_specs[n].port for n in plan.create} - {0}
        bound = self.bound_ports()
        handed_over = {n: self.listeners.pop(n) for n in plan.close
                       if bound.get(n, self.listeners[n].spec.port) in wanted}
        reused = {_key(new_specs[n]) for n in plan.create}
        for lst in handed_over.values():
            if _key(lst.spec) in reused and lst.server.sockets:
                self._keep_spare(_key(lst.spec), lst.server.sockets[0].fileno())
            lst.server.close()
        if handed_over:
            await asyncio.sleep(0)  # let the loop release the sockets
        created: dict[str, Listener] = {}
        try:
            for name in plan.create:
                created[name] = await self._bind(new_specs[name], clusters,
                                                 fresh_tls.get(name))
        except OSError as exc:
            for lst in created.values():
                lst.server.close()
            await self._reopen(handed_over, bound)
            spec = new_specs[name]
            holder = port_holder(spec.port) if exc.errno == errno.EADDRINUSE else None
            raise TableError(f"listener {name!r}: cannot bind {spec.bind}:{spec.port}: "
                             f"{(os.strerror(exc.errno) if exc.errno else str(exc)).lower()}"
                             + (f" (taken by {holder})" if holder else "")) from exc
        old_eps = {id(e): e for c in self.clusters.values() for e in c.endpoints}
        self.clusters = clusters
        self.releases = {(name, sub.name): sub.release for name, spec in table.clusters.items()
                         for sub in spec.subsets if sub.release}
        for name in plan.keep:
            lst = self.listeners[name]
            lst.spec = new_specs[name]
            if lst.tls is not None:
                lst.tls.commit(staged.get(name))  # new handshakes get the new certificates
            self._configure(lst.spec, lst.ctx, clusters)
        for name in plan.close:
            if name not in handed_over:
                self.listeners.pop(name).server.close()
        self.listeners.update(created)
        for sock in self.spare.values():
            sock.close()
        self.spare.clear()
        live = {id(e) for c in clusters.values() for e in c.endpoints}
        for key, ep in old_eps.items():
            if key not in live:
                self._retire(ep)
        hold.BOOK.release(clusters, self.loop.time())  # scale to zero: held requests go on
        tracing.RECORDER.configure(table.tracing, lambda: self.releases)
        self.hub.trace_sample = table.tracing.sample if table.tracing is not None else -1.0
        self.version = table.version

    async def _reopen(self, closed: dict[str, Listener], ports: dict[str, int]) -> None:
        """A table that failed to apply leaves the old listeners as they were, on the
        ports they had (a listener asked for port 0 had one picked for it)."""
        for name, lst in closed.items():
            again = dataclasses.replace(lst.spec, port=ports.get(name, lst.spec.port))
            try:
                reopened = await self._bind(again, self.clusters, lst.tls)
                reopened.spec = lst.spec  # as the table said, so the next plan compares alike
                self.listeners[name] = reopened
            except OSError as exc:  # taken meanwhile by someone else: say so, go on
                log.warning("listener %r could not be reopened: %s", name, exc)

    def _old_endpoints(self, cluster: str) -> list[EndpointState]:
        old = self.clusters.get(cluster)
        return old.endpoints if old is not None else []

    def _retire(self, ep: EndpointState) -> None:
        # Removed endpoints finish in-flight requests; their pooled sockets close.
        ep.draining = True  # its cluster object is gone, so no fast-path counter to bump
        upstream.close_idle(ep)
        if ep.inflight > 0:
            self.retired.append(ep)

    def _configure(
        self, spec: ListenerSpec, ctx: ListenerContext | TcpContext | None,
        clusters: dict[str, ClusterState],
    ) -> None:
        if isinstance(ctx, ListenerContext):
            routes: tuple[Route, ...] = tuple(
                (r.host.encode() if r.host else None, r.path.encode(), clusters[r.cluster],
                 self.limits.for_route(
                     route_label(r.host, r.path), clusters[r.cluster].spec.service,
                     r.rate_limit.rate if r.rate_limit else 0.0,
                     r.rate_limit.burst if r.rate_limit else 1,
                     r.rate_limit.header if r.rate_limit else "", r.max_body))
                for r in spec.routes
            )
            ctx.max_conns = spec.max_client_connections
            ctx.conns = self.limits.connections if spec.max_client_connections else None
            ctx.routes = routes
            ctx.by_host = any(r.host for r in spec.routes)
            ctx.header_timeout = spec.header_timeout
            ctx.idle_timeout = spec.idle_timeout
            ctx.forwarded = FORWARDED_HTTPS if spec.tls is not None else FORWARDED_HTTP
            ctx.hsts = (b"strict-transport-security: %s\r\n" % spec.tls.hsts.encode("latin-1")
                        if spec.tls is not None and spec.tls.hsts else b"")
            ctx.redirect = spec.redirect
        elif isinstance(ctx, TcpContext):
            ctx.cluster = clusters[spec.routes[0].cluster]

    async def _bind(self, spec: ListenerSpec, clusters: dict[str, ClusterState],
                    tls: ServerTls | None = None) -> Listener:
        factory: Callable[[], asyncio.BaseProtocol]
        ctx: ListenerContext | TcpContext | None
        if spec.mode == "http":
            hctx = ctx = ListenerContext(hub=self.hub)
            # ClientConnection is a plain class (compiled by mypyc, which cannot subclass
            # asyncio.Protocol); uvloop only needs the protocol methods.
            factory = cast(Callable[[], asyncio.BaseProtocol], lambda: ClientConnection(hctx))
        elif spec.mode == "tcp":
            tctx = ctx = TcpContext(cluster=clusters[spec.routes[0].cluster])
            factory = cast(Callable[[], asyncio.BaseProtocol], lambda: TcpClient(tctx))
        else:
            ctx = None
            factory = lambda: MetricsConnection(self.prometheus)  # noqa: E731
        self._configure(spec, ctx, clusters)
        sock = self.spare.pop(_key(spec), None)
        context = tls.context if tls is not None else None
        if sock is not None:
            server = await self.loop.create_server(factory, sock=sock, backlog=4096,
                                                   ssl=context)
        else:
            server = await self.loop.create_server(
                factory, spec.bind, spec.port, backlog=4096,
                reuse_port=self.reuse_port or None, ssl=context,
            )
        return Listener(spec=spec, server=server, ctx=ctx, tls=tls)

    def _keep_spare(self, key: tuple[str, int], fd: int) -> None:
        old = self.spare.pop(key, None)
        if old is not None:
            old.close()
        self.spare[key] = socket.socket(fileno=os.dup(fd))

    # --- socket hand-over (handoff.py) --------------------------------------------
    def listening_sockets(self) -> list[tuple[tuple[str, int], int]]:
        """A duplicate of each listener's socket, by the (bind, port) its table asked for."""
        out = []
        for lst in self.listeners.values():
            socks = lst.server.sockets
            if socks:
                out.append((_key(lst.spec), os.dup(socks[0].fileno())))
        return out

    def adopt_sockets(self, socks: list[tuple[tuple[str, int], socket.socket]]) -> int:
        """Keep handed-over listening sockets for the next table's listeners. The set
        handed over replaces the one kept: a spare proxy holds exactly what the daemon
        holds, so a port the app no longer uses stops listening here too."""
        taken = {_key(lst.spec) for lst in self.listeners.values()}
        kept, adopted = {}, 0
        for key, sock in socks:
            if key in taken:
                sock.close()  # already served by a listener of ours
                continue
            kept[key] = sock
            adopted += 1
        old, self.spare = self.spare, kept
        for sock in old.values():
            sock.close()
        return adopted

    def bound_ports(self) -> dict[str, int]:
        """Actual ports (useful when a table asks for port 0)."""
        out = {}
        for name, lst in self.listeners.items():
            socks = lst.server.sockets
            if socks:
                out[name] = socks[0].getsockname()[1]
        return out

    def _endpoints_named(self, endpoint_id: str) -> list[EndpointState]:
        eps = [e for c in self.clusters.values() for e in c.endpoints if e.id == endpoint_id]
        return eps + [e for e in self.retired if e.id == endpoint_id and e not in eps]

    async def drain(self, endpoint_id: str, timeout: float) -> tuple[bool, int]:
        """Stop picking the endpoint now; wait until its in-flight requests are done."""
        eps = self._endpoints_named(endpoint_id)
        for cluster in self.clusters.values():
            for ep in cluster.endpoints:
                if ep.id == endpoint_id:
                    cluster.set_draining(ep)
        for ep in eps:
            ep.draining = True
            upstream.close_idle(ep)
        deadline = self.loop.time() + timeout
        while True:
            inflight = sum(e.inflight for e in eps)
            if inflight == 0:
                return True, 0
            if self.loop.time() >= deadline:
                return False, inflight
            await asyncio.sleep(0.005)

    def inflight_map(self) -> dict[tuple[str, str, str], int]:
        out: dict[tuple[str, str, str], int] = {}
        for c in self.clusters.values():
            for e in c.endpoints:
                out[(c.name, e.subset, e.id)] = e.inflight
        return out

    async def metrics(self) -> dict[str, Any]:
        return {**self.registry.snapshot(self.inflight_map()),
                "limits": self.limits.snapshot()}

    async def traces(self) -> list[Any]:
        return tracing.RECORDER.traces()

    async def held_requests(self, since: int, wait: float) -> dict[str, Any]:
        return await hold.BOOK.wait(since, wait)

    def current_table(self) -> Any:
        return self.raw_table

    def prometheus(self) -> bytes:
        return self.exposition.render()

    async def set_control_metrics(self, raw: Any) -> None:
        self.exposition.control.update(raw)

    # --- shutdown ---------------------------------------------------------------
    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close the rest."""
        for lst in self.listeners.values():
            lst.server.close()
        deadline = self.loop.time() + grace
        while self.loop.time() < deadline:
            if not any(c.exchanges for c in self.hub.clients):
                break
            await asyncio.sleep(0.01)
        for client in list(self.hub.clients):
            client.abort()
        self._watchdog.cancel()
        await tracing.RECORDER.close()
