"""Issue 15 part 1, Swarm half: the gateway under `kill -9`, at 200 requests/s.

The echo app (2 replicas) runs on the single-node Swarm; a paced client sends 200 GETs/s
through the gateway's published port (4 threads, a new connection per request, as
bench/failures/proxy_kill.py does on the embedded engine). Two kinds of kill, `--kills`
times each, with traffic back in between:

* `proxy`: SIGKILL of the serving proxy process inside the gateway container. The
  container runs `python -m mso.proxy --supervise`: a spare proxy takes over the
  listening sockets (held by the supervisor) and the table.
* `container`: `docker kill` of the gateway container. Swarm starts a new one (restart
  delay 0.5 s); it serves the table saved in the bind-mounted folder as soon as its
  proxy is up. The host port is published in host mode (no IPVS here), which one task
  per node can hold, so there is no second gateway to take the traffic meanwhile.

Per kind: requests, failed requests (requests in flight in the killed process, and
requests in the gap), and per kill the outage: from the start of its first failed
request to the first answer to a request sent after its last failed one (0 when none
failed).

    .venv/bin/python bench/swarm/gateway_kill.py [--kills 3] [--kinds proxy,container]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench" / "failures"))

from proxy_kill import THREADS, Trace, load  # noqa: E402
from tests.e2e.swarm.conftest import app_copy, ensure_swarm, free_port, mso, wait_for  # noqa: E402
from tests.e2e.swarm.gateway_kill import (gateway_container, gateway_ping,  # noqa: E402
                                          kill_container, kill_serving_proxy)

ECHO = REPO / "tests" / "e2e" / "swarm" / "echoapp"
APP = "echo"


def answered_after(trace: Trace, t: float) -> bool:
    with trace.lock:
        return any(start > t and error is None for start, _, error in trace.requests[-400:])


def under_load(port: int, kills: int, kill: Callable[[int], None],
               prepare: Callable[[int], None] = lambda _: None,
               host: str = "127.0.0.1") -> tuple[Trace, list[float]]:
    """200 GETs/s (a new connection each) on host:port; `kill(i)` `kills` times, each once
    traffic is back and steady and `prepare(i)` returned. The trace and the kill times."""
    trace, stop = Trace(), threading.Event()
    threads = [threading.Thread(target=load, args=(port, False, stop, trace, host))
               for _ in range(THREADS)]
    for t in threads:
        t.start()
    times: list[float] = []
    try:
        wait_for(lambda: answered_after(trace, time.monotonic() - 0.5), 30, "traffic")
        for i in range(kills):
            prepare(i)
            times.append(time.monotonic())
            kill(i)
            t = times[-1]
            wait_for(lambda: answered_after(trace, t), 60, "traffic back")
            settle = time.monotonic()
            wait_for(lambda: time.monotonic() > settle + 2.0, 5, "steady traffic")
    finally:
        stop.set()
        for t in threads:
            t.join()
    return trace, times


def run(manifest: Path, port: int, kind: str, kills: int) -> dict[str, object]:
    def kill(_: int) -> None:
        if kind == "proxy":
            kill_serving_proxy(manifest, APP)
        else:
            old = gateway_container(APP)
            kill_container(APP)
            wait_for(lambda: _other(old), 60, "a new gateway container")

    def ready(_: int) -> None:
        if kind == "proxy":
            wait_for(lambda: gateway_ping(manifest).get("spare"), 60, "a spare")

    trace, times = under_load(port, kills, kill, ready)
    return summarize(kind, trace, times)


def summarize(kind: str, trace: Trace, times: list[float]) -> dict[str, object]:
    """Requests, failed ones, and per kill the failures and the outage: from the start of
    its first failed request to the first answer to a request sent after its last one."""
    failed = [(s, e, err) for s, e, err in trace.requests if err is not None]
    windows = [(k, times[i + 1] if i + 1 < len(times) else float("inf"))
               for i, k in enumerate(times)]
    per_kill, outage = [], []
    for k, until in windows:
        mine = [(s, e) for s, e, _ in failed if k <= e < until]
        per_kill.append(len(mine))
        if not mine:
            outage.append(0.0)
            continue
        first, last = min(s for s, _ in mine), max(s for s, _ in mine)
        answered = [e for s, e, err in trace.requests if err is None and s > last]
        outage.append((min(answered) - first) * 1000 if answered else float("inf"))
    errors: dict[str, int] = {}
    for *_, err in failed:
        errors[str(err)] = errors.get(str(err), 0) + 1
    return {"kind": kind, "requests": len(trace.requests), "failed": len(failed),
            "per_kill": per_kill, "outage_ms": outage, "errors": errors}


def _other(old: str) -> bool:
    try:
        return gateway_container(APP) != old
    except AssertionError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--kinds", default="proxy,container")
    args = ap.parse_args()
    ensure_swarm()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        manifest = app_copy(ECHO, Path(tmp) / "gwkill", port)
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        try:
            rows = [run(manifest, port, kind, args.kills) for kind in args.kinds.split(",")]
        finally:
            mso("down", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent,
                check=False)
    print_table(rows, args.kills)


def print_table(rows: list[dict[str, object]], kills: int) -> None:
    print("| kill (x%d, 200 GETs/s) | requests | failed | failed per kill | outage per "
          "kill (ms) | errors |" % kills)
    print("|---|---|---|---|---|---|")
    for r in rows:
        outage = r["outage_ms"]
        assert isinstance(outage, list)
        print(f"| {r['kind']} | {r['requests']} | {r['failed']} | {r['per_kill']} | "
              f"{', '.join(f'{x:.0f}' for x in outage)} | {r['errors']} |")


if __name__ == "__main__":
    main()
