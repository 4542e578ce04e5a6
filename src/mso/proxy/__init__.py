"""mso.proxy: the data plane, run as its own process (`python -m mso.proxy`).

Modules: `table` (TABLE parsing, pure), `balancer` (subset split, round robin /
least request, outlier ejection, retry budget), `http_server` (client side),
`exchange` (one proxied request), `response_head` (pure head rewrite),
`upstream` (keep-alive pools), `tcp` (L4 mode), `safety` (RFC 9112 checks),
`metrics` / `metrics_http` (SNAPSHOT, Prometheus), `limits` (rate, body and
connection limits at the edge), `runtime` (one serving
process), `control` (unix-socket protocol), `workers` (N processes with
SO_REUSEPORT), `client` (`ProxyClient` for the control plane).

Additions to the protocol of docs/architecture.md (all optional):

* ping answers also carry `"listeners": {name: bound port}` (useful with port 0)
  and, with `--workers N`, `"workers": [pids]`.
* cluster fields: `"timeouts": {"connect": 5, "response_header": 30, "request": 300,
  "per_try": 0, "hedge": 0}` (seconds; per_try and hedge: 0 is off, see exchange.py), `"outlier": {"consecutive_failures": 5, "base_ejection_s": 10,
  "max_ejection_s": 300, "max_ejected_percent": 50}`, `"retries": 2`.
* listener fields: `"header_timeout": 10` (slow request heads get 408),
  `"idle_timeout": 75` (idle keep-alive client connections are closed).
* A drained endpoint stays drained while later tables keep listing the same
  id and address; a table that drops it (or changes its address) forgets it.
* route fields (limits.py): `"rate_limit": {"rate": 10.0, "burst": 20, "header": ""}`
  (tokens per second; "header": "" keys the buckets by client address), `"max_body": N`
  (bytes; 413 over it). Listener field `"max_client_connections": N` (0: no limit).
* Route paths match by segment: "/api" matches "/api", "/api/x", "/api?q",
  not "/apix".
"""

from . import native as _native  # noqa: E402  (must run before any hot module is imported)

#: True when the per-request modules run compiled by mypyc (see mso.proxy.native).
COMPILED = _native.COMPILED
