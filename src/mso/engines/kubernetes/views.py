"""Pure shaping of pods and Services into the JSON the CLI prints (MANIFEST.md shapes)."""

from __future__ import annotations

from typing import Any

from mso.engines.kubernetes import naming
from mso.engines.kubernetes.render import Obj

_WAITING_BACKOFF = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull",
                    "CreateContainerConfigError", "RunContainerError"}


def _app_status(pod: Obj) -> Obj:
    statuses = (pod.get("status") or {}).get("container_statuses") or \
        (pod.get("status") or {}).get("containerStatuses") or []
    return next((c for c in statuses if c.get("name") == "app"), {})


def pod_state(pod: Obj) -> tuple[str, str]:
    """(state, reason): STARTING, RUNNING, READY, BACKOFF, FAILED, STOPPING or STOPPED."""
    if pod["metadata"].get("deletionTimestamp") or pod["metadata"].get("deletion_timestamp"):
        return "STOPPING", "pod is terminating"
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    app = _app_status(pod)
    waiting = ((app.get("state") or {}).get("waiting") or {})
    if waiting.get("reason") in _WAITING_BACKOFF:
        return "BACKOFF", f"{waiting.get('reason')}: {waiting.get('message') or ''}".strip()
    if phase == "Failed":
        return "FAILED", status.get("reason") or "pod failed"
    if phase == "Succeeded":
        return "STOPPED", "completed"
    if phase == "Running":
        conditions = status.get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return "READY", ""
        return "RUNNING", "not ready yet"
    return "STARTING", status.get("reason") or ""


def pod_ip(pod: Obj) -> str | None:
    status = pod.get("status") or {}
    ip: str | None = status.get("podIP") or status.get("pod_ip")
    return ip


def replica_row(pod: Obj, first_port: int | None) -> dict[str, Any]:
    labels = pod["metadata"].get("labels") or {}
    state, reason = pod_state(pod)
    ip = pod_ip(pod)
    return {"service": labels.get(naming.SERVICE, ""), "replica": pod["metadata"]["name"],
            "release": int(labels.get(naming.RELEASE, "0")),
            "subset": labels.get(naming.SUBSET, "stable"), "state": state, "pid": None,
            "address": f"{ip}:{first_port}" if ip and first_port else ip,
            "restarts": int(_app_status(pod).get("restartCount")
                            or _app_status(pod).get("restart_count") or 0),
            "reason": reason, "node": (pod.get("spec") or {}).get("nodeName")}


def ps(app: str, namespace: str, pods: list[Obj], first_ports: dict[str, int | None]) -> dict[str, Any]:
    rows = []
    jobs: dict[str, str] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if labels.get(naming.COMPONENT) == "gateway":
            continue
        row = replica_row(pod, first_ports.get(labels.get(naming.SERVICE, "")))
        if labels.get(naming.COMPONENT) == "job":
            jobs[row["service"]] = "completed" if row["state"] == "STOPPED" else row["state"].lower()
            continue
        rows.append(row)
    rows.sort(key=lambda r: (r["service"], r["subset"], r["replica"]))
    return {"app": app, "namespace": namespace, "replicas": rows, "jobs": jobs}


def endpoints(gateway_host: str | None, gateway_port: int, stable: dict[str, str | None],
              pods: list[Obj], weights: dict[str, dict[str, int]],
              first_ports: dict[str, int | None]) -> dict[str, Any]:
    services: dict[str, Any] = {}
    for name, address in sorted(stable.items()):
        eps = []
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            if labels.get(naming.SERVICE) != name or labels.get(naming.COMPONENT) != "service":
                continue
            row = replica_row(pod, first_ports.get(name))
            subset = row["subset"]
            eps.append({"replica": row["replica"], "address": row["address"], "subset": subset,
                        "weight": weights.get(name, {}).get(subset, 0),
                        "ready": row["state"] == "READY"})
        services[name] = {"address": address, "endpoints": sorted(eps, key=lambda e: e["replica"])}
    host = gateway_host or "-"
    return {"gateway": f"{host}:{gateway_port}",
            "metrics": f"http://{host}:{naming.GATEWAY_METRICS_PORT}/metrics",
            "services": services}
