"""Pure shaping of pods and Services into the JSON the CLI prints (MANIFEST.md shapes),
and what is wrong with a pod (`pod_problem`, in mso.engines.problems' terms).

Kubernetes' own words map onto mso's problems like this (the `app` container decides):

* ``start_failed``: the container could not be created or started: waiting in
  `ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`, `InvalidImageName`,
  `CreateContainerConfigError`, `CreateContainerError` or `RunContainerError`, or its last
  run ended as `ContainerCannotRun`/`StartError` (an executable not found);
* ``crash_loop``: waiting in `CrashLoopBackOff` (the kubelet restarts an exited container
  at once the first time, and puts it in back-off from the second exit: that is the
  first sign of a loop Kubernetes gives, a few seconds after start), or restarted
  ``CRASH_LOOP_EXITS`` times and not ready now;
* ``failed``: a pod that is never restarted (`restartPolicy: Never`, jobs) whose
  container exited non-zero;
* ``not_ready``: the container runs, has passed its startup probe (if any), has a
  readiness probe, and is not ready ``READY_ALLOWANCE`` seconds after it started (or after
  it was last ready: the pod's Ready condition); the message is the kubelet's last
  `Readiness probe failed` event when the caller fetched the events.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mso.engines.images import shim, supervision
from mso.engines.kubernetes import naming
from mso.engines.kubernetes.render import Obj
from mso.engines.problems import CRASH_LOOP_EXITS, READY_ALLOWANCE, Problem

START_FAILURES = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                  "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
CANNOT_RUN = {"ContainerCannotRun", "StartError"}
_WAITING_BACKOFF = START_FAILURES | {"CrashLoopBackOff"}


def _field(obj: Obj, camel: str, snake: str) -> Any:
    """Pods from the dynamic client are camelCase; typed models' dicts are snake_case."""
    return obj.get(camel) if camel in obj else obj.get(snake)


def epoch(stamp: Any) -> float | None:
    if not stamp:
        return None
    if isinstance(stamp, dt.datetime):
        return stamp.timestamp()
    try:
        return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def app_spec(pod: Obj) -> Obj:
    containers = (pod.get("spec") or {}).get("containers") or []
    found: Obj = next((c for c in containers if c.get("name") == "app"), {})
    return found


def _termination(terminated: Obj) -> str:
    code = _field(terminated, "exitCode", "exit_code")
    reason = terminated.get("reason") or ""
    message = _runtime_words((terminated.get("message") or "").strip()).splitlines()
    words = f"exited with status {code}" + (f" ({reason})" if reason else "")
    return words + (f": {message[-1]}" if message else "")


def _runtime_words(message: str) -> str:
    """The container runtime's own reason out of its error chain: `exec: "x": executable
    file not found in $PATH` rather than the IDs and layers around it."""
    marker = "unable to start container process: "
    return message.rsplit(marker, 1)[1].removesuffix(": unknown") if marker in message \
        else message


def needs_events(pod: Obj, now: float) -> bool:
    """Whether `pod_problem` would call this pod not ready, or it is starting under mso's
    shim: then its events say why (or that its process crash-loops in the container)."""
    problem = pod_problem(pod, now)
    return problem is not None and problem.kind == "not_ready" or _starting_under_shim(pod)


def _starting_under_shim(pod: Obj) -> bool:
    """The app container runs under mso's shim and has not been ready once yet: its
    startupProbe, the shim's status check, has not passed."""
    app = app_status(pod)
    probe = _field(app_spec(pod), "startupProbe", "startup_probe") or {}
    command = (_field(probe, "exec", "_exec") or {}).get("command") or []
    return bool((app.get("state") or {}).get("running")) and app.get("started") is not True \
        and [str(part) for part in command] == supervision.STATUS_CHECK


def _shim_crash_loop(events: list[Obj] | None) -> str:
    """What the newest `Startup probe failed: not ready: crash loop: ...` says, or ""."""
    prefix = f"Startup probe failed: not ready: {shim.CRASH_LOOP}"
    found = [e for e in events or [] if e.get("reason") == "Unhealthy"
             and str(e.get("message", "")).startswith(prefix)]
    if not found:
        return ""
    newest = max(found, key=lambda e: epoch(_field(e, "lastTimestamp", "last_timestamp")
                                            or _field(e, "eventTime", "event_time")) or 0.0)
    return str(newest.get("message", "")).strip().splitlines()[0][len(prefix):]


def pod_problem(pod: Obj, now: float, events: list[Obj] | None = None) -> Problem | None:
    """What is wrong with a pod's `app` container (module docstring), or None."""
    if pod["metadata"].get("deletionTimestamp") or pod["metadata"].get("deletion_timestamp"):
        return None
    app = app_status(pod)
    if not app:
        return None
    state = app.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    running = state.get("running") or {}
    last = ((_field(app, "lastState", "last_state") or {}).get("terminated")) or {}
    restarts = int(_field(app, "restartCount", "restart_count") or 0)
    reason = waiting.get("reason")
    if reason in START_FAILURES:
        message = _runtime_words((waiting.get("message") or "").strip())
        return Problem("start_failed", f"{reason}: {message}" if message else reason)
    ended = terminated or last
    if ended.get("reason") in CANNOT_RUN:
        return Problem("start_failed", f"cannot start: {_termination(ended)}")
    never = (pod.get("spec") or {}).get("restartPolicy", "Always") == "Never"
    if never and terminated and _field(terminated, "exitCode", "exit_code") not in (0, None):
        return Problem("failed", f"{_termination(terminated)}; restartPolicy: Never")
    if reason == "CrashLoopBackOff" or (restarts >= CRASH_LOOP_EXITS and not app.get("ready")
                                        and last and _unready_since(pod, last)):
        what = _termination(ended) if ended else "exited"
        return Problem("crash_loop", f"{what}; restarted {restarts} time"
                       f"{'s' if restarts != 1 else ''}, in CrashLoopBackOff")
    said = _shim_crash_loop(events) if _starting_under_shim(pod) else ""
    if said:
        return Problem("crash_loop", f"{said}; mso's shim keeps restarting it in the container")
    probe = _field(app_spec(pod), "readinessProbe", "readiness_probe")
    started = epoch(_field(running, "startedAt", "started_at"))
    if running and probe and not app.get("ready") and app.get("started") is not False \
            and started is not None:
        # Since it started, or since it was last ready (a dependency went away, say).
        since = max(started, _unready_from(pod) or started)
        if now - since >= READY_ALLOWANCE:
            what = "after start" if since == started else "after it was last ready"
            return Problem("not_ready", f"not ready {now - since:.0f}s {what}: "
                           f"{_probe_failure(events) or 'readiness probe failing'}")
    return None


def _unready_from(pod: Obj) -> float | None:
    """When the pod's Ready condition last turned False (None: ready, or not known)."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") == "True":
        return None
    return epoch(_field(ready, "lastTransitionTime", "last_transition_time"))


def _unready_since(pod: Obj, last: Obj) -> bool:
    """The pod has not been ready since before its last run started: that run, like the
    current one so far, never became ready."""
    changed = _unready_from(pod)
    started = epoch(_field(last, "startedAt", "started_at"))
    return changed is not None and started is not None and changed <= started


def _probe_failure(events: list[Obj] | None) -> str:
    """The newest `Readiness probe failed: ...` the kubelet reported for the pod."""
    found = [e for e in events or [] if e.get("reason") == "Unhealthy"
             and str(e.get("message", "")).startswith("Readiness probe")]
    if not found:
        return ""
    newest = max(found, key=lambda e: epoch(_field(e, "lastTimestamp", "last_timestamp")
                                            or _field(e, "eventTime", "event_time")) or 0.0)
    return str(newest.get("message", "")).strip().splitlines()[0]


def app_status(pod: Obj) -> Obj:
    statuses = (pod.get("status") or {}).get("container_statuses") or \
        (pod.get("status") or {}).get("containerStatuses") or []
    return next((c for c in statuses if c.get("name") == "app"), {})


def pod_state(pod: Obj) -> tuple[str, str]:
    """(state, reason): STARTING, RUNNING, READY, BACKOFF, FAILED, STOPPING or STOPPED."""
    if pod["metadata"].get("deletionTimestamp") or pod["metadata"].get("deletion_timestamp"):
        return "STOPPING", "pod is terminating"
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    app = app_status(pod)
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


def replica_row(pod: Obj, first_port: int | None, problem: Problem | None = None
                ) -> dict[str, Any]:
    labels = pod["metadata"].get("labels") or {}
    state, reason = pod_state(pod)
    if problem is not None and problem.kind == "crash_loop":
        state = "BACKOFF"  # the kubelet's CrashLoopBackOff, or the shim's own restarts
    ip = pod_ip(pod)
    return {"service": labels.get(naming.SERVICE, ""), "replica": pod["metadata"]["name"],
            "release": int(labels.get(naming.RELEASE, "0")),
            "subset": labels.get(naming.SUBSET, "stable"), "state": state, "pid": None,
            "address": f"{ip}:{first_port}" if ip and first_port else ip,
            "restarts": int(app_status(pod).get("restartCount")
                            or app_status(pod).get("restart_count") or 0),
            "reason": problem.message if problem else reason,
            "problem": problem.to_json() if problem else None,
            "node": (pod.get("spec") or {}).get("nodeName")}


def ps(app: str, namespace: str, pods: list[Obj], first_ports: dict[str, int | None],
       now: float, events: dict[str, list[Obj]] | None = None) -> dict[str, Any]:
    """`events`: pod name -> its events, for the pods `needs_events` named."""
    rows = []
    jobs: dict[str, str] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if labels.get(naming.COMPONENT) == "gateway":
            continue
        problem = pod_problem(pod, now, (events or {}).get(pod["metadata"]["name"]))
        row = replica_row(pod, first_ports.get(labels.get(naming.SERVICE, "")), problem)
        if labels.get(naming.COMPONENT) == "job":
            jobs[row["service"]] = "completed" if row["state"] == "STOPPED" else row["state"].lower()
            continue
        rows.append(row)
    rows.sort(key=lambda r: (r["service"], r["subset"], r["replica"]))
    return {"app": app, "namespace": namespace, "replicas": rows, "jobs": jobs}


def endpoints(gateway_host: str | None, gateway_port: int, stable: dict[str, str | None],
              pods: list[Obj], weights: dict[str, dict[str, int]],
              first_ports: dict[str, int | None],
              routes: list[dict[str, Any]], tls_port: int | None = None) -> dict[str, Any]:
    """`mso endpoints -o json` in the local engine's shape (`routes`: the manifest's;
    `tls_port`: `gateway.tls.port`, served by the gateway's Service beside its port)."""
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
            **({"gateway_tls": f"{host}:{tls_port}"} if tls_port is not None else {}),
            "metrics": f"http://{host}:{naming.GATEWAY_METRICS_PORT}/metrics",
            "routes": routes, "services": services}
