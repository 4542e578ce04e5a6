"""Async client of the proxy control protocol, used by the control plane.

Exceptions:
    ProxyError            base class
    ├── ProxyUnavailable  the socket is missing/refused/closed: retry later
    └── ProxyRejected     the proxy answered ok=false: the request is wrong, do not retry
"""
from __future__ import annotations

import asyncio
import json
from typing import Any
from mso.errors import Failed, Unavailable


class ProxyError(Failed):
    """Base class of control-client errors."""


class ProxyUnavailable(ProxyError, Unavailable):
    """The proxy process cannot be reached right now (temporary)."""


class ProxyRejected(ProxyError, Failed):
    """The proxy refused the request (permanent for this input)."""


class ProxyClient:
    """Control-socket client; concurrent calls each get their own connection.

    Connections are kept and reused, so a long `drain` never delays `metrics`.
    """

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _call(self, msg: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self._roundtrip(msg), timeout or self.timeout)
        except (OSError, EOFError, ValueError, asyncio.IncompleteReadError) as exc:
            raise ProxyUnavailable(f"proxy control socket {self.path}: {exc}") from exc
        except asyncio.TimeoutError as exc:
            raise ProxyUnavailable(f"proxy control socket {self.path}: timed out") from exc

    async def _roundtrip(self, msg: dict[str, Any]) -> dict[str, Any]:
        while self._idle:
            reader, writer = self._idle.pop()
            if not writer.is_closing():
                break
        else:
            reader, writer = await asyncio.open_unix_connection(
                self.path, limit=64 * 1024 * 1024
            )
        try:
            writer.write(json.dumps(msg).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        except BaseException:
            writer.close()  # a half-used connection cannot be reused
            raise
        if not line:
            writer.close()
            raise EOFError("connection closed by proxy")
        self._idle.append((reader, writer))
        resp: dict[str, Any] = json.loads(line)
        if not resp.get("ok"):
            raise ProxyRejected(str(resp.get("error", "unknown error")))
        return resp

    async def ping(self) -> dict[str, Any]:
        """{"ok": true, "pid": ..., "version": ...}"""
        return await self._call({"op": "ping"})

    async def set_table(self, table: dict[str, Any]) -> int:
        """Apply a TABLE on every worker; returns the applied version."""
        resp = await self._call({"op": "set_table", "table": table})
        return int(resp["version"])

    async def drain(self, endpoint: str, timeout: float = 30.0) -> bool:
        """True once the endpoint gets no new requests and has none in flight."""
        resp = await self._call(
            {"op": "drain", "endpoint": endpoint, "timeout": timeout}, timeout + self.timeout
        )
        return bool(resp["drained"])

    async def metrics(self) -> dict[str, Any]:
        """The SNAPSHOT document."""
        resp = await self._call({"op": "metrics"})
        snap: dict[str, Any] = resp["metrics"]
        return snap

    async def set_control_metrics(self, metrics: dict[str, Any]) -> None:
        """Hand the control plane's figures to the proxy's Prometheus endpoint."""
        await self._call({"op": "set_control_metrics", "metrics": metrics})

    async def fetch(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The gateway's `fetch` (mso.proxy.fetch): one HTTP request made from its
        network; ProxyRejected when it refuses the request."""
        return await self._call({"op": "fetch", **request}, timeout)

    async def traces(self) -> list[Any]:
        """The recent sampled traces, newest first: each a list of span records."""
        resp = await self._call({"op": "traces"})
        traces: list[Any] = resp["traces"]
        return traces

    async def held(self, since: int = -1, wait: float = 0.0) -> dict[str, Any]:
        """Scale to zero: {"seq", "held": {cluster: n}, ...} once a request newer than
        `since` waits for a replica, or after `wait` seconds (mso.proxy.hold)."""
        resp = await self._call({"op": "held", "since": since, "wait": wait},
                                wait + self.timeout)
        return {k: v for k, v in resp.items() if k != "ok"}

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _reader, writer in idle:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def __aenter__(self) -> ProxyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
