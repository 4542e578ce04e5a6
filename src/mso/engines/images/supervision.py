"""The command that runs a `run:` service under mso's shim as its in-container supervisor
(pure; the Swarm and Kubernetes engines render it from a release's dumped model).

`shim.py run` gets the replica's probes, restart policy, backoff and stop settings as
flags (see mso/engines/images/shim.py), so a container behaves as the local engine's
supervisor would: the same probe code, thresholds, backoff and stop signal.
"""

from __future__ import annotations

from typing import Any

from mso.engines.images import shim
from mso.engines.images.rootfs import SHIM_PATH
from mso.engines.local.model_map import probe_spec
from mso.engines.local.probes import resolve_port
from mso.releases.ports import port_map

#: The shim's status file, read by the engines' own checks (`shim.py probe status FILE`).
STATUS_FILE = shim.STATUS_FILE
#: Running a check of the status file: isolated (-I) and without the site module (-S), so
#: each (one `exec` per period per container) starts Python fast.
STATUS_CHECK = ["python3", "-I", "-S", SHIM_PATH, "probe", "status", STATUS_FILE]
ROLES = shim.ROLES


def probes(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The probes the manifest writes, by role."""
    health = model.get("health") or {}
    return {role: health[role] for role in ROLES if health.get(role)}


def shim_command(model: dict[str, Any], argv: list[str], *, forward: bool = True,
                 secret_env: list[str] | None = None) -> list[str]:
    """`python3 shim.py run FLAGS -- ARGV` for a service's dumped model. `forward`: the
    shim relays the container's addresses to apps bound on loopback (Swarm; Kubernetes
    has a sidecar for it); `secret_env`: `VAR=secret` pairs read from secret files."""
    ports = port_map(model)
    numbers = {name: number for name, (_, number) in ports.items()}
    out = ["python3", SHIM_PATH, "run", "--ports", ",".join(str(p) for p in numbers.values())]
    if not forward:
        out += ["--forward", "no"]
    for role, raw in probes(model).items():
        spec = probe_spec(raw, ports)
        port = None if spec is None or spec.kind == "exec" else resolve_port(spec, numbers)
        out += ["--probe", f"{role}={shim.probe_args(raw, port)}"]
    backoff = model.get("backoff") or {}
    stop = model.get("stop") or {}
    # A job has no `restart:`: the shim ends with its process, and the engine's own job
    # handling (Swarm's retries, a Kubernetes Job) decides what comes next.
    out += ["--restart", str(model.get("restart", "never")),
            "--backoff", ",".join(f"{float(backoff.get(key, default)):g}" for key, default in
                                  (("initial", 0.5), ("max", 30.0), ("reset_after", 60.0))),
            "--stop-signal", str(stop.get("signal", "SIGTERM")),
            "--stop-grace", f"{float(stop.get('grace', 10.0)):g}"]
    for pair in secret_env or []:
        out += ["--secret-env", pair]
    return [*out, "--", *argv]
