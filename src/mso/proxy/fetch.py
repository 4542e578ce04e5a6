"""The gateway's `fetch` control operation: one HTTP request made from the app's network.

Why the gateway. On Swarm and Kubernetes the rollout controller runs outside the app's
network (on the manager node, or beside the CLI), where a provider address the user
writes the way the app sees it (`http://prometheus:9090`,
`http://prometheus.monitoring:9090`) does not resolve. The gateway runs inside that
network on both engines, and the controller already holds an authenticated channel to
it (the control socket; on Kubernetes behind gatewayd's token), so the controller asks
the gateway to make the provider's request. The alternative considered, Kubernetes'
API-server service proxy (`/api/v1/namespaces/NS/services/NAME:PORT/proxy/...`), only
exists on Kubernetes, only reaches Services (not any name the pods resolve, such as an
external host through the cluster's DNS) and needs RBAC on `services/proxy`; the gateway
gives one path for both engines with the app's own name resolution.

No open relay. The gateway fetches only URLs listed in its current route table's
`fetch` field (the controller puts there the `rollout.analysis.providers` URLs of the
active rollouts, without credentials or query); anything else is refused.

Names. The request's host is resolved the way the app resolves it (the container's
resolver), except for names in the table's `hosts` field, which the gateway uses as
given: on Kubernetes the controller puts there the app's own Services named in a
provider URL (`prom-stable`, `prom-stable.NAMESPACE`, `...svc`, `...svc.cluster.local`)
with their ClusterIP, read from the API, so they work with and without cluster DNS (the
same choice the engine makes for `<DEP>_URL`). Only plain `http` URLs are redirected so;
`https` always uses the resolver, so the certificate is checked against the name. Each fetch
has a deadline (at most `MAX_TIMEOUT`), the answer is cut at `MAX_BODY` bytes (a bigger
one is refused, not truncated), redirects are not followed, and only `http`/`https` with
GET or POST are made. Credentials travel as an `Authorization` header the controller
built; they are never logged here.

The request is made with the standard library (`urllib.request`, in a thread): the
gateway image carries only the proxy's wheels, and this is a few requests a second at
most, off the proxy's per-request path.
"""
from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mso.errors import UsageError

MAX_TIMEOUT = 30.0
MAX_BODY = 4 * 1024 * 1024
METHODS = ("GET", "POST")
#: Request headers passed on (the rest, e.g. Host or Connection, are the gateway's own).
PASSED_HEADERS = ("accept", "authorization", "content-type", "user-agent")


class FetchRefused(UsageError):
    """A fetch request that is malformed or not allowed (the reply's `error`)."""


def allowed_key(url: str) -> str:
    """The part of `url` an allow list names: scheme, host, port and path (no userinfo,
    no query, no fragment), e.g. `http://prometheus:9090/api/v1/query`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme.lower(), netloc.lower(), parts.path or "/", "", ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is the answer itself, never followed


#: No redirects, and no proxy from the environment: the request leaves from here.
_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def check(msg: dict[str, Any], table: Any) -> tuple[str, str, dict[str, str],
                                                     bytes | None, float]:
    """The request `msg` asks for, validated against the gateway's current `table`:
    method, url (with its host replaced by the table's `hosts` address, if any),
    headers (with the original `Host` then), body, timeout."""
    allowed = table_allow(table)
    method = str(msg.get("method", "GET")).upper()
    url = msg.get("url")
    if method not in METHODS:
        raise FetchRefused(f"fetch: method {method!r} is not one of {', '.join(METHODS)}")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise FetchRefused("fetch needs an http(s) 'url'")
    if "@" in urlsplit(url).netloc:
        raise FetchRefused("fetch: credentials go in the 'authorization' header, not the URL")
    if allowed_key(url) not in allowed:
        raise FetchRefused(f"fetch: {allowed_key(url)} is not a provider URL of the "
                           "current table")
    raw_headers = msg.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise FetchRefused("fetch 'headers' must be an object")
    headers = {str(k): str(v) for k, v in raw_headers.items()
               if str(k).lower() in PASSED_HEADERS}
    body = msg.get("body")
    try:
        data = None if body is None else base64.b64decode(str(body), validate=True)
    except ValueError as exc:
        raise FetchRefused(f"fetch 'body' must be base64: {exc}") from None
    parts = urlsplit(url)
    address = table_hosts(table).get((parts.hostname or "").lower())
    if address and parts.scheme == "http":
        headers["Host"] = parts.netloc
        port = f":{parts.port}" if parts.port else ""
        url = urlunsplit(parts._replace(netloc=f"{address}{port}"))
    timeout = msg.get("timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not 0 < timeout <= MAX_TIMEOUT:
        raise FetchRefused(f"fetch 'timeout' must be a number of seconds in (0, "
                           f"{MAX_TIMEOUT:g}]")
    return method, url, headers, data, float(timeout)


def _fetch(method: str, url: str, headers: dict[str, str], data: bytes | None,
           timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        response = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:  # a non-2xx answer is an answer
        response = exc
    except (TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        kind = "timeout" if isinstance(reason, TimeoutError) else "connect"
        return {"ok": True, "failed": kind, "error": f"{type(reason).__name__}: {reason}"}
    with response:
        try:
            body = response.read(MAX_BODY + 1)
        except (TimeoutError, OSError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "connect"
            return {"ok": True, "failed": kind, "error": f"{type(exc).__name__}: {exc}"}
        if len(body) > MAX_BODY:
            return {"ok": True, "failed": "too_big",
                    "error": f"the answer is larger than {MAX_BODY} bytes"}
        return {"ok": True, "status": response.status,
                "headers": [[k, v] for k, v in response.headers.items()],
                "body": base64.b64encode(body).decode()}


async def fetch(msg: dict[str, Any], table: Any) -> dict[str, Any]:
    """Make the request `msg` describes, if the gateway's current `table` lists its
    URL in `fetch`. The reply is
    `{"ok": true, "status", "headers", "body" (base64)}` for any HTTP answer, or
    `{"ok": true, "failed": "timeout"|"connect"|"too_big", "error"}` when there is none;
    `FetchRefused` for a request that is not allowed."""
    method, url, headers, data, timeout = check(msg, table)
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(_fetch, method, url, headers, data, timeout), timeout + 1.0)
    except asyncio.TimeoutError:
        return {"ok": True, "failed": "timeout", "error": f"no answer within {timeout:g}s"}


def table_allow(table: Any) -> set[str]:
    """The `fetch` allow list of a raw TABLE document (empty when it has none)."""
    if not isinstance(table, dict):
        return set()
    return {allowed_key(u) for u in table.get("fetch") or [] if isinstance(u, str)}


def table_hosts(table: Any) -> dict[str, str]:
    """The `hosts` of a raw TABLE document: name -> address the gateway uses as is."""
    hosts = table.get("hosts") if isinstance(table, dict) else None
    if not isinstance(hosts, dict):
        return {}
    return {str(k).lower(): str(v) for k, v in hosts.items()}
