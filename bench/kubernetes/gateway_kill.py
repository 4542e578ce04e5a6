"""Issue 15 part 1, Kubernetes half: the gateway under `kill -9`, at 200 requests/s.

The echo app (2 replicas) runs on the lab cluster (scripts/k8s-lab.sh); a paced client
sends 200 GETs/s to the gateway Service's ClusterIP (4 threads, a new connection per
request; kube-proxy in iptables mode spreads connections over the ready gateway pods),
with the load and analysis of bench/swarm/gateway_kill.py. Kinds, `--kills` times each,
alternating between the gateway pods, traffic back and steady in between:

* `proxy`: SIGKILL of the serving proxy process inside a gateway pod. gatewayd runs it
  under `python -m mso.proxy --supervise`: the pod's spare proxy takes over the listening
  sockets (held by the supervisor) and the table;
* `container`: `docker kill` of a gateway pod's container (the lab's runtime is dockerd).
  The kubelet restarts it; it serves the table saved in its emptyDir. Connections
  kube-proxy sends to that pod meanwhile are refused, until the pod is out of the
  Service's endpoints or its new container listens;
* `pod`: deletion of a gateway pod (preStop keeps it serving while kube-proxy drops it;
  the Deployment makes a new one).

`--gateway-replicas 1` scales the gateway Deployment down first: the closest thing to the
single gateway of a host-mode Swarm publication.

    PYTHONPATH=src .venv/bin/python bench/kubernetes/gateway_kill.py \\
        [--kills 3] [--kinds proxy,container,pod] [--gateway-replicas 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kubernetes import client as k8s  # noqa: E402

from bench.swarm.gateway_kill import print_table, summarize, under_load  # noqa: E402
from mso.engines.kubernetes import naming  # noqa: E402
from tests.e2e.kubernetes.gateway_kill import (echo_app, gateway_address,  # noqa: E402
                                               gateway_ping, gateway_pods, kill_container,
                                               kube, restarts, serving_proxy)
from tests.e2e.kubernetes.helpers import Mso, wait_for  # noqa: E402

LAB = ROOT / "scripts" / "k8s-lab.sh"
NAMESPACE = "bench-gwkill"


def steady(mso: Mso, replicas: int) -> list[dict[str, Any]]:
    """The gateway pods, once `replicas` are ready, each with a spare proxy."""
    return wait_for(f"{replicas} ready gateway pods with a spare each", lambda: (
        p if len(p := gateway_pods(mso)) == replicas
        and all(gateway_ping(mso, pod).get("spare") for pod in p) else None),
        timeout=180, interval=0.2)


def run(mso: Mso, kind: str, kills: int, replicas: int,
        verbose: bool = False) -> dict[str, object]:
    host, port = gateway_address(mso)
    pods: list[dict[str, Any]] = []
    target: list[int] = []

    def prepare(i: int) -> None:
        pods[:] = steady(mso, replicas)
        if kind == "proxy":  # found before the kill's clock starts
            target[:] = [serving_proxy(mso, pods[i % len(pods)])[1]]

    def kill(i: int) -> None:
        pod = pods[i % len(pods)]
        if kind == "proxy":
            os.kill(target[0], signal.SIGKILL)
        elif kind == "container":
            count = restarts(mso, pod)
            kill_container(pod)
            wait_for("the container restarted", lambda: restarts(mso, pod) > count,
                     timeout=120, interval=0.2)
        else:
            kube(mso).delete_pod(pod["metadata"]["name"], mso.namespace)

    trace, times = under_load(port, kills, kill, prepare, host=host)
    if verbose:
        t0 = times[0]
        for start, end, error in trace.requests:
            if error is not None:
                print(f"  {kind}: {start - t0:8.3f} {end - t0:8.3f} {error}", file=sys.stderr)
        print(f"  {kind}: kills at {[round(t - t0, 3) for t in times]}", file=sys.stderr)
    steady(mso, replicas)
    return summarize(f"{kind} ({replicas} gateway pod{'s' if replicas > 1 else ''})",
                     trace, times)


def scale_gateway(mso: Mso, replicas: int) -> None:
    apps = k8s.AppsV1Api(kube(mso).core.api_client)
    apps.patch_namespaced_deployment_scale(naming.GATEWAY, mso.namespace,
                                           {"spec": {"replicas": replicas}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--kinds", default="proxy,container,pod")
    ap.add_argument("--gateway-replicas", type=int, default=2)
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print every failed request, relative to the first kill")
    args = ap.parse_args()
    if subprocess.run(["bash", str(LAB), "status"], capture_output=True).returncode != 0:
        raise SystemExit("the lab is down: scripts/k8s-lab.sh up")
    kubeconfig = Path("/var/lib/mso-k8s-lab/admin.kubeconfig")
    with tempfile.TemporaryDirectory() as tmp:
        mso = echo_app(Path(tmp) / "gwkill", kubeconfig, NAMESPACE)
        mso.run("deploy", timeout=600)
        try:
            if args.gateway_replicas != 2:
                scale_gateway(mso, args.gateway_replicas)
            rows = [run(mso, kind, args.kills, args.gateway_replicas, args.verbose)
                    for kind in args.kinds.split(",")]
        finally:
            mso.run("down", check=False)
    print_table(rows, args.kills)


if __name__ == "__main__":
    main()
