"""The whole app as Kubernetes objects, and as YAML (what `mso render` prints or writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mso.controllers.routing import RouteLimits, RouteView, tls_config
from mso.engines.kubernetes import gateway, naming, render
from mso.engines.kubernetes.render import Obj
from mso.engines.kubernetes.versions import ApiVersions
from mso.engines.kubernetes.workload import Workload, from_manifest
from mso.spec.load import LoadedManifest

_ORDER = {"Namespace": 0, "ConfigMap": 1, "Secret": 1, "Service": 2, "Job": 3,
          "Deployment": 4, "PodDisruptionBudget": 5, "HorizontalPodAutoscaler": 6}


@dataclass(frozen=True)
class Images:
    runtime: str
    app: str
    builds: dict[str, str] = field(default_factory=dict)  # service -> image of its build:


def namespace_of(loaded: LoadedManifest, override: str | None = None) -> str:
    return override or loaded.manifest.engines.kubernetes.namespace or loaded.manifest.app


def routes(loaded: LoadedManifest) -> list[RouteView]:
    m = loaded.manifest
    out = []
    for r in m.routes:
        port = r.port or m.services[r.service].first_http_port()
        if port is not None:
            out.append(RouteView(r.path, r.host, r.service, port,
                                 RouteLimits.of(r.model_dump(mode="json"))))
    return out


def workloads(loaded: LoadedManifest, images: Images, releases: dict[str, int]) -> list[Workload]:
    m = loaded.manifest
    out = []
    for name in [*m.services, *m.jobs]:
        w = from_manifest(loaded, name, releases.get(name, 1), images.app, images.runtime)
        if name in images.builds:
            w = Workload(**{**w.__dict__, "image": images.builds[name], "pull_policy": "Never",
                            "workdir": None})
        out.append(w)
    return out


def gateway_spec(loaded: LoadedManifest, items: list[Workload], namespace: str,
                 images: Images) -> gateway.GatewaySpec:
    return gateway.spec_for(items, loaded.manifest.app, namespace, loaded.manifest.gateway.port,
                            routes(loaded), images.runtime,
                            loaded.manifest.gateway.max_connections_per_client or 0,
                            tls_config(loaded))


def gateway_table_json(spec: gateway.GatewaySpec) -> str:
    import json
    built = dict(gateway.table(spec, gateway.template_hosts(spec), {}), version=1)
    return json.dumps(built, indent=2, sort_keys=True)


def manifest_objects(loaded: LoadedManifest, api: ApiVersions, images: Images,
                     releases: dict[str, int], namespace: str) -> list[Obj]:
    items = workloads(loaded, images, releases)
    spec = gateway_spec(loaded, items, namespace, images)
    objects: list[Obj] = [render.namespace_object(namespace, loaded.manifest.app)]
    for w in items:
        objects += render.workload_objects(w, namespace, api)
    objects += [gateway.stable_address_service(spec, s) for s in sorted(spec.services)]
    objects += gateway.gateway_objects(spec, gateway_table_json(spec))
    return sort_objects(objects)


def sort_objects(objects: list[Obj]) -> list[Obj]:
    return sorted(objects, key=lambda o: _ORDER.get(o["kind"], 9))


def to_yaml(objects: list[Obj]) -> str:
    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False, default_flow_style=False)
                   for o in objects)


def write_files(objects: list[Obj], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, obj in enumerate(objects):
        path = out_dir / f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))
        written.append(path)
    return written


def owned(obj: Obj, app: str) -> bool:
    return naming.is_owned(obj.get("metadata", {}).get("labels"), app)
