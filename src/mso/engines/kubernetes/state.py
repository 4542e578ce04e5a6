"""The Kubernetes engine's local state: `.mso/kubernetes.db` beside the manifest.

The store is mso's ordinary SQLite store (releases, desired state, rollouts, events);
the engine keeps its own settings in the store's key/value table: the cluster target,
the app's gateway and routes, the image of each release and the gateway control token.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mso.controllers.routing import RouteLimits, RouteView
from mso.store.db import Store

DB_NAME = "kubernetes.db"


@dataclass(frozen=True)
class AppSettings:
    app: str
    namespace: str
    kubeconfig: str | None
    context: str | None
    gateway_port: int
    routes: list[dict[str, Any]]
    base_dir: str
    runtime_image: str
    version: str
    autoscale: dict[str, dict[str, Any]] = field(default_factory=dict)  # service -> spec
    #: `gateway.tls` (mso.controllers.routing.tls_config): certificate paths on this machine.
    tls: dict[str, Any] | None = None
    max_connections_per_client: int = 0  # gateway; 0: no limit

    def route_views(self) -> list[RouteView]:
        return [RouteView(r["path"], r["host"], r["service"], r["port"],
                          RouteLimits(**r.get("limits", {}))) for r in self.routes]


def state_dir(base_dir: Path) -> Path:
    return base_dir / ".mso"


def open_store(base_dir: Path) -> Store:
    folder = state_dir(base_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return Store(folder / DB_NAME)


def existing_store(base_dir: Path) -> Store | None:
    path = state_dir(base_dir) / DB_NAME
    return Store(path) if path.exists() else None


def save_settings(store: Store, settings: AppSettings) -> None:
    store.set_meta("k8s_settings", json.dumps(asdict(settings), sort_keys=True))


def load_settings(store: Store) -> AppSettings | None:
    raw = store.get_meta("k8s_settings")
    return None if raw is None else AppSettings(**json.loads(raw))


def set_image(store: Store, service: str, release: int, image: str) -> None:
    store.set_meta(f"k8s_image:{service}:{release}", image)


def image_of(store: Store, service: str, release: int) -> str | None:
    return store.get_meta(f"k8s_image:{service}:{release}")


HOLDING_KEY = "k8s_holding"


def holding(store: Store) -> set[str]:
    """Services a deploy holds back (no Deployment applied yet): their first start waits
    for what they depend on (`depends_on`, a job's `before:`). Kept in the store so the
    background controller's reconcile holds them too."""
    raw = store.get_meta(HOLDING_KEY)
    return set(json.loads(raw)) if raw else set()


def set_holding(store: Store, names: set[str]) -> None:
    if names:
        store.set_meta(HOLDING_KEY, json.dumps(sorted(names)))
    else:
        store.delete_meta(HOLDING_KEY)


def control_token(store: Store) -> str:
    token = store.get_meta("k8s_gateway_token")
    if token is None:
        token = secrets.token_urlsafe(32)
        store.set_meta("k8s_gateway_token", token)
    return token
