"""Pure builders: a `Workload` -> Kubernetes objects (plain dicts, ready for YAML or the API).

Per service: a Deployment per subset (`svc`, `svc-canary`), a ConfigMap and a Secret named
by content (so a change rolls the pods and old pods keep their own files), Services for
the subsets (`svc-stable`, `svc-canary`) that the gateway routes to and a
PodDisruptionBudget. The service's own Service (`svc`, its stable address) selects the
gateway and lives in `gateway`. `autoscale:` renders no HorizontalPodAutoscaler: mso's
own autoscaler (in the controller) sets the Deployment's replicas.

A service on an image mso built runs under mso's shim, its in-container supervisor
(`supervised`): the shim restarts the process with mso's backoff and turns the kubelet's
SIGTERM into `stop.signal`; `probes` says which probe is whose, and why.
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any

from mso.engines.images import supervision
from mso.engines.kubernetes import naming
from mso.engines.kubernetes.versions import ApiVersions
from mso.engines.kubernetes.workload import Workload
from mso.spec import users

PRE_STOP_SLEEP = 2  # seconds a stopping pod keeps serving while endpoints update
SHIM_STARTUP_WAIT = 1_000_000  # failures of the kubelet's startupProbe under the shim
Obj = dict[str, Any]


def pre_stop(python: bool) -> Obj:
    """Keep serving a little before SIGTERM. mso's own images (mso.engines.images) carry
    Python but no coreutils, so they sleep in Python; other images are expected to have
    `sleep`."""
    command = (["python3", "-c", f"import time; time.sleep({PRE_STOP_SLEEP})"] if python
               else ["sleep", str(PRE_STOP_SLEEP)])
    return {"preStop": {"exec": {"command": command}}}


def meta(name: str, namespace: str, app: str, extra: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None) -> Obj:
    out: Obj = {"name": name, "namespace": namespace,
                "labels": {**naming.owner_labels(app), **(extra or {})}}
    if annotations:
        out["annotations"] = annotations
    return out


def namespace_object(namespace: str, app: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": naming.owner_labels(app)}}


def _digest(parts: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for key, value in sorted(parts):
        h.update(key.encode() + b"\0" + hashlib.sha256(value).digest())
    return h.hexdigest()[:10]


def config_map(w: Workload, namespace: str) -> Obj | None:
    files = w.configs()
    if not files:
        return None
    data = {f"f{i}": base64.b64encode(content).decode() for i, (_, content) in enumerate(files)}
    name = f"{w.service}-config-{_digest(files)}"
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(name, namespace, w.app, {naming.SERVICE: w.service}),
            "binaryData": data}


def secret(w: Workload, namespace: str) -> Obj | None:
    if not w.secrets:
        return None
    raw = {k: v.encode("utf-8", "surrogateescape") for k, v in w.secrets.items()}
    name = f"{w.service}-secrets-{_digest(list(raw.items()))}"
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(name, namespace, w.app, {naming.SERVICE: w.service}),
            "data": {k: base64.b64encode(v).decode() for k, v in raw.items()}}


def _seconds(value: float) -> int:
    return max(1, math.ceil(float(value)))


def probe(spec: dict[str, Any] | None, ports: dict[str, tuple[str, int]]) -> Obj | None:
    if not spec:
        return None
    out: Obj = {"periodSeconds": _seconds(spec["period"]),
                "timeoutSeconds": _seconds(spec["timeout"]),
                "failureThreshold": int(spec["failure_threshold"]),
                "successThreshold": int(spec["success_threshold"])}
    if spec.get("initial_delay"):
        out["initialDelaySeconds"] = _seconds(spec["initial_delay"])
    if spec.get("http") is not None:
        port_name = spec.get("port") or next(n for n, (p, _) in ports.items() if p == "http")
        out["httpGet"] = {"path": spec["http"], "port": ports[port_name][1]}
    elif spec.get("tcp") is not None:
        out["tcpSocket"] = {"port": ports[spec["tcp"]][1]}
    else:
        out["exec"] = {"command": [str(a) for a in spec["exec"]]}
    return out


def _escape(value: str) -> str:
    # Kubernetes expands $(VAR) in env values; a user's literal "$(" must stay literal.
    return value.replace("$(", "$$(")


def environment(w: Workload) -> list[Obj]:
    env: list[Obj] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    for dep in w.dependencies:
        key = naming.env_key(dep.service)
        host = f"$({naming.service_host_var(dep.service)})"
        scheme = "http" if dep.protocol == "http" else "tcp"
        env += [{"name": f"{key}_URL", "value": f"{scheme}://{host}:{dep.port}"},
                {"name": f"{key}_HOST", "value": host},
                {"name": f"{key}_PORT", "value": str(dep.port)}]
    env += [{"name": k, "value": _escape(str(v))} for k, v in w.spec["env"].items()]
    secret_obj = secret(w, "-")
    for name, spec in (w.model.get("secrets") or {}).items():
        as_env = spec.get("as_env")
        if as_env and secret_obj is not None:
            var = as_env if isinstance(as_env, str) else name.upper().replace("-", "_").replace(".", "_")
            env.append({"name": var, "valueFrom": {"secretKeyRef": {
                "name": secret_obj["metadata"]["name"], "key": name}}})
    for i, (name, (_, port)) in enumerate(w.ports.items()):
        if i == 0:
            env.append({"name": "PORT", "value": str(port)})
        env.append({"name": f"PORT_{name.upper().replace('-', '_')}", "value": str(port)})
    env += [{"name": "MSO_APP", "value": w.app}, {"name": "MSO_SERVICE", "value": w.service},
            {"name": "MSO_REPLICA", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MSO_RELEASE", "value": str(w.release)},
            {"name": "MSO_SECRETS", "value": naming.SECRETS_DIR},
            {"name": "MSO_CONFIG_DIR", "value": naming.CONFIG_DIR},
            {"name": "MSO_DATA_DIR", "value": naming.DATA_DIR}]
    return env


def _resources(model: dict[str, Any]) -> Obj:
    res = model.get("resources") or {}
    limits: dict[str, str] = {}
    if res.get("cpu"):
        limits["cpu"] = f"{max(1, round(float(res['cpu']) * 1000))}m"
    if res.get("memory"):
        limits["memory"] = str(int(res["memory"]))
    return {"limits": limits, "requests": dict(limits)} if limits else {}


def _volumes(w: Workload, namespace: str) -> tuple[list[Obj], list[Obj]]:
    volumes: list[Obj] = [{"name": "data", "emptyDir": {}}]
    mounts: list[Obj] = [{"name": "data", "mountPath": naming.DATA_DIR}]
    cm = config_map(w, namespace)
    if cm is not None:
        items = [{"key": f"f{i}", "path": target} for i, (target, _) in enumerate(w.configs())]
        volumes.append({"name": "config", "configMap": {"name": cm["metadata"]["name"],
                                                          "items": items}})
        mounts.append({"name": "config", "mountPath": naming.CONFIG_DIR, "readOnly": True})
    sec = secret(w, namespace)
    if sec is not None:
        volumes.append({"name": "secrets", "secret": {"secretName": sec["metadata"]["name"],
                                                      "defaultMode": 0o400}})
        mounts.append({"name": "secrets", "mountPath": naming.SECRETS_DIR, "readOnly": True})
    return volumes, mounts


def _command(model: dict[str, Any]) -> list[str]:
    run = model.get("run")
    if run is None:
        return []  # an `image:`/`build:` service without `run:`: the image's own command
    if model.get("shell") or isinstance(run, str):
        return ["/bin/sh", "-c", run if isinstance(run, str) else " ".join(run)]
    return [str(a) for a in run]


def supervised(w: Workload) -> bool:
    """Whether the container runs under mso's shim: a service on an image mso built (its
    app folder is the working directory there), not a job (the Job restarts nothing)."""
    return w.kind == "service" and w.workdir is not None


def probes(w: Workload) -> dict[str, Obj]:
    """The kubelet's probes, by field name.

    Under the shim, the shim supervises the process (see mso/engines/images/shim.py):
    it runs the startup and liveness probes and restarts the process in the container
    with mso's backoff, as the local engine does; a livenessProbe of the kubelet would
    restart the whole container with its own delays instead, so there is none. The
    readinessProbe stays the kubelet's: readiness is what the pod's endpoints (kube-proxy,
    the gateway) follow, and the kubelet's thresholds mean what mso's do. The kubelet's
    startupProbe asks the shim whether the replica has been ready once (its startup
    probe passed, then its readiness, or its first port opened), every second until it
    has, and never fails the pod (restarting is the shim's): it holds the readiness
    probe as a startup probe does, and its failures (`not ready: crash loop: ...`) are
    how `mso ps` and a deploy learn of a process crashing in its container."""
    health = w.model.get("health") or {}
    out: Obj = {}
    if supervised(w):
        out["startupProbe"] = {"exec": {"command": supervision.STATUS_CHECK},
                               "periodSeconds": 1, "timeoutSeconds": 5,
                               "failureThreshold": SHIM_STARTUP_WAIT}
        built = probe(health.get("readiness"), w.ports)
        if built is not None:
            out["readinessProbe"] = built
        return out
    for role, key in (("startup", "startupProbe"), ("readiness", "readinessProbe"),
                      ("liveness", "livenessProbe")):
        built = probe(health.get(role), w.ports)
        if built is not None:
            out[key] = built
    return out


def container(w: Workload, namespace: str) -> Obj:
    model = w.model
    command = _command(model)
    if supervised(w):
        command = supervision.shim_command(model, command, forward=False)
    out: Obj = {"name": "app", "image": w.image, "imagePullPolicy": w.pull_policy,
                "env": environment(w), "volumeMounts": _volumes(w, namespace)[1]}
    if command:
        out["command"] = command
    if w.workdir:
        out["workingDir"] = w.workdir
    ports = []
    for name, (_, number) in w.ports.items():
        port: Obj = {"containerPort": number, "protocol": "TCP"}
        if naming.k8s_port_name(name):
            port["name"] = naming.k8s_port_name(name)
        ports.append(port)
    if ports:
        out["ports"] = ports
    out.update(probes(w))
    if _resources(model):
        out["resources"] = _resources(model)
    if w.kind == "service":
        # Endpoints (and kube-proxy) learn of a stopping pod asynchronously (k/k#43576):
        # keep serving a little while before the app sees SIGTERM.
        out["lifecycle"] = pre_stop(python=w.workdir is not None)  # workdir: mso's app image
    return out


def bridge_container(w: Workload) -> Obj | None:
    """A sidecar exposing ports the app binds on 127.0.0.1 only (see `bridge`)."""
    if w.bridge_image is None or not w.ports:
        return None
    args = [str(port) for _, port in w.ports.values()]
    return {"name": "mso-bridge", "image": w.bridge_image, "imagePullPolicy": "Never",
            "command": ["python3", "-m", "mso.engines.kubernetes.bridge", *args],
            "resources": {"limits": {"cpu": "200m", "memory": "64Mi"},
                          "requests": {"cpu": "10m", "memory": "32Mi"}}}


def pod_template(w: Workload, namespace: str) -> Obj:
    model = w.model
    stop = model.get("stop") or {}
    grace = int(math.ceil(float(stop.get("grace", 10.0)))) + PRE_STOP_SLEEP
    labels = {**naming.owner_labels(w.app), **naming.selector(w.app, w.service, w.subset),
              naming.RELEASE: str(w.release), naming.COMPONENT: w.kind}
    annotations = {naming.SPEC_HASH: w.spec_hash,
                   naming.STOP_SIGNAL: str(stop.get("signal", "SIGTERM"))}
    containers = [container(w, namespace)]
    sidecar = bridge_container(w)
    if sidecar is not None:
        containers.append(sidecar)
    spec: Obj = {"containers": containers, "volumes": _volumes(w, namespace)[0],
                 "terminationGracePeriodSeconds": grace,
                 "enableServiceLinks": True, "automountServiceAccountToken": False}
    if w.kind == "job":
        spec["restartPolicy"] = "Never"
    who = run_as(w)
    if who is not None:
        # The app's container runs as the user (the bridge sidecar keeps its own); the
        # volumes (secrets, data) are handed to its group.
        containers[0]["securityContext"] = who
        if "runAsGroup" in who:
            spec["securityContext"] = {"fsGroup": who["runAsGroup"]}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def run_as(w: Workload) -> Obj | None:
    """`user:` as a container securityContext: numbers only (a name is refused before a
    deploy, mso.spec.support); `dynamic` is a fixed uid (mso.spec.users)."""
    user = w.model.get("user")
    if not user:
        return None
    uid, gid = users.remote_ids(w.app, w.service, user)
    if not uid.isdigit():
        return None
    out: Obj = {"runAsUser": int(uid)}
    if gid is not None and gid.isdigit():
        out["runAsGroup"] = int(gid)
    return out


def _surge(value: Any) -> int | str:
    return value if isinstance(value, str) else int(value)


def deployment(w: Workload, namespace: str) -> Obj:
    rollout = w.model.get("rollout") or {}
    strategy: Obj
    if rollout.get("strategy") == "recreate":
        strategy = {"type": "Recreate"}
    else:
        strategy = {"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": _surge(rollout.get("max_surge", 1)),
            "maxUnavailable": _surge(rollout.get("max_unavailable", 0))}}
    name = naming.deployment_name(w.service, w.subset)
    labels = {**naming.selector(w.app, w.service, w.subset), naming.RELEASE: str(w.release)}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(name, namespace, w.app, labels, {naming.SPEC_HASH: w.spec_hash}),
            "spec": {"replicas": w.replicas, "revisionHistoryLimit": 5,
                     "progressDeadlineSeconds": _seconds(rollout.get("progress_deadline", 600)),
                     "selector": {"matchLabels": naming.selector(w.app, w.service, w.subset)},
                     "strategy": strategy, "template": pod_template(w, namespace)}}


def job(w: Workload, namespace: str) -> Obj:
    timeout = _seconds(w.model.get("timeout", 300))
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": meta(f"{w.service}-r{w.release}", namespace, w.app,
                             {naming.SERVICE: w.service, naming.RELEASE: str(w.release)},
                             {naming.SPEC_HASH: w.spec_hash}),
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": timeout,
                     "template": pod_template(w, namespace)}}


def subset_service(w: Workload, namespace: str, subset: str) -> Obj:
    """`svc-stable` / `svc-canary`: what the gateway routes each subset to."""
    ports = [{"name": naming.k8s_port_name(n) or f"p{num}", "port": num, "targetPort": num,
              "protocol": "TCP"} for n, (_, num) in w.ports.items()]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": meta(naming.subset_service_name(w.service, subset), namespace, w.app,
                             {naming.SERVICE: w.service, naming.SUBSET: subset}),
            "spec": {"type": "ClusterIP", "selector": naming.selector(w.app, w.service, subset),
                     "ports": ports}}


def disruption_budget(w: Workload, namespace: str, api: ApiVersions) -> Obj:
    return {"apiVersion": api.pdb, "kind": "PodDisruptionBudget",
            "metadata": meta(w.service, namespace, w.app, {naming.SERVICE: w.service}),
            "spec": {"maxUnavailable": 1,
                     "selector": {"matchLabels": naming.selector(w.app, w.service, "stable")}}}


def workload_objects(w: Workload, namespace: str, api: ApiVersions) -> list[Obj]:
    """Everything one workload needs, in apply order (config before the pods using it)."""
    out = [o for o in (config_map(w, namespace), secret(w, namespace)) if o is not None]
    if w.kind == "job":
        return [*out, job(w, namespace)]
    out += [subset_service(w, namespace, "stable"), subset_service(w, namespace, "canary"),
            deployment(w, namespace), disruption_budget(w, namespace, api)]
    return out
