"""Object names, ownership labels and annotations shared by render, deploy and the controller."""

from __future__ import annotations

import re
import zlib

MANAGED_BY = "app.kubernetes.io/managed-by"
OWNER = "mso"
APP = "mso.dev/app"
SERVICE = "mso.dev/service"
SUBSET = "mso.dev/subset"
RELEASE = "mso.dev/release"
COMPONENT = "mso.dev/component"
SPEC_HASH = "mso.dev/spec-hash"
STOP_SIGNAL = "mso.dev/stop-signal"

GATEWAY = "mso-gateway"
GATEWAY_CONTROL_PORT = 8078
GATEWAY_METRICS_PORT = 8079
CONFIG_DIR = "/etc/mso/config"
SECRETS_DIR = "/etc/mso/secrets"
DATA_DIR = "/var/lib/mso/data"
APP_DIR = "/app"


def is_mso_image(image: str) -> bool:
    """Built on this machine by mso.engines.images: never pulled."""
    return image.startswith("mso/")


def is_app_image(image: str, app: str) -> bool:
    """The app's folder at /app on mso's base image (`run:` services without `build:`)."""
    return image.startswith(f"mso/{app}-src:")


def owner_labels(app: str) -> dict[str, str]:
    return {MANAGED_BY: OWNER, APP: app}


def selector(app: str, service: str, subset: str) -> dict[str, str]:
    return {APP: app, SERVICE: service, SUBSET: subset}


def gateway_selector(app: str) -> dict[str, str]:
    return {APP: app, COMPONENT: "gateway"}


def deployment_name(service: str, subset: str) -> str:
    return service if subset == "stable" else f"{service}-{subset}"


def subset_service_name(service: str, subset: str) -> str:
    return f"{service}-{subset}"


def env_key(service: str) -> str:
    """The service-name part of variable names: `-` becomes `_`, upper-cased."""
    return service.upper().replace("-", "_")


def service_host_var(k8s_service: str) -> str:
    """The variable Kubernetes injects for a Service's ClusterIP."""
    return f"{env_key(k8s_service)}_SERVICE_HOST"


def is_owned(labels: dict[str, str] | None, app: str) -> bool:
    labels = labels or {}
    return labels.get(MANAGED_BY) == OWNER and labels.get(APP) == app


def k8s_port_name(name: str) -> str | None:
    """A port name Kubernetes accepts (IANA_SVC_NAME), or None if `name` cannot be one."""
    candidate = name.lower().replace("_", "-")
    if (len(candidate) <= 15 and re.match(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", candidate)
            and "--" not in candidate and re.search("[a-z]", candidate)):
        return candidate
    return None


def listener_ports(keys: list[str], base: int = 20000, span: int = 20000,
                   reserved: set[int] | None = None) -> dict[str, int]:
    """Stable gateway listener ports for `service/port` keys: hashed, collisions probed.

    Hashing keeps a service's port unchanged when other services come and go, so the
    gateway keeps that listener's socket and connections across deploys.
    """
    taken: set[int] = set(reserved or ())
    out: dict[str, int] = {}
    for key in sorted(keys):
        port = base + zlib.crc32(key.encode()) % span
        while port in taken or port in (GATEWAY_CONTROL_PORT, GATEWAY_METRICS_PORT):
            port = base + (port - base + 1) % span
        taken.add(port)
        out[key] = port
    return out
