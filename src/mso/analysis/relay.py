"""Provider requests made from the app's network, through mso's gateway.

On Swarm and Kubernetes the rollout controller runs outside the app's network, where
`http://prometheus:9090` does not resolve; the gateway runs inside it and makes the
request for the controller (its `fetch` control operation, `mso.proxy.fetch`, which
says why the gateway and how it refuses to be an open relay).

:class:`GatewayTransport` is an httpx transport: the Prometheus and webhook providers
keep their own code (query building, timeouts, status and answer handling) and only
their requests travel differently. A gateway that cannot be reached, or that reports a
timeout or connection failure, raises the same httpx exceptions a direct request would,
so every failure is `inconclusive` exactly as on the local engine; a request the
gateway refuses (not a provider URL of its table, e.g. before the table with this
manifest's providers is pushed) is a connection error too, never a fail.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

#: Sends one `fetch` request (the control message without `op`) to the gateway, waiting
#: at most the given seconds, and returns its reply; raises on an unreachable gateway.
Send = Callable[[dict[str, Any], float], Awaitable[dict[str, Any]]]

#: The gateway's answer waits for the provider's timeout plus this much for the relay.
RELAY_SLACK_S = 2.0


class GatewayTransport(httpx.AsyncBaseTransport):
    """Makes each request through the gateway's `fetch` (see the module docstring)."""

    def __init__(self, send: Send, default_timeout: float = 5.0) -> None:
        self._send = send
        self._default_timeout = default_timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        timeout = float(timeouts.get("read") or self._default_timeout)
        body = await request.aread()
        message: dict[str, Any] = {
            "method": request.method,
            "url": str(request.url),
            "headers": {k: v for k, v in request.headers.items()
                        if k.lower() in ("accept", "authorization", "content-type")},
            "timeout": timeout,
        }
        if body:
            message["body"] = base64.b64encode(body).decode()
        try:
            reply = await self._send(message, timeout + RELAY_SLACK_S)
        except Exception as exc:  # the engine's channel: any failure means no answer
            raise httpx.ConnectError(f"the gateway did not relay the request: {exc}",
                                     request=request) from None
        failed = reply.get("failed")
        if failed == "timeout":
            raise httpx.ReadTimeout(f"through the gateway: {reply.get('error')}",
                                    request=request)
        if failed:
            raise httpx.ConnectError(f"through the gateway: {reply.get('error')}",
                                     request=request)
        try:
            status = int(reply["status"])
            content = base64.b64decode(str(reply.get("body", "")))
            headers = [(str(k), str(v)) for k, v in reply.get("headers") or []]
        except (KeyError, TypeError, ValueError) as exc:
            raise httpx.ConnectError(f"unusable gateway reply: {exc}", request=request) from None
        # The body is already decoded bytes: drop the encoding headers httpx would undo.
        headers = [(k, v) for k, v in headers
                   if k.lower() not in ("content-encoding", "transfer-encoding",
                                        "content-length")]
        return httpx.Response(status, headers=headers, content=content, request=request)
