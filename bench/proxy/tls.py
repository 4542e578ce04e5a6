"""TLS at the gateway: mso's proxy vs HAProxy, same certificate, same machine.

Both terminate TLS with the same ECDSA P-256 certificate (made by `mso certs`' code),
TLS 1.2+ with Mozilla "intermediate" ciphers, ALPN http/1.1, X-Forwarded-Proto set, and
forward to two nginx `return 200` backends. Each proxy runs alone on CPU 1 (one
worker/thread), the load generators and backends on CPU 0, as bench/proxy/run.py does.

* keep-alive req/s: `wrk -t1 -c50` over HTTPS (one handshake per connection, then
  requests);
* new TLS connections/s: `openssl s_time -new -www /` (a full handshake for every
  connection, never a resumed session, then one HTTP/1.0 request), N processes in
  parallel; wrk is not used here because it resumes sessions.

Best of N interleaved rounds (other load only slows a run down); the proxy's CPU per
request/handshake is printed too. Results go to docs/benchmarks.md, section
"## Gateway TLS (issue 20)".

Usage: .venv/bin/python bench/proxy/tls.py [--duration 10] [--rounds 3]
       [--clients 16] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.docs_section import write_section  # noqa: E402
from bench.proxy.run import (BUILD, LOAD_CPU, PROXY_CPU, PY, Procs, Result,  # noqa: E402
                             cpu_seconds, ensure_tools, free_port, nginx_backends,
                             push_table, wait_port, wrk)
from mso.proxy.tls import INTERMEDIATE_CIPHERS  # noqa: E402

SECTION = "## Gateway TLS (issue 20)"


def haproxy_tls(tmp: Path, procs: Procs, port: int, combined: Path, backends: list[int]) -> int:
    servers = "\n".join(f"  server b{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    conf = tmp / "haproxy-tls.cfg"
    conf.write_text(f"""global
  nbthread 1
  maxconn 9500
  ssl-default-bind-ciphers {INTERMEDIATE_CIPHERS}
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  mode http
  bind 127.0.0.1:{port} ssl crt {combined} alpn http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend be
backend be
  mode http
  http-reuse always
  balance roundrobin
{servers}
""")
    return procs.start(["haproxy", "-f", str(conf)], PROXY_CPU).pid


def mso_tls(tmp: Path, procs: Procs, port: int, cert: Path, key: Path,
            backends: list[int]) -> int:
    control = str(tmp / "mso-tls.sock")
    proc = procs.start([PY, "-m", "mso.proxy", "--control", control], PROXY_CPU)
    endpoints = [{"id": f"b{i}", "address": f"127.0.0.1:{p}"} for i, p in enumerate(backends)]
    push_table(control, {"version": 1, "listeners": [
        {"name": "gateway-tls", "bind": "127.0.0.1", "port": port, "mode": "http",
         "routes": [{"host": None, "path": "/", "cluster": "web"}],
         "tls": {"certificates": [{"cert": str(cert), "key": str(key)}]}}],
        "clusters": {"web": {"service": "web", "balancer": "round_robin",
                             "subsets": {"stable": {"weight": 100, "endpoints": endpoints}}}}})
    return proc.pid


def handshakes(name: str, port: int, duration: int, clients: int, pid: int) -> Result:
    """Full TLS handshakes per second (plus one request each) from `clients` parallel
    `openssl s_time -new` on the load CPU."""
    cmd = ["taskset", "-c", LOAD_CPU, "openssl", "s_time", "-connect", f"127.0.0.1:{port}",
           "-new", "-time", str(duration), "-www", "/"]
    c0, t0 = cpu_seconds(pid), time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        outs = list(pool.map(lambda _: subprocess.run(cmd, capture_output=True, text=True,
                                                      check=False), range(clients)))
    elapsed = time.monotonic() - t0
    total, errors = 0, 0
    for out in outs:
        m = re.search(r"(\d+) connections in (\d+) real seconds", out.stdout)
        if m is None:
            errors += 1
            continue
        total += int(m.group(1))
    rate = total / elapsed
    cpu = (cpu_seconds(pid) - c0) / elapsed
    return Result(name, rate, float("nan"), float("nan"), errors, cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--clients", type=int, default=16, help="parallel openssl s_time")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    ensure_tools()
    from mso.cli.certs import issue
    tmp = Path(tempfile.mkdtemp(prefix="msobench-tls"))
    (tmp / "logs").mkdir()
    issued = issue(["bench.test"], tmp / "certs", "gateway", folder=tmp / "ca")
    combined = tmp / "certs" / "combined.pem"
    combined.write_bytes(issued.cert.read_bytes() + issued.key.read_bytes())
    procs = Procs(tmp / "logs")
    load0 = os.getloadavg()[0]
    try:
        b = [free_port(), free_port()]
        nginx_backends(tmp, procs, b)
        hp, mp = free_port(), free_port()
        hpid = haproxy_tls(tmp, procs, hp, combined, b)
        mpid = mso_tls(tmp, procs, mp, issued.cert, issued.key, b)
        for port in (*b, hp, mp):
            wait_port(port)
        targets = [("haproxy", hp, hpid), ("mso", mp, mpid)]
        for name, port, pid in targets:  # warm-up
            wrk("warmup", f"https://127.0.0.1:{port}/", 1, args.connections)
        rounds: dict[str, list[Result]] = {}
        for _ in range(args.rounds):
            for name, port, pid in targets:
                rounds.setdefault(f"{name} keep-alive", []).append(
                    wrk(name, f"https://127.0.0.1:{port}/", args.duration, args.connections,
                        pid=pid))
                rounds.setdefault(f"{name} handshakes", []).append(
                    handshakes(name, port, args.duration, args.clients, pid))
    finally:
        procs.stop()
        if os.environ.get("KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()[0]
    best = {k: max(v, key=lambda r: r.rps) for k, v in rounds.items()}
    errors = {k: sum(r.errors for r in v) for k, v in rounds.items()}
    report = render(best, errors, args, (load0, load1))
    print(report)
    if not args.no_write:
        write_section(SECTION, report)


def render(best: dict[str, Result], errors: dict[str, int], args: argparse.Namespace,
           load: tuple[float, float]) -> str:
    def row(kind: str, unit: str) -> list[str]:
        h, m = best[f"haproxy {kind}"], best[f"mso {kind}"]
        out = []
        for name, r in (("haproxy", h), ("mso", m)):
            cpu = f"{r.cpu * 100:.0f}% ({r.cpu / r.rps * 1e6:.0f} µs/{unit})"
            out.append(f"| {name} | {kind} | {r.rps:,.0f} | {r.rps / h.rps:.2f}x | {cpu} | "
                       f"{errors[f'{name} {kind}']} |")
        return out

    ka = best["mso keep-alive"].rps / best["haproxy keep-alive"].rps
    hs = best["mso handshakes"].rps / best["haproxy handshakes"].rps
    ok = {True: "met", False: "NOT met"}

    def efficiency(kind: str) -> float:
        """HAProxy's CPU per request (or connection) over mso's: 1.0 = as efficient."""
        h, m = best[f"haproxy {kind}"], best[f"mso {kind}"]
        return (h.cpu / h.rps) / (m.cpu / m.rps)

    eka, ehs = efficiency("keep-alive"), efficiency("handshakes")
    return "\n".join([
        SECTION, "",
        f"Same ECDSA P-256 certificate, TLS 1.2+ with Mozilla intermediate ciphers "
        f"(TLS 1.3 negotiated), ALPN http/1.1, X-Forwarded-Proto set; two nginx `return 200` "
        f"backends. Each proxy alone on CPU {PROXY_CPU}, one worker/thread; load generators "
        f"and backends on CPU {LOAD_CPU}. Keep-alive: wrk -t1 -c{args.connections} "
        f"-d{args.duration}s over HTTPS. Handshakes: {args.clients} parallel `openssl s_time "
        f"-new -www /` for {args.duration}s (a full handshake per connection, no session "
        f"resumption; both issue session tickets, as by default), then one request each. Best of "
        f"{args.rounds} interleaved rounds. mso's per-request modules: {BUILD[0]}. HAProxy "
        f"{_haproxy_version()}. Load average (1 min) {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end (2 cores, shared).", "",
        "Reproduce: `scripts/setup.sh` (compiles the proxy's per-request modules with "
        "mypyc), then `.venv/bin/python bench/proxy/tls.py` (installs wrk, haproxy, nginx "
        "if missing).", "",
        "| proxy | test | per second | vs HAProxy | proxy CPU | errors |",
        "|---|---|---|---|---|---|",
        *row("keep-alive", "req"), *row("handshakes", "conn"), "",
        f"Goals (>= 0.8x HAProxy): keep-alive req/s {ka:.2f}x ({ok[ka >= 0.8]}); new TLS "
        f"connections/s {hs:.2f}x ({ok[hs >= 0.8]}). CPU per unit of work, HAProxy's over "
        f"mso's (1.00x: as efficient): keep-alive {eka:.2f}x ({ok[eka >= 0.8]}), "
        f"handshakes {ehs:.2f}x ({ok[ehs >= 0.8]}).", "",
        "Neither proxy saturates its core here: the load generators (wrk's and openssl's "
        "own TLS work) fill theirs first, so the per-second ratios mix capacity with "
        "each proxy's latency per request or handshake. CPU time per request or connection "
        "(`proxy CPU`) is the fairer efficiency figure, and it is the one that decides "
        "capacity once the proxy's core is the limit.", "",
        "Where mso's extra CPU per handshake goes (perf, 2026-12-07, 8 parallel `s_time "
        "-new`): OpenSSL's libcrypto is 54% of HAProxy's samples but 36% of mso's, for the "
        "same handshakes; mso adds the Python interpreter (17%: the SSL object, memory "
        "BIOs and connection objects made per connection, the SNI callback) and uvloop's "
        "SSL protocol (7.5%). Sending no TLS 1.3 session tickets looked ~10-20% cheaper "
        "per handshake but within this machine's noise, and it would cost returning "
        "clients their resumption, so mso keeps OpenSSL's default (2 tickets).",
    ]) + "\n"


def _haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "?"


if __name__ == "__main__":
    main()
