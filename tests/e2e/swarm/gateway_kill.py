"""Killing the Swarm gateway's serving proxy (inside its container) or its container,
for the e2e test and bench/swarm/gateway_kill.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from mso.engines.swarm.state import SwarmPaths
from mso.proxy.client import ProxyClient


def gateway_ping(manifest: Path) -> dict[str, Any]:
    """The gateway supervisor's ping: its `proxy` (the serving child's pid inside the
    container), `spare`, `failovers` and table `version`."""
    async def ping() -> dict[str, Any]:
        client = ProxyClient(str(SwarmPaths.for_manifest(manifest).gateway_socket), 5.0)
        try:
            return await client.ping()
        finally:
            await client.close()
    return asyncio.run(ping())


def gateway_container(app: str) -> str:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"name={app}_mso-gateway."],
                         capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 1, out
    return out[0]


def host_pid(container: str, pid_in_container: int) -> int:
    """The host pid of a process of `container` (the host sees every container's)."""
    top = subprocess.run(["docker", "top", container, "-eo", "pid"], capture_output=True,
                         text=True, check=True).stdout.split()[1:]
    for pid in top:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:") and int(line.split()[-1]) == pid_in_container:
                    return int(pid)
    raise LookupError(f"no process {pid_in_container} in {container}")


def kill_serving_proxy(manifest: Path, app: str) -> int:
    """SIGKILL the gateway's serving proxy process; returns its pid in the container."""
    pid = int(gateway_ping(manifest)["proxy"])
    os.kill(host_pid(gateway_container(app), pid), signal.SIGKILL)
    return pid


def kill_container(app: str) -> str:
    container = gateway_container(app)
    subprocess.run(["docker", "kill", container], capture_output=True, check=True)
    return container
