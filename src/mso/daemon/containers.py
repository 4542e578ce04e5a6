"""The daemon's side of container replicas: their images, and each replica's container.

A service with `image:` or `build:` and no `run:` runs as a container (see
mso.engines.local.container). Its image is `image:` as written, or the content-addressed
tag of its `build:` (mso.engines.images: an unchanged context is not built again). A
rebuilt image with an unchanged manifest is a new release (mso.releases.images), recorded
per release in the store's meta, so a rollback brings back the image it ran.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mso.engines.local import container as containers
from mso.errors import Conflict
from mso.engines.local.container import ContainerSpec, Mount
from mso.releases import images as release_images
from mso.releases.apply import AppliedChange
from mso.spec.load import LoadedManifest
from mso.spec.users import remote_ids
from mso.store.db import Store

IMAGES_KEY = "local.images"  #: {service: {release: image}}
BUILT_KEY = "local.built"  #: service -> the image the last deploy built for it
SOURCES_KEY = "local.sources"  #: {service: {release: src digest}} of `run:` services
SOURCES_BUILT_KEY = "local.sources.built"  #: service -> the last deploy's src digest


class CodeNotOnDisk(Conflict):
    """A rollback of a `run:` service to code that is no longer on disk."""


def is_container(model: dict[str, Any]) -> bool:
    """Whether a release's model runs as a container on this engine."""
    return not model.get("run") and bool(model.get("image") or model.get("build"))


def build_images(loaded: LoadedManifest) -> dict[str, str]:
    """The image of every container service and job, built when it has a `build:`
    (blocking: call it off the event loop). Raises mso.engines.images.ImageError."""
    out: dict[str, str] = {}
    m = loaded.manifest
    for name, service in [*m.services.items(), *m.jobs.items()]:
        if service.run is None and service.build is not None:
            from mso.engines import images  # the Docker SDK: only when an app builds one

            out[name] = images.build_service_image(loaded, name)
        elif service.run is None and service.image:
            out[name] = _local_id(service.image) or service.image
    return out


def _local_id(image: str) -> str | None:
    """The id of `image` when this machine has it: a release then names the very image it
    ran (a re-tagged `image:` is a new release, and a rollback brings the old one back);
    None when it is missing (Docker pulls it by name at the first start)."""
    try:
        out = subprocess.run([containers.runtime(), "image", "inspect", "--format", "{{.Id}}",
                              image], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = out.stdout.strip()
    return found if out.returncode == 0 and found.startswith("sha256:") else None


def _recorded(store: Store) -> dict[str, dict[str, str]]:
    raw = store.get_meta(IMAGES_KEY)
    return json.loads(raw) if raw else {}


def image_of(store: Store, service: str, release: int) -> str | None:
    return _recorded(store).get(service, {}).get(str(release))


def record_builds(store: Store, changes: list[AppliedChange], built: dict[str, str],
                  author: str | None = None) -> list[AppliedChange]:
    """A new image is a new release (rolled out with the service's strategy)."""
    def record(service: str, release: int) -> None:
        table = _recorded(store)
        table.setdefault(service, {})[str(release)] = built[service]
        store.set_meta(IMAGES_KEY, json.dumps(table, sort_keys=True))

    return release_images.record_builds(
        store, changes, built, lambda s, r: image_of(store, s, r), record, BUILT_KEY, author)


def record_sources(store: Store, changes: list[AppliedChange], digests: dict[str, str],
                   author: str | None = None) -> list[AppliedChange]:
    """New code of a `run:` service is a new release, as a new image is for a container
    (mso.releases.sources): `digests` from `sources.source_digests`."""
    def recorded() -> dict[str, dict[str, str]]:
        raw = store.get_meta(SOURCES_KEY)
        return json.loads(raw) if raw else {}

    def record(service: str, release: int) -> None:
        table = recorded()
        table.setdefault(service, {})[str(release)] = digests[service]
        store.set_meta(SOURCES_KEY, json.dumps(table, sort_keys=True))

    return release_images.record_builds(
        store, changes, digests, lambda s, r: recorded().get(s, {}).get(str(r)), record,
        SOURCES_BUILT_KEY, author, what="new code")


def _sources(store: Store) -> dict[str, dict[str, str]]:
    raw = store.get_meta(SOURCES_KEY)
    return json.loads(raw) if raw else {}


def code_identity(store: Store, service: str) -> Callable[[int], object]:
    """What code a release of `service` ran (its image, its source digest), for
    `mso.releases.rollback`: new code with one manifest is another release."""
    images, sources = _recorded(store).get(service, {}), _sources(store).get(service, {})
    return lambda number: (images.get(str(number)), sources.get(str(number)))


def check_source_rollback(store: Store, service: str, target: int) -> None:
    """Refuse to roll a `run:` service back to code other than the files on disk (as of
    the last `mso up`/`deploy`): its replicas would run the files, not the release."""
    ran = _sources(store).get(service, {}).get(str(target))
    now = json.loads(store.get_meta(SOURCES_BUILT_KEY) or "{}").get(service)
    if ran is not None and now is not None and ran != now:
        raise CodeNotOnDisk(
            f"release {target} of {service} ran code {ran}, and the files on disk are "
            f"{now}: a `run:` service runs the files, so a rollback cannot bring that code "
            "back; restore the files (e.g. `git checkout`), then `mso deploy` (a new release "
            "of that code), or roll back to a release of the code on disk with --to")


def record_rollback(store: Store, service: str, release: int, target: int) -> None:
    """The rollback's release runs its target's image (and code): record them for it."""
    for key in (IMAGES_KEY, SOURCES_KEY):
        raw = store.get_meta(key)
        table: dict[str, dict[str, str]] = json.loads(raw) if raw else {}
        code = table.get(service, {}).get(str(target))
        if code is not None:
            table[service][str(release)] = code
            store.set_meta(key, json.dumps(table, sort_keys=True))


def gateway_of(ipam: str) -> str | None:
    """The IPv4 gateway in `docker network inspect`'s "GATEWAY,SUBNET ..." pairs. Recent
    dockerd versions leave the default bridge's `Gateway` out of its IPAM config (only the
    subnet is written); the bridge then has Docker's default, the subnet's first host
    address (172.17.0.1 for 172.17.0.0/16)."""
    for pair in ipam.split():
        gateway, _, subnet = pair.partition(",")
        if gateway.count(".") == 3:
            return gateway
        try:
            network = ipaddress.ip_network(subnet)
        except ValueError:
            continue
        if network.version == 4 and network.num_addresses > 2:
            return str(network.network_address + 1)
    return None


@functools.lru_cache(maxsize=1)
def _bridge_gateway() -> str | None:
    try:
        binary = containers.runtime()
        out = subprocess.run([binary, "network", "inspect", "bridge", "--format",
                              "{{range .IPAM.Config}}{{.Gateway}},{{.Subnet}} {{end}}"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return gateway_of(out.stdout) if out.returncode == 0 else None


def bridge_address(store: Store) -> str | None:
    """The host's address on Docker's default bridge, when the app runs containers: the
    proxy also listens there on each stable port, and a container's `<DEP>_URL` points
    there (inside a container, 127.0.0.1 is the container itself)."""
    if store.get_meta(IMAGES_KEY) is None:
        return None
    return _bridge_gateway()


def container_spec(*, store: Store, model: dict[str, Any], instance: str, app: str,
                   record: Any, env_names: list[str], secrets_dir: Path, config_dir: Path,
                   data_dir: Path, stop_signal: int, stop_grace: float) -> ContainerSpec:
    """The container of one replica (`record`: a ReplicaRecord)."""
    from mso.releases.ports import port_map

    image = image_of(store, record.service, record.release) or model.get("image")
    if not image:
        raise LookupError(f"no image recorded for release {record.release} of {record.service}")
    declared = {name: number for name, (_, number) in port_map(model).items()}
    resources = model.get("resources") or {}
    return ContainerSpec(
        name=containers.container_name(instance, record.id), image=str(image),
        labels={f"{containers.LABEL}.instance": instance, f"{containers.LABEL}.app": app,
                f"{containers.LABEL}.service": record.service,
                f"{containers.LABEL}.replica": record.id,
                f"{containers.LABEL}.release": str(record.release),
                f"{containers.LABEL}.spec-hash": record.spec_hash},
        publish={record.ports[n]: declared[n] for n in record.ports if n in declared},
        env_names=tuple(sorted(env_names)),
        mounts=(Mount(str(secrets_dir), containers.SECRETS_DIR),
                Mount(str(config_dir), containers.CONFIG_DIR),
                Mount(str(data_dir), containers.DATA_DIR, read_only=False)),
        stop_signal=stop_signal, stop_grace=stop_grace,
        cpu=resources.get("cpu"), memory=resources.get("memory"),
        user=":".join(i for i in remote_ids(app, record.service, model["user"]) if i)
        if model.get("user") else None)
