"""Killing the Kubernetes gateway's serving proxy (inside a gateway pod), a gateway
container, or a gateway pod, for the e2e test and bench/kubernetes/gateway_kill.py.

The lab's container runtime is the host's dockerd (kubelet's dockershim): every pod's
container is a Docker container labelled with its pod's name, and its processes are host
processes, so a process inside a pod is killed from the host by its host pid.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from mso.engines.kubernetes import naming
from mso.engines.kubernetes.control import GatewayControl
from mso.engines.kubernetes.gateway import CONTROL_SECRET
from mso.engines.kubernetes.kube import Kube
from tests.e2e.kubernetes.helpers import ROOT, Mso
from tests.e2e.swarm.gateway_kill import host_pid

APP = "gwkill"


def echo_app(folder: Path, kubeconfig: Path, namespace: str) -> Mso:
    """The echo app (2 replicas, bench/kubernetes/echo.py) behind the gateway."""
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "bench" / "kubernetes" / "echo.py", folder / "echo.py")
    manifest = {"app": APP, "gateway": {"port": 8080},
                "routes": [{"path": "/", "service": "echo"}],
                "services": {"echo": {"run": ["python3", "echo.py"], "cwd": ".",
                                      "replicas": 2, "ports": {"http": 8000},
                                      "health": {"readiness": {"http": "/ready",
                                                               "period": "1s"}},
                                      "stop": {"grace": "5s"}}}}
    (folder / "mso.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return Mso(folder, kubeconfig, namespace)


def kube(mso: Mso) -> Kube:
    return Kube(str(mso.kubeconfig), None)


def gateway_address(mso: Mso) -> tuple[str, int]:
    """The gateway Service's ClusterIP and port (kube-proxy balances over its pods)."""
    host, port = mso.json("endpoints")["gateway"].rsplit(":", 1)
    return host, int(port)


def gateway_pods(mso: Mso, ready_only: bool = True) -> list[dict[str, Any]]:
    pods = kube(mso).list("v1", "Pod", mso.namespace, naming.gateway_selector(APP))
    out = []
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (pod.get("status") or {}).get("conditions") or [])
        if ready or not ready_only:
            out.append(pod)
    return sorted(out, key=lambda p: str(p["metadata"]["name"]))


def control(mso: Mso, pod: dict[str, Any]) -> GatewayControl:
    secret = kube(mso).get("v1", "Secret", CONTROL_SECRET, mso.namespace)
    assert secret is not None, "no gateway control secret"
    token = base64.b64decode(secret["data"]["token"]).decode()
    return GatewayControl(pod["status"]["podIP"], naming.GATEWAY_CONTROL_PORT, token, 5.0)


def gateway_ping(mso: Mso, pod: dict[str, Any]) -> dict[str, Any]:
    """The pod's supervisor ping: `proxy` (the serving child's pid in the container),
    `spare`, `failovers`, `version`."""
    return control(mso, pod).ping()


def container_of(pod: dict[str, Any]) -> str:
    """The Docker id of the pod's gateway container."""
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter",
         f"label=io.kubernetes.pod.name={pod['metadata']['name']}",
         "--filter", "label=io.kubernetes.container.name=gateway"],
        capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 1, out
    return out[0]


def serving_proxy(mso: Mso, pod: dict[str, Any]) -> tuple[int, int]:
    """The pod's serving proxy process: its pid in the container and on the host."""
    pid = int(gateway_ping(mso, pod)["proxy"])
    return pid, host_pid(container_of(pod), pid)


def kill_container(pod: dict[str, Any]) -> str:
    """`docker kill` of the pod's gateway container (the kubelet restarts it)."""
    container = container_of(pod)
    subprocess.run(["docker", "kill", container], capture_output=True, check=True)
    return container


def restarts(mso: Mso, pod: dict[str, Any]) -> int:
    got = kube(mso).get("v1", "Pod", pod["metadata"]["name"], mso.namespace) or {}
    return sum(int(c.get("restartCount", 0))
               for c in (got.get("status") or {}).get("containerStatuses") or [])
