"""Show the order of a proxy's socket syscalls within its event-loop turns, HAProxy beside mso.

Under the same wrk load as bench/proxy/run.py, each proxy is traced with strace for about a
second and every loop turn (the syscalls between two epoll waits) is printed as letters:

    R  read a response from an upstream      W  write a request to an upstream
    r  read a request from a client          w  write a response to a client

Runs of one letter are collapsed (``RrWw`` = all upstream reads, then client reads, then
upstream writes, then client writes). strace slows the proxy down a lot, so only the order
means anything here, not the timing. docs/benchmarks.md explains why the order matters.

    .venv/bin/python bench/proxy/turn_order.py
"""
from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

SYSCALL = re.compile(r"^\d+ (\w+)\(\d+<TCP:\[[\d.]+:\d+->[\d.]+:(\d+)\]>")
READS = {"read", "recvfrom", "readv", "recvmsg"}


def turn_shapes(trace: str, upstream_ports: set[str]) -> collections.Counter[str]:
    """Count the collapsed letter pattern of every loop turn in an `strace -yy` log."""
    shapes: collections.Counter[str] = collections.Counter()
    turn: list[str] = []
    for line in trace.splitlines():
        if "epoll_wait(" in line or "epoll_pwait(" in line:
            if turn:
                shapes[re.sub(r"(.)\1+", r"\1", "".join(turn))] += 1
            turn = []
            continue
        m = SYSCALL.match(line)
        if m is None:
            continue
        call, peer_port = m.groups()
        upstream = peer_port in upstream_ports
        if call in READS:
            turn.append("R" if upstream else "r")
        else:
            turn.append("W" if upstream else "w")
    return shapes


def trace(pid: int, url: str, out: Path) -> str:
    load = subprocess.Popen(["taskset", "-c", bench.LOAD_CPU, "wrk", "-t1", "-c50", "-d5s", url],
                            stdout=subprocess.DEVNULL)
    try:
        time.sleep(2)  # past wrk's connection set-up
        st = subprocess.Popen(["strace", "-f", "-yy", "-o", str(out), "-p", str(pid), "-e",
                               "trace=read,write,writev,recvfrom,sendto,sendmsg,epoll_wait,epoll_pwait"],
                              stderr=subprocess.DEVNULL)
        time.sleep(1)
        st.send_signal(2)
        st.wait()
    finally:
        load.wait()
    return out.read_text()


def main() -> None:
    bench.ensure_tools()
    if shutil.which("strace") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "strace"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="msoturns"))
    (tmp / "logs").mkdir()
    procs = bench.Procs(tmp)
    try:
        backends = [bench.free_port(), bench.free_port()]
        bench.nginx_backends(tmp, procs, backends)
        hp, htp, mp, mtp, mm = (bench.free_port() for _ in range(5))
        targets = [("haproxy", bench.haproxy(tmp, procs, hp, htp, backends), hp),
                   ("mso", bench.mso_proxy(tmp, procs, mp, mtp, mm, backends), mp)]
        for port in (*backends, hp, mp):
            bench.wait_port(port)
        for name, pid, port in targets:
            shapes = turn_shapes(trace(pid, f"http://127.0.0.1:{port}/", tmp / name),
                                 {str(p) for p in backends})
            total = sum(shapes.values())
            print(f"{name}: {total} loop turns")
            for shape, n in shapes.most_common(5):
                print(f"  {n / total:6.1%}  {shape}")
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
