"""`mso render --engine swarm`: the app as a Docker stack file (compose v3.8), for review.

It shows what `mso deploy --engine swarm` creates, built from the same spec functions:
the overlay network (attachable, dnsrr services), one service per mso service with its
replicas, environment, healthcheck, resources, restart policy and labels, secrets and
configs as files, and the gateway publishing the only port in host mode. Images that mso
builds are named by repository only (`mso/<app>-src`): their tags are content digests
known at deploy time. Canaries are not part of a stack: the controller creates them.
"""

from __future__ import annotations

from typing import Any

import yaml

from mso.releases.ports import port_map
from mso.releases.apply import release_spec
from mso.engines.images import uses_shim
from mso.engines.swarm import names
from mso.engines.swarm.gateway import COMMAND as GATEWAY_COMMAND, allocate_ports
from mso.engines.swarm.spec import AppContext, ReleaseInput, command, environment, healthcheck
from mso.spec.load import LoadedManifest

NS = 1_000_000_000


def _seconds(ns: int) -> str:
    return f"{ns / NS:g}s"


def _image(loaded: LoadedManifest, name: str) -> str:
    item = loaded.manifest.services[name]
    if item.image:
        return item.image
    return f"mso/{loaded.manifest.app}-{name}" if item.build else f"mso/{loaded.manifest.app}-src"


def _service(loaded: LoadedManifest, ctx: AppContext, name: str) -> dict[str, Any]:
    m = loaded.manifest
    svc = m.services[name]
    spec = release_spec(loaded, name, "service")
    deps = {}
    for dep in svc.depends_on:
        if dep in m.services:
            named = port_map(m.services[dep].model_dump(mode="json"))
            chosen = next((n for n, (p, _) in named.items() if p == "http"), next(iter(named), None))
            if chosen and f"{dep}/{chosen}" in ctx.stable_ports:
                deps[dep] = (named[chosen][0], ctx.stable_ports[f"{dep}/{chosen}"])
    rel = ReleaseInput(name, 1, loaded.spec_hash(name), spec, _image(loaded, name),
                       uses_shim(loaded, name), {}, deps)
    env = environment(ctx, rel, "main")
    env["MSO_RELEASE"] = "<release>"
    out: dict[str, Any] = {
        "image": rel.image, **({"command": command(rel)} if command(rel) else {}),
        "environment": env,
        "networks": {"mso": {"aliases": [name]}},
        "stop_signal": svc.stop.signal, "stop_grace_period": f"{svc.stop.grace:g}s",
        "deploy": {
            "mode": "replicated", "replicas": svc.replicas, "endpoint_mode": "dnsrr",
            "labels": {**names.base_labels(m.app), names.LABEL_SERVICE: name,
                       names.LABEL_SPEC_HASH: rel.spec_hash, names.LABEL_ROLE: "main"},
            "restart_policy": {"condition": {"always": "any", "on-failure": "on-failure",
                                             "never": "none"}[svc.restart],
                               "delay": f"{svc.backoff.initial:g}s"},
            "update_config": {"parallelism": 1, "order": "start-first",
                              "failure_action": "rollback"}}}
    if svc.resources.cpu or svc.resources.memory:
        limits: dict[str, Any] = {}
        if svc.resources.cpu:
            limits["cpus"] = str(svc.resources.cpu)
        if svc.resources.memory:
            limits["memory"] = str(int(svc.resources.memory))
        out["deploy"]["resources"] = {"limits": limits}
    check = healthcheck(spec["model"], rel.shim)
    if check:
        out["healthcheck"] = {"test": check["Test"], "interval": _seconds(check["Interval"]),
                              "timeout": _seconds(check["Timeout"]),
                              "retries": check["Retries"],
                              "start_period": _seconds(check["StartPeriod"])}
    if svc.secrets:
        out["secrets"] = [{"source": f"{name}_{key}", "target": key, "mode": 0o400}
                          for key in svc.secrets]
    if svc.config:
        out["configs"] = [{"source": f"{name}_config_{i}",
                           "target": f"{names.CONFIG_DIR}/{c.target}"}
                          for i, c in enumerate(svc.config)]
    return out


def render_stack(loaded: LoadedManifest) -> str:
    m = loaded.manifest
    keys = ["mso/metrics"] + [f"{n}/{p}" for n, s in sorted(m.services.items())
                              for p in s.ports]
    ctx = AppContext(m.app, names.network_name(m.app, m.engines.swarm.network),
                     str(loaded.base_dir), allocate_ports({}, keys, {m.gateway.port}))
    doc: dict[str, Any] = {"version": "3.8", "services": {}, "secrets": {}, "configs": {},
                           "networks": {"mso": {"name": ctx.network, "driver": "overlay",
                                                "attachable": True,
                                                "labels": names.base_labels(m.app)}}}
    for name in m.services:
        doc["services"][name] = _service(loaded, ctx, name)
        for key, secret in m.services[name].secrets.items():
            doc["secrets"][f"{name}_{key}"] = (
                {"file": str(loaded.base_dir / secret.file)} if secret.file
                else {"environment": secret.env})
        for i, cfg in enumerate(m.services[name].config):
            doc["configs"][f"{name}_config_{i}"] = {"file": str(loaded.base_dir / cfg.source)}
    doc["services"][names.GATEWAY] = {
        "image": "mso/gateway-proxy",
        "command": GATEWAY_COMMAND,
        "networks": {"mso": {"aliases": [names.GATEWAY]}},
        "ports": [{"target": m.gateway.port, "published": m.gateway.port,
                   "protocol": "tcp", "mode": "host"}],
        "deploy": {"replicas": 1, "endpoint_mode": "dnsrr",
                   "placement": {"constraints": ["node.role==manager"]},
                   "update_config": {"order": "stop-first"},
                   "labels": {**names.base_labels(m.app), names.LABEL_ROLE: "gateway"}}}
    for key in ("secrets", "configs"):
        if not doc[key]:
            del doc[key]
    header = (f"# Docker stack for {m.app}, rendered by `mso render --engine swarm`.\n"
              "# `mso deploy --engine swarm` creates the same objects through the Docker API,\n"
              "# and the gateway's routes, weights and canaries through its controller.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
