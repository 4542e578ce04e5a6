"""Unix-socket control protocol: newline-delimited JSON, one request → one response.

The protocol is specified in docs/architecture.md.  `serve_control` binds the
socket (mode 0600) and dispatches to a `ControlHandler`, which is a `Runtime`
in a single process or a `WorkerPool` that fans out to worker processes.
"""
from __future__ import annotations

import asyncio
import json
import os
import stat
from typing import Any, Protocol

from .fetch import FetchRefused, fetch
from .hold import parse_wait
from .table import TableError
from mso.errors import UsageError

MAX_LINE = 64 * 1024 * 1024


class ControlHandler(Protocol):
    async def ping(self) -> dict[str, Any]: ...

    async def set_table(self, raw: Any) -> int: ...

    async def drain(self, endpoint_id: str, timeout: float) -> tuple[bool, int]: ...

    async def metrics(self) -> dict[str, Any]: ...

    async def set_control_metrics(self, raw: Any) -> None: ...

    async def traces(self) -> list[Any]: ...

    async def held_requests(self, since: int, wait: float) -> dict[str, Any]:
        """Scale to zero: requests waiting for a replica (mso.proxy.hold), answered once
        one newer than `since` is parked or after `wait` seconds."""
        ...

    def current_table(self) -> Any:
        """The last table applied, as sent (None before the first): its `fetch` and
        `hosts` say what the `fetch` operation may request (`mso.proxy.fetch`)."""
        ...


class ControlError(UsageError):
    """A request that cannot be served; the message goes back as `error`."""


async def dispatch(handler: ControlHandler, msg: Any) -> dict[str, Any]:
    """Serve one decoded request; never raises for bad input."""
    if not isinstance(msg, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    op = msg.get("op")
    try:
        if op == "ping":
            return {"ok": True, **(await handler.ping())}
        if op == "set_table":
            if "table" not in msg:
                raise ControlError("set_table needs a 'table' field")
            return {"ok": True, "version": await handler.set_table(msg["table"])}
        if op == "drain":
            endpoint = msg.get("endpoint")
            timeout = msg.get("timeout", 30.0)
            if not isinstance(endpoint, str):
                raise ControlError("drain needs an 'endpoint' string")
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
                raise ControlError("drain 'timeout' must be a number >= 0")
            drained, inflight = await handler.drain(endpoint, float(timeout))
            return {"ok": True, "drained": drained, "inflight": inflight}
        if op == "metrics":
            return {"ok": True, "metrics": await handler.metrics()}
        if op == "set_control_metrics":
            try:
                await handler.set_control_metrics(msg.get("metrics"))
            except ValueError as exc:
                raise ControlError(f"set_control_metrics: {exc}") from exc
            return {"ok": True}
        if op == "traces":
            return {"ok": True, "traces": await handler.traces()}
        if op == "fetch":
            return await fetch(msg, handler.current_table())
        if op == "held":
            try:
                since, wait = parse_wait(msg)
            except ValueError as exc:
                raise ControlError(str(exc)) from exc
            return {"ok": True, **(await handler.held_requests(since, wait))}
        raise ControlError(f"unknown op {op!r}; expected ping, set_table, drain, metrics, "
                           "set_control_metrics, traces, fetch or held")
    except (ControlError, TableError, FetchRefused) as exc:
        return {"ok": False, "error": str(exc)}


async def _serve_conn(
    handler: ControlHandler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                writer.write(b'{"ok": false, "error": "request line too long"}\n')
                break
            if not line:
                break
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError as exc:
                resp: dict[str, Any] = {"ok": False, "error": f"invalid JSON: {exc}"}
            else:
                resp = await dispatch(handler, msg)
            writer.write(json.dumps(resp, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
        # CancelledError: the process is shutting down; the peer sees EOF.
        pass
    finally:
        writer.close()


async def serve_control(handler: ControlHandler, path: str) -> asyncio.AbstractServer:
    """Listen on the unix socket `path` (replacing a stale socket file), mode 0600."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(
            lambda r, w: _serve_conn(handler, r, w), path, limit=MAX_LINE
        )
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return server
