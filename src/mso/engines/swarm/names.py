"""Names and labels of everything mso creates on a Swarm (pure).

Swarm service names are global to the swarm, so every object carries the app's name as a
prefix, the way `docker stack deploy` does (`shop_web`, `shop_web-canary`,
`shop_mso-gateway`). Inside the app's overlay network services are reached by short
aliases (`web`, `mso-gateway`). Every object carries `mso.app` and `mso.managed`, which is
how `mso down` finds what to remove and leaves everything else alone.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Role = Literal["main", "second", "gateway", "job"]

GATEWAY = "mso-gateway"
LABEL_APP = "mso.app"
LABEL_MANAGED = "mso.managed"
LABEL_SERVICE = "mso.service"
LABEL_RELEASE = "mso.release"
LABEL_SPEC_HASH = "mso.spec-hash"
LABEL_DEPLOY_HASH = "mso.deploy-hash"
LABEL_ROLE = "mso.role"
LABEL_SUBSET = "mso.subset"
LABEL_RUN = "mso.run"  # a job's run of its release (state.JOBS_KEY)
LABEL_STACK = "com.docker.stack.namespace"

CONFIG_DIR = "/run/mso/config"
SECRETS_DIR = "/run/secrets"
DATA_DIR = "/var/lib/mso/data"
APP_DIR = "/app"


def service_name(app: str, service: str, role: Role) -> str:
    """The Swarm service's name: `<app>_<svc>`, `<app>_<svc>-canary`, `<app>_mso-gateway`."""
    if role == "gateway":
        return f"{app}_{GATEWAY}"
    return f"{app}_{service}-canary" if role == "second" else f"{app}_{service}"


def alias(service: str, role: Role) -> str:
    """The service's DNS name inside the app's network."""
    if role == "gateway":
        return GATEWAY
    return f"{service}-canary" if role == "second" else service


def network_name(app: str, configured: str | None) -> str:
    return configured or f"{app}_mso"


def base_labels(app: str) -> dict[str, str]:
    return {LABEL_APP: app, LABEL_MANAGED: "true", LABEL_STACK: app}


def app_filter(app: str) -> dict[str, list[str]]:
    """Docker API filter selecting exactly the objects mso made for `app`."""
    return {"label": [f"{LABEL_APP}={app}", f"{LABEL_MANAGED}=true"]}


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def secret_name(app: str, service: str, secret: str, value: bytes) -> str:
    """Swarm secrets are immutable: a new value is a new secret, named by its digest."""
    return f"{app}_{service}_{secret}_{_short(value)}"[:64]


def config_name(app: str, service: str, target: str, content: bytes) -> str:
    return f"{app}_{service}_{_short(target.encode())}_{_short(content)}"[:64]


def replica_name(service: str, role: Role, slot: int | None, task_id: str) -> str:
    base = alias(service, role)
    return f"{base}-{slot}" if slot else f"{base}-{task_id[:6]}"


def endpoint_id(service: str, role: Role, slot: int | None, task_id: str) -> str:
    """Unique per task: during an update, old and new tasks share a slot."""
    return f"{replica_name(service, role, slot, task_id)}.{task_id[:5]}"
