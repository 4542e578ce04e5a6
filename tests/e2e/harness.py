"""End-to-end harness: real `mso` CLI processes, a real daemon, real replicas and sockets.

Every test gets its own app folder (so its own `.mso/` state) and a free gateway port,
and the fixture always brings the app down and then checks that no process carrying the
app's instance marker survived.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
ECHO = str(APPS / "echo.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1,
             message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # conditions may race with start-up
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}"
                         + (f" (last error: {last_error})" if last_error else ""))


def instance_processes(instance: str) -> list[int]:
    found = []
    needle = f"MSO_INSTANCE={instance}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if needle in env and not zombie:
            found.append(int(entry))
    return found


class MsoApp:
    """One app under test, driven through the real CLI."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = folder / "mso.yaml"
        self.gateway_port = free_port()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.instance: str | None = None

    def write(self, text: str) -> None:
        self.manifest.write_text(text.replace("GATEWAY_PORT", str(self.gateway_port))
                                 .replace("ECHO_APP", ECHO).replace("PYTHON", sys.executable))

    def cli(self, *args: str, check: bool = True, timeout: float = 180.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "mso", *args], cwd=self.folder,
                              capture_output=True, text=True, timeout=timeout,
                              env=env or self.env)
        if check and proc.returncode != 0:
            raise AssertionError(f"mso {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}\n{self.daemon_log()}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def up(self, timeout: float = 90.0) -> None:
        self.cli("up", "-d", "--timeout", str(timeout))
        self.instance = self.status()["instance"]

    def status(self) -> dict[str, Any]:
        from mso.cli.client import ApiClient
        from mso.paths import StatePaths
        client = ApiClient(StatePaths.for_manifest(self.manifest))
        try:
            return dict(client.get("/v1/status"))
        finally:
            client.close()

    def ps(self) -> list[dict[str, Any]]:
        return list(self.json("ps")["replicas"])

    def replicas(self, service: str) -> list[dict[str, Any]]:
        return [r for r in self.ps() if r["service"] == service]

    def events(self) -> list[dict[str, Any]]:
        return list(self.json("events", "--tail", "10000"))

    def daemon_log(self) -> str:
        path = self.folder / ".mso" / "daemon.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def get(self, path: str = "/", port: int | None = None, timeout: float = 5.0) -> tuple[int, str]:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port or self.gateway_port,
                                          timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()

    def all_ready(self, count: int | None = None) -> bool:
        reps = self.ps()
        return all(r["state"] == "READY" for r in reps) and (count is None or len(reps) == count)

    def teardown(self) -> None:
        state = self.folder / ".mso"
        if state.exists():
            self.cli("down", check=False, timeout=120)
        if self.instance:
            leftovers = instance_processes(self.instance)
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            assert leftovers == [], f"processes left behind after down: {leftovers}"


