"""Containers as replicas: the Docker (or Podman) CLI behind a narrow interface.

A service with `image:` or `build:` and no `run:` runs on the embedded engine as one
container per replica, supervised exactly like a process. The trick is that the replica's
process *is* the container's client: ``docker run --rm`` in the foreground, attached to the
container's stdout and stderr (written to the replica's log files like any process's
output), proxying the stop signal to the container (``--sig-proxy``, the default when
attached) and exiting with the container's status. So spawning, re-adoption after a
``kill -9`` of the daemon (the client lives in its own session and keeps running), exits,
backoff, the stop signal and grace, and log collection all go through the supervisor's
ordinary process path. What the client cannot do is survive its own SIGKILL with the
container: :func:`remove` (``docker rm -f`` by name) runs after every exit and stop, and
:func:`remove_labelled` sweeps by label on ``mso down`` and after a crash.

Values never appear on the command line: environment variables are passed by name
(``-e NAME``: the client reads the value from its own environment), secrets are a
read-only bind mount of the replica's 0400 files at ``/run/secrets``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

from mso.errors import Unavailable

log = logging.getLogger(__name__)

#: Where a container finds what mso delivers (the same places as on Swarm).
SECRETS_DIR = "/run/secrets"
CONFIG_DIR = "/run/mso/config"
DATA_DIR = "/var/lib/mso/data"

LABEL = "io.mso"  #: label prefix: io.mso.instance, io.mso.app, io.mso.replica...
RUNTIMES = ("docker", "podman")


class RuntimeMissing(Unavailable, OSError):
    """Neither docker nor podman is on PATH (an OSError too: spawning a replica fails
    with it as with any missing program)."""


def runtime(path: str | None = None) -> str:
    """The container CLI: docker, else podman (the first one on `path`)."""
    for name in RUNTIMES:
        found = shutil.which(name, path=path)
        if found:
            return found
    raise RuntimeMissing("a service with `image:`/`build:` and no `run:` runs as a container, "
                         "and neither docker nor podman is on PATH")


def container_name(instance: str, replica: str) -> str:
    """A name unique to this mso instance and replica: a second `docker run` of the same
    replica cannot create a duplicate (the name is taken until the first is removed)."""
    return "mso-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{instance}-{replica}")


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """One replica's container."""

    name: str
    image: str
    labels: dict[str, str]
    publish: dict[int, int] = field(default_factory=dict)  #: host port -> container port
    env_names: tuple[str, ...] = ()  #: passed by name; values come from the client's env
    mounts: tuple[Mount, ...] = ()
    stop_signal: int = signal.SIGTERM
    stop_grace: float = 10.0
    cpu: float | None = None
    memory: int | None = None
    host: str = "127.0.0.1"
    user: str | None = None  #: `--user` (uid:gid), from `user:`


def run_argv(spec: ContainerSpec, binary: str = "docker") -> list[str]:
    """The foreground ``run`` command of a replica (its process); no value on it but
    names, ports, paths and limits."""
    argv = [binary, "run", "--rm", "--name", spec.name,
            "--stop-signal", signal.Signals(spec.stop_signal).name,
            "--stop-timeout", str(max(0, round(spec.stop_grace)))]
    for key, value in sorted(spec.labels.items()):
        argv += ["--label", f"{key}={value}"]
    for host_port, container_port in spec.publish.items():
        argv += ["--publish", f"{spec.host}:{host_port}:{container_port}"]
    for name in spec.env_names:
        argv += ["--env", name]
    for m in spec.mounts:
        argv += ["--volume", f"{m.source}:{m.target}" + (":ro" if m.read_only else "")]
    if spec.user is not None:
        argv += ["--user", spec.user]
    if spec.cpu is not None:
        argv += ["--cpus", f"{spec.cpu:g}"]
    if spec.memory is not None:
        argv += ["--memory", str(spec.memory)]
    return [*argv, spec.image]


def exec_argv(name: str, argv: list[str], binary: str = "docker") -> list[str]:
    """An exec probe's command, run inside the replica's container."""
    return [binary, "exec", name, *argv]


def _rm_argv(binary: str, names: list[str]) -> list[str]:
    return [binary, "rm", "--force", "--volumes", *names]


def _gone(stderr: str) -> bool:
    text = stderr.lower()
    return "no such container" in text or "already in progress" in text


async def remove(name: str, binary: str = "docker", timeout: float = 60.0) -> bool:
    """Remove the container (killing it if it still runs); True if it is gone."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *_rm_argv(binary, [name]), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        log.warning("cannot remove container %s: %s", name, exc)
        return False
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        proc.kill()
        await proc.wait()
        log.warning("removing container %s took over %gs", name, timeout)
        return False
    text = err.decode(errors="replace")
    if proc.returncode != 0 and not _gone(text):
        log.warning("cannot remove container %s: %s", name, text.strip())
        return False
    return True


def labelled(labels: dict[str, str], binary: str = "docker") -> dict[str, str]:
    """Containers (running or not) carrying every label: name -> replica label."""
    argv = [binary, "ps", "--all", "--no-trunc", "--format",
            "{{.Names}}\t{{.Label \"" + LABEL + ".replica\"}}"]
    for key, value in sorted(labels.items()):
        argv += ["--filter", f"label={key}={value}"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot list containers: %s", exc)
        return {}
    if proc.returncode != 0:
        log.warning("cannot list containers: %s", proc.stderr.strip())
        return {}
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, _, replica = line.partition("\t")
        if name:
            out[name] = replica
    return out


def remove_labelled(labels: dict[str, str], keep: set[str] = frozenset(),  # type: ignore[assignment]
                    binary: str = "docker") -> list[str]:
    """Remove the containers carrying `labels` whose replica is not in `keep`; returns
    their names (a sweep: after ``mso down``, and after a crash for replicas that no
    longer exist)."""
    doomed = sorted(n for n, replica in labelled(labels, binary).items() if replica not in keep)
    if doomed:
        proc = subprocess.run(_rm_argv(binary, doomed), capture_output=True, text=True,
                              timeout=120, check=False)
        if proc.returncode != 0 and not _gone(proc.stderr):
            log.warning("cannot remove containers %s: %s", doomed, proc.stderr.strip())
    return doomed
