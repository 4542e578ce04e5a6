"""Failing pods as the CLI reports them: their problems (views.pod_problem, with the
kubelet's events where they say why) and their last log lines, the exited run included."""

from __future__ import annotations

import time
from typing import Any

from mso.engines.kubernetes import naming, views
from mso.engines.kubernetes.kube import Kube
from mso.engines.kubernetes.render import Obj
from mso.engines.problems import Problem
from mso.engines.remote import failing_replica


def log_record(pod: Obj, line: str) -> dict[str, Any]:
    """One `kubectl logs --timestamps` line in the `mso logs -o json` shape. The
    Kubernetes API merges stdout and stderr; they are reported as stdout."""
    labels = pod["metadata"].get("labels") or {}
    stamp, _, text = line.partition(" ")
    return {"ts": views.epoch(stamp) or time.time(), "service": labels.get(naming.SERVICE, ""),
            "replica": pod["metadata"]["name"],
            "release": int(labels.get(naming.RELEASE, "0") or 0), "stream": "stdout",
            "line": text}


def pod_logs(kube: Kube, namespace: str, pod: Obj, lines: int) -> list[dict[str, Any]]:
    """The last `lines` records of a pod's app container: the run before this one (it
    exited) and the current one, oldest first."""
    app = views.app_status(pod)
    state = app.get("state") or {}
    last = ((app.get("lastState") or app.get("last_state") or {}).get("terminated")) or {}
    name = pod["metadata"]["name"]
    records: list[dict[str, Any]] = []
    if last:
        records += [log_record(pod, line)
                    for line in kube.log_lines(name, namespace, False, None, lines, True)]
    # A container waiting to be restarted has no log of its own: the kubelet would answer
    # with the previous run's again.
    if state.get("running") or state.get("terminated") or not last:
        records += [log_record(pod, line)
                    for line in kube.log_lines(name, namespace, False, None, lines)]
    records.sort(key=lambda r: r["ts"])
    return records[-lines:]


def problems(kube: Kube, namespace: str, pods: list[Obj], now: float) -> dict[str, Problem]:
    """pod name -> its problem; the events are read only for pods not ready too long."""
    out: dict[str, Problem] = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        events = kube.events_of(name, namespace) if views.needs_events(pod, now) else None
        problem = views.pod_problem(pod, now, events)
        if problem is not None:
            out[name] = problem
    return out


def events_for(kube: Kube, namespace: str, pods: list[Obj], now: float) -> dict[str, list[Obj]]:
    """pod name -> events, for the pods whose problem the events explain (for `ps`)."""
    return {p["metadata"]["name"]: kube.events_of(p["metadata"]["name"], namespace)
            for p in pods if views.needs_events(p, now)}


def failing(kube: Kube, namespace: str, pods: list[Obj], found: dict[str, Problem],
            lines: int) -> list[dict[str, Any]]:
    """DeployFailed entries of the pods in `found` (mso.engines.remote)."""
    out = []
    for pod in pods:
        problem = found.get(pod["metadata"]["name"])
        if problem is None:
            continue
        row = views.replica_row(pod, None, problem)
        out.append(failing_replica(row, pod_logs(kube, namespace, pod, lines)))
    return out
