"""Kubernetes engine figures on the lab cluster (docs/benchmarks.md, "Kubernetes (issue 6)").

    .venv/bin/python bench/kubernetes/run.py [--keep-lab] [--rounds N]

Measures: cluster start time (lab down -> node Ready), shop deploy time, the time from
`mso deploy` of a bad canary to its automatic rollback, and failed requests under the
same load during (a) an mso canary promotion and (b) a plain Deployment rolling update
(no preStop, Service ClusterIP) of the same change to the same naive app.
Writes bench/kubernetes/results.json and prints a markdown table. Traffic goes only to
the lab's ClusterIPs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mso.engines.kubernetes import naming  # noqa: E402
from mso.engines.kubernetes.kube import Kube  # noqa: E402
from tests.e2e.kubernetes.helpers import Load, Mso, get, wait_for  # noqa: E402

LAB = ROOT / "scripts" / "k8s-lab.sh"
HERE = Path(__file__).parent
ECHO_CANARY = {"strategy": "canary", "max_surge": 1, "max_unavailable": 0,
               "steps": [{"set_weight": 50}, {"analysis": {"duration": "5s"}}],
               "analysis": {"min_samples": 20, "max_latency_p99_increase": 5.0}}


def lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(LAB), *args], capture_output=True, text=True,
                          timeout=3600)


def cluster_start() -> tuple[float, Path]:
    lab("down")
    started = time.monotonic()
    up = lab("up")
    if up.returncode != 0:
        raise SystemExit("lab up failed: " + up.stderr[-2000:])
    return time.monotonic() - started, Path(up.stdout.strip().splitlines()[-1])


def shop_deploy(kubeconfig: Path, work: Path) -> float:
    folder = work / "shop"
    shutil.copytree(ROOT / "examples" / "shop", folder,
                    ignore=shutil.ignore_patterns(".mso", "__pycache__"))
    mso = Mso(folder, kubeconfig, "bench-shop")
    mso.run("deploy", timeout=600)  # warm: images built, pause image present
    mso.run("down")
    wait_for("namespace gone", lambda: Kube(str(kubeconfig), None).get(
        "v1", "Namespace", "bench-shop", None) is None, timeout=120)
    started = time.monotonic()
    mso.run("deploy", timeout=600)
    took = time.monotonic() - started
    mso.run("down")
    return took


def echo_app(work: Path, kubeconfig: Path) -> Mso:
    folder = work / "echo"
    folder.mkdir()
    shutil.copy(HERE / "echo.py", folder / "echo.py")
    manifest = {"app": "echo", "gateway": {"port": 8080}, "routes": [{"path": "/", "service": "echo"}],
                "services": {"echo": {"run": ["python3", "echo.py"], "cwd": ".", "replicas": 2,
                                      "ports": {"http": 8000},
                                      "env": {"ECHO_VERSION": "v1"},
                                      "health": {"readiness": {"http": "/ready", "period": "1s"}},
                                      "stop": {"grace": "5s"}, "rollout": ECHO_CANARY}}}
    (folder / "mso.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return Mso(folder, kubeconfig, "bench-echo")


def set_version(mso: Mso, version: str, extra: dict[str, Any] | None = None) -> None:
    path = mso.folder / "mso.yaml"
    data = yaml.safe_load(path.read_text())
    data["services"]["echo"]["env"]["ECHO_VERSION"] = version
    data["services"]["echo"].update(extra or {})
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def phase(mso: Mso) -> str:
    return str(mso.json("rollout", "status", "echo")["phase"])


def mso_promotion(mso: Mso, version: str) -> dict[str, Any]:
    host, port = mso.json("endpoints")["gateway"].rsplit(":", 1)
    set_version(mso, version)
    with Load(host, int(port), "/", rate=100, threads=4) as load:
        time.sleep(2)
        mso.run("deploy")
        wait_for("promotion", lambda: phase(mso) == "Promoted", timeout=300)
        wait_for("canary gone", lambda: not any(
            r["subset"] == "canary" for r in mso.json("ps")["replicas"]), timeout=120)
        time.sleep(2)
    r = load.stop()
    return {"requests": r.ok + len(r.failures), "failed": len(r.failures)}


def mso_rollback(mso: Mso) -> dict[str, Any]:
    host, port = mso.json("endpoints")["gateway"].rsplit(":", 1)
    bad = {"run": ["python3", "-c", "import os,http.server as h\nclass H(h.BaseHTTPRequestHandler):\n"
                   " def do_GET(s):\n  c=200 if s.path=='/ready' else 500\n  s.send_response(c)\n"
                   "  s.send_header('Content-Length','0')\n  s.end_headers()\n"
                   " def log_message(s,*a): pass\n"
                   "h.ThreadingHTTPServer(('0.0.0.0',int(os.environ['PORT'])),H).serve_forever()"]}
    set_version(mso, "bad", bad)
    with Load(host, int(port), "/", rate=100, threads=4) as load:
        time.sleep(2)
        mso.run("deploy")
        started = time.monotonic()
        wait_for("rollback", lambda: phase(mso) == "RolledBack", timeout=300)
        took = time.monotonic() - started
        wait_for("canary gone", lambda: not any(
            r["subset"] == "canary" for r in mso.json("ps")["replicas"]), timeout=120)
    r = load.stop()
    return {"seconds": round(took, 1), "requests": r.ok + len(r.failures), "failed": len(r.failures)}


def plain_rolling(kube: Kube, image: str, version: str, namespace: str = "bench-plain") -> dict[str, Any]:
    app = "bench-plain"
    labels = {"app": "echo"}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": naming.owner_labels(app)}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "echo", "namespace": namespace, "labels": naming.owner_labels(app)},
        "spec": {"selector": labels, "ports": [{"port": 8000, "targetPort": 8000, "protocol": "TCP"}]}}

    def deployment(v: str) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
            "name": "echo", "namespace": namespace, "labels": naming.owner_labels(app)},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "echo", "image": image, "imagePullPolicy": "Never",
                         "command": ["python3", "echo.py"], "workingDir": "/app",
                         "env": [{"name": "ECHO_VERSION", "value": v}],
                         "readinessProbe": {"httpGet": {"path": "/ready", "port": 8000},
                                            "periodSeconds": 1}}]}}}}

    for obj in (ns, svc, deployment("v1")):
        kube.apply(obj, app)
    ip = wait_for("service IP", lambda: (kube.get("v1", "Service", "echo", namespace) or {})
                  .get("spec", {}).get("clusterIP"))

    def ready(v: str) -> bool:
        d = kube.get("apps/v1", "Deployment", "echo", namespace) or {}
        st = d.get("status") or {}
        if not (st.get("updatedReplicas") == 2 and st.get("readyReplicas") == 2
                and st.get("replicas") == 2):
            return False
        try:
            return get(ip, 8000, "/")[1].strip() == v
        except OSError:
            return False

    wait_for("plain echo v1", lambda: ready("v1"), timeout=120)
    with Load(ip, 8000, "/", rate=100, threads=4) as load:
        time.sleep(2)
        kube.apply(deployment(version), app)
        wait_for("plain rolling update", lambda: ready(version), timeout=180)
        time.sleep(6)  # old pods finish terminating
    r = load.stop()
    kube.delete(ns, app)
    wait_for("plain namespace gone", lambda: kube.get("v1", "Namespace", namespace, None) is None,
             timeout=180)
    return {"requests": r.ok + len(r.failures), "failed": len(r.failures)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep-lab", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", default="start,shop,promotion,plain,rollback",
                    help="comma-separated subset; results merge into results.json")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    path = HERE / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if "start" in parts:
        start, kubeconfig = cluster_start()
        results["cluster_start_s"] = round(start, 1)
    else:
        kubeconfig = Path(lab("up").stdout.strip().splitlines()[-1])
    kube = Kube(str(kubeconfig), None)
    with tempfile.TemporaryDirectory(prefix="mso-bench-k8s-") as tmp:
        work = Path(tmp)
        if "shop" in parts:
            results["shop_deploy_s"] = round(shop_deploy(kubeconfig, work), 1)
            save(results)
        mso = echo_app(work, kubeconfig)
        mso.run("deploy", timeout=600)
        echo = kube.get("apps/v1", "Deployment", "echo", "bench-echo") or {}
        image = next(c["image"] for c in echo["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "app")
        if "promotion" in parts:
            results["mso_canary_promotion"] = [mso_promotion(mso, f"v{i + 2}")
                                               for i in range(args.rounds)]
            save(results)
        if "plain" in parts:
            results["plain_rolling_update"] = [plain_rolling(kube, image, f"v{i + 2}")
                                               for i in range(args.rounds)]
            save(results)
        if "rollback" in parts:
            results["mso_canary_rollback"] = mso_rollback(mso)
        mso.run("down")
    if not args.keep_lab:
        lab("down")
    save(results)
    print(json.dumps(results, indent=2))


def save(results: dict[str, Any]) -> None:
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
