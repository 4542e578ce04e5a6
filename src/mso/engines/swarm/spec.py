"""Swarm service specs from mso releases (pure: no Docker calls).

`service_spec` turns one release of one service, in one role (the main service, the
second service that hosts a canary/preview/stand-in, or the gateway), into the JSON the
Docker API takes. Secrets and configs are referenced by name; the caller resolves their
IDs when it creates them. `deploy_hash` identifies the task template, so "does the running
service match?" is a comparison of labels, and label-only changes (the subset a second
service plays) never restart tasks.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from mso.releases.ports import port_map
from mso.engines.images import supervision
from mso.spec import users
from mso.engines.swarm import names
from mso.engines.swarm.names import Role

NS = 1_000_000_000
MIN_HEALTH_TIMEOUT = 5.0  # healthchecks need slack under load (verified on this machine)
MIN_START_PERIOD = 15.0
#: Docker API 1.44 (Engine 25) checks every START_INTERVAL during the start period until
#: the first check passes, instead of waiting a whole `period` for the first one.
START_INTERVAL = 0.25
START_INTERVAL_API = (1, 44)
#: Under the shim a task is not ready until its first ready (it stays `starting`), as
#: long as that takes: Docker never counts enough failed checks to replace it.
NEVER_UNHEALTHY = 2**31 - 1
#: How often a service without probes has its shim's status checked: how soon it is
#: ready on Docker before 25 (no start interval), at ~40 ms of CPU a check.
NO_PROBE_INTERVAL = 2.0


@dataclass(frozen=True)
class AppContext:
    """What every service spec of one app needs to know besides its release."""

    app: str
    network: str
    base_dir: str
    stable_ports: dict[str, int] = field(default_factory=dict)  # "svc/port" -> gateway port
    start_interval: bool = False  # the engine takes a healthcheck's StartInterval


@dataclass(frozen=True)
class ReleaseInput:
    """One release as the spec builder sees it (from the store)."""

    service: str
    number: int
    spec_hash: str
    spec: dict[str, Any]
    image: str
    shim: bool
    secrets: dict[str, bytes] = field(default_factory=dict)
    dependency_ports: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretRef:
    name: str
    target: str
    data: bytes
    config: bool  # a Swarm config rather than a secret


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    labels: dict[str, str]
    task_template: dict[str, Any]
    replicas: int
    endpoint_spec: dict[str, Any]
    update_config: dict[str, Any]
    refs: list[SecretRef]
    deploy_hash: str


def _ns(seconds: float) -> int:
    return int(seconds * NS)


def supports_start_interval(api_version: str) -> bool:
    """Whether a Docker API version takes a healthcheck's StartInterval."""
    try:
        major, minor = (int(part) for part in api_version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= START_INTERVAL_API


def healthcheck(model: dict[str, Any], shim: bool,
                start_interval: bool = False) -> dict[str, Any] | None:
    """The task's Docker healthcheck. `start_interval`: the engine checks every
    START_INTERVAL until the first check passes (within the start period), so a task is
    ready as soon as its app is.

    Under the shim (`shim`), the shim runs the probes and restarts the process itself;
    the check only reads its status file: it passes once the replica has been ready in
    the container (Swarm then counts the task as running), keeps passing while the shim
    answers, and says `ready` or `not ready: why`, which the controller reads to take
    the task out of the gateway's rotation (observe.not_ready). Docker never marks it
    unhealthy (NEVER_UNHEALTHY retries): restarting the process is the shim's job.

    An image mso did not build has no shim: its readiness probe (else liveness) becomes
    the check, an `exec` probe only, with slack."""
    if shim:
        return _status_check(model, start_interval)
    health = model.get("health") or {}
    probe = health.get("readiness") or health.get("liveness")
    if not probe or not probe.get("exec"):
        return None  # an image mso did not build may have no tool to probe with
    startup = health.get("startup") or {}
    start = float(startup.get("period", 0)) * int(startup.get("failure_threshold", 0))
    check = {"Test": ["CMD", *probe["exec"]], "Interval": _ns(float(probe["period"])),
             "Timeout": _ns(max(float(probe["timeout"]), MIN_HEALTH_TIMEOUT)),
             "Retries": int(probe["failure_threshold"]),
             "StartPeriod": _ns(max(start, MIN_START_PERIOD))}
    if start_interval:
        check["StartInterval"] = _ns(min(START_INTERVAL, float(probe["period"])))
    return check


def _status_check(model: dict[str, Any], start_interval: bool) -> dict[str, Any]:
    found = supervision.probes(model)
    # Without probes the shim's readiness is the first port accepting connections (as
    # on the local engine), and the check is still how a crash loop is seen.
    period = float((found.get("readiness") or min(
        found.values(), key=lambda p: float(p["period"])))["period"]) if found \
        else NO_PROBE_INTERVAL
    # The start period only tells `mso ps` when a task that is not ready yet has a problem
    # (diagnose.allowance): a `startup` probe's budget.
    startup = found.get("startup") or {}
    start = float(startup.get("period", 0)) * int(startup.get("failure_threshold", 0)) \
        + float(startup.get("initial_delay") or 0)
    check = {"Test": ["CMD", *supervision.STATUS_CHECK], "Interval": _ns(period),
             "Timeout": _ns(MIN_HEALTH_TIMEOUT), "Retries": NEVER_UNHEALTHY,
             "StartPeriod": _ns(max(start, MIN_START_PERIOD))}
    if start_interval:
        check["StartInterval"] = _ns(min(START_INTERVAL, period))
    return check


def environment(ctx: AppContext, rel: ReleaseInput, role: Role) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1"}
    for dep, (proto, port) in sorted(rel.dependency_ports.items()):
        key = dep.upper().replace("-", "_").replace(".", "_")
        scheme = "http" if proto == "http" else "tcp"
        env.update({f"{key}_URL": f"{scheme}://{names.GATEWAY}:{port}",
                    f"{key}_HOST": names.GATEWAY, f"{key}_PORT": str(port)})
    env.update(rel.spec.get("env") or {})
    first = True
    for name, (_, port) in port_map(rel.spec["model"]).items():
        if first:
            env["PORT"], first = str(port), False
        env[f"PORT_{name.upper().replace('-', '_')}"] = str(port)
    env.update({"MSO_APP": ctx.app, "MSO_SERVICE": rel.service,
                "MSO_REPLICA": names.alias(rel.service, role) + "-{{.Task.Slot}}",
                "MSO_RELEASE": str(rel.number), "MSO_SECRETS": names.SECRETS_DIR,
                "MSO_CONFIG_DIR": names.CONFIG_DIR, "MSO_DATA_DIR": names.DATA_DIR})
    return env


def command(rel: ReleaseInput) -> list[str]:
    model = rel.spec["model"]
    run = model.get("run")
    if run is None:
        return []  # an `image:`/`build:` service without `run:`: the image's own command
    argv = ["/bin/sh", "-c", run] if model.get("shell") else list(run)
    if not rel.shim:
        return argv
    pairs = []
    for name, secret in sorted((model.get("secrets") or {}).items()):
        as_env = secret.get("as_env")
        if as_env:
            var = as_env if isinstance(as_env, str) else name.upper().replace("-", "_").replace(".", "_")
            pairs.append(f"{var}={name}")
    return supervision.shim_command(model, argv, secret_env=pairs)


def _workdir(ctx: AppContext, rel: ReleaseInput) -> str | None:
    if not rel.shim:
        return None
    cwd = PurePosixPath(rel.spec.get("cwd") or ctx.base_dir)
    try:
        inner = cwd.relative_to(PurePosixPath(ctx.base_dir))
    except ValueError:
        inner = PurePosixPath(".")
    return str(PurePosixPath(names.APP_DIR) / inner)


def _refs(ctx: AppContext, rel: ReleaseInput) -> list[SecretRef]:
    refs = [SecretRef(names.secret_name(ctx.app, rel.service, key, value), key, value, False)
            for key, value in sorted(rel.secrets.items())]
    for item in rel.spec.get("configs") or []:
        data = base64.b64decode(item["content_b64"])
        refs.append(SecretRef(names.config_name(ctx.app, rel.service, item["target"], data),
                              f"{names.CONFIG_DIR}/{item['target']}", data, True))
    return refs


def _resources(model: dict[str, Any]) -> dict[str, Any]:
    res = model.get("resources") or {}
    limits: dict[str, int] = {}
    if res.get("cpu"):
        limits["NanoCPUs"] = int(float(res["cpu"]) * NS)
    if res.get("memory"):
        limits["MemoryBytes"] = int(res["memory"])
    return {"Limits": limits} if limits else {}


def _restart(model: dict[str, Any]) -> dict[str, Any]:
    condition = {"always": "any", "on-failure": "on-failure", "never": "none"}[
        model.get("restart", "always")]
    backoff = model.get("backoff") or {}
    return {"Condition": condition, "Delay": _ns(float(backoff.get("initial", 0.5))),
            "MaxAttempts": 0}


def container_spec(ctx: AppContext, rel: ReleaseInput, role: Role) -> dict[str, Any]:
    model = rel.spec["model"]
    stop = model.get("stop") or {}
    spec: dict[str, Any] = {
        "Image": rel.image,
        "Command": command(rel),
        "Env": [f"{k}={v}" for k, v in environment(ctx, rel, role).items()],
        "Labels": {**names.base_labels(ctx.app), names.LABEL_SERVICE: rel.service,
                   names.LABEL_RELEASE: str(rel.number)},
        "StopSignal": stop.get("signal", "SIGTERM"),
        "StopGracePeriod": _ns(float(stop.get("grace", 10.0))),
        "Init": False,
    }
    workdir = _workdir(ctx, rel)
    if workdir:
        spec["Dir"] = workdir
    if model.get("user"):
        # The container (the shim, and the process it starts) runs as the user; Docker
        # resolves a name in the image, `dynamic` is a fixed uid (mso.spec.users).
        user, group = users.remote_ids(ctx.app, rel.service, model["user"])
        spec["User"] = user if group is None else f"{user}:{group}"
    check = healthcheck(model, rel.shim, ctx.start_interval) if role != "job" else None
    if check:
        spec["Healthcheck"] = check
    return spec


def service_spec(ctx: AppContext, rel: ReleaseInput, role: Role, replicas: int,
                 subset: str) -> ServiceSpec:
    """The whole Swarm service for `rel` in `role`; secrets/configs carry names, not IDs."""
    refs = _refs(ctx, rel)
    template = {
        "ContainerSpec": container_spec(ctx, rel, role),
        "Resources": _resources(rel.spec["model"]),
        "RestartPolicy": _restart(rel.spec["model"]),
        "Networks": [{"Target": ctx.network, "Aliases": [names.alias(rel.service, role)]}],
    }
    deploy_hash = digest({"template": template, "refs": [(r.name, r.target) for r in refs]})
    labels = {**names.base_labels(ctx.app), names.LABEL_SERVICE: rel.service,
              names.LABEL_ROLE: role, names.LABEL_SUBSET: subset,
              names.LABEL_RELEASE: str(rel.number), names.LABEL_SPEC_HASH: rel.spec_hash,
              names.LABEL_DEPLOY_HASH: deploy_hash}
    update = {"Parallelism": 1, "Order": "start-first", "FailureAction": "rollback",
              "Monitor": _ns(5.0), "Delay": 0}
    if (rel.spec["model"].get("rollout") or {}).get("strategy") == "recreate":
        # Every old task stops before any new one starts (plan.py updates a recreate
        # service in place, without a stand-in).
        update.update(Parallelism=0, Order="stop-first")
    return ServiceSpec(names.service_name(ctx.app, rel.service, role), labels, template,
                       replicas, {"Mode": "dnsrr"}, update, refs, deploy_hash)


def with_ids(template: dict[str, Any], refs: list[SecretRef],
             ids: dict[str, str]) -> dict[str, Any]:
    """The task template with the secret/config references the API needs."""
    out: dict[str, Any] = json.loads(json.dumps(template))
    secrets: list[dict[str, Any]] = []
    configs: list[dict[str, Any]] = []
    uid, gid, secret_mode = _file_owner(str(out["ContainerSpec"].get("User") or ""))
    for ref in refs:
        entry = {"File": {"Name": ref.target, "UID": uid, "GID": gid,
                          "Mode": 0o444 if ref.config else secret_mode},
                 ("ConfigID" if ref.config else "SecretID"): ids[ref.name],
                 ("ConfigName" if ref.config else "SecretName"): ref.name}
        (configs if ref.config else secrets).append(entry)
    if secrets:
        out["ContainerSpec"]["Secrets"] = secrets
    if configs:
        out["ContainerSpec"]["Configs"] = configs
    return out


def _file_owner(user: str) -> tuple[str, str, int]:
    """Owner and mode of the secret files: the container's user when it is a number
    (0400, its own); a name is resolved only inside the image, so then 0444."""
    if not user:
        return "0", "0", 0o400
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (not gid or gid.isdigit()):
        return uid, gid or uid, 0o400
    return "0", "0", 0o444


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
