"""Per-request Python cost of the proxy's HTTP path, in process, with fake transports.

No sockets and no syscalls: one keep-alive GET and its 200 response pass through
ClientConnection -> Exchange -> UpstreamConnection and back, so the figure is the
interpreter (or mypyc) work per request alone.  Compare the two builds:

    .venv/bin/python bench/proxy/micro.py            # compiled, if built
    MSO_PROXY_PURE=1 .venv/bin/python bench/proxy/micro.py
"""
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
cl = build_cluster(t.clusters["web"], {}, Registry(), hub.clock)
ctx = ListenerContext(hub=hub, routes=((None, b"/", cl),))
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
for _ in range(20000): one()
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
best = 1e9
for _ in range(5):
    t0 = time.process_time()
    for _ in range(N): one()
    best = min(best, (time.process_time() - t0) / N * 1e6)
build = "mypyc" if mso.proxy.COMPILED else "python"
print(f"{build}: {best:.3f} us of Python work per request (best of 5 x {N})")
