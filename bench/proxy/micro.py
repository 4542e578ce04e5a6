"""Per-request Python cost of the proxy's HTTP path, in process, with fake transports.

No sockets and no syscalls: one keep-alive GET and its 200 response pass through
ClientConnection -> Exchange -> UpstreamConnection and back, so the figure is the
interpreter (or mypyc) work per request alone.  Compare the two builds:

    .venv/bin/python bench/proxy/micro.py            # compiled, if built
    MSO_PROXY_PURE=1 .venv/bin/python bench/proxy/micro.py

With MSO_LIMITS=1 the route has a rate and a body limit (limits.py). With MSO_TRACE_SAMPLE=0.01 (a share, 0-1) requests are traced as with `tracing:` in the
manifest (the finished traces queue up and are dropped when the queue is full; nothing
is exported), so the figure includes the hot path's tracing work.
"""
import asyncio
import os
import sys
import time

import mso.proxy
from mso.proxy import upstream
from mso.proxy.balancer import build_cluster
from mso.proxy.http_server import ClientConnection, Hub, ListenerContext
from mso.proxy.metrics import Registry
from mso.proxy.table import parse_table

class FakeT:
    def __init__(self): self.n = 0; self.closing = False
    def write(self, d): self.n += 1
    def writelines(self, d): self.n += 1
    def is_closing(self): return False
    def get_extra_info(self, k): return ("127.0.0.1", 5555)
    def pause_reading(self): pass
    def resume_reading(self): pass
    def close(self): self.closing = True

raw = {"version": 1, "listeners": [], "clusters": {"web": {"service": "web", "balancer": "round_robin", "subsets": {
    "stable": {"weight": 90, "endpoints": [{"id": "b0", "address": "127.0.0.1:1000"}]},
    "canary": {"weight": 10, "endpoints": [{"id": "b1", "address": "127.0.0.1:1001"}]}}}}}
t = parse_table(raw)
hub = Hub(now=0.0)
if os.environ.get("MSO_TRACE_SAMPLE"):
    hub.trace_sample = float(os.environ["MSO_TRACE_SAMPLE"])
cl = build_cluster(t.clusters["web"], {}, Registry(), hub.clock)
# MSO_LIMITS=1: the route has a rate limit (never reached) and a body limit, so the
# figure includes limits.py's per-request work (see docs/benchmarks.md).
limits = None
if os.environ.get("MSO_LIMITS"):
    from mso.proxy.limits import Limits
    limits = Limits().for_route("/", "web", 1e12, 1000, "", 1 << 20)
ctx = ListenerContext(hub=hub, routes=((None, b"/", cl, limits),))
conns = {}
for ep in cl.endpoints:
    c = upstream.UpstreamConnection(ep); c.connection_made(FakeT()); ep.idle.append(c); conns[ep.id] = c
client = ClientConnection(ctx); client.connection_made(FakeT())
req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
resp = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 13:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
def one():
    client.data_received(req)
    ex = client.exchanges[0]
    ex.conn.data_received(resp)
BATCH = 25  # requests per loop turn, about what the proxy sees at saturation


async def timed(n: int, work: bool) -> float:
    """CPU seconds for n requests, yielding to the loop every BATCH requests so the
    end-of-batch work (upstream.OUTBOX) runs as it does in the proxy."""
    t0 = time.process_time()
    for i in range(n):
        if work:
            one()
        if i % BATCH == 0:
            await asyncio.sleep(0)
    return time.process_time() - t0


async def main() -> None:
    await timed(20000, True)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    best = 1e9
    for _ in range(5):
        # The loop turns themselves are the harness's cost, not the proxy's: subtract them.
        best = min(best, (await timed(n, True) - await timed(n, False)) / n * 1e6)
    build = "mypyc" if mso.proxy.COMPILED else "python"
    traced = f", tracing {hub.trace_sample:g}" if hub.trace_sample >= 0 else ""
    traced += ", route limits" if limits is not None else ""
    print(f"{build}{traced}: {best:.3f} us of Python work per request (best of 5 x {n})")


asyncio.run(main())
