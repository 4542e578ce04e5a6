"""Drive one echo app for the rollout benchmark: manifest text, the mso CLI and API reads.

`manifest` is pure (the app under test). `App` changes state only through the real CLI
(`mso up -d`, `mso deploy`, `mso down`) and reads state through the daemon's API socket,
the same API `mso rollout status -o json` / `mso events -o json` print, because spawning
a CLI process for every poll would steal CPU from the replicas being measured. `down`
always runs, and sweeps any process still carrying the app's `MSO_INSTANCE` marker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "tests" / "e2e" / "apps" / "echo.py"
MSO = str(Path(sys.executable).parent / "mso")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifest(*, gateway_port: int, rollout: str, greeting: str, error_rate: float = 0.0,
             replicas: int = 3, python: str = sys.executable) -> str:
    """The echo service behind the gateway; `rollout` is the YAML body of `rollout:`."""
    body = "\n".join("      " + line for line in rollout.strip().splitlines())
    return (f"app: bench-ro\n"
            f"gateway: {{bind: 127.0.0.1, port: {gateway_port}}}\n"
            f"routes:\n  - {{path: /, service: echo}}\n"
            f"services:\n  echo:\n    run: [{python}, {ECHO}]\n"
            f"    replicas: {replicas}\n    ports: {{http: 8000}}\n"
            f"    env: {{GREETING: \"{greeting}\", ERROR_RATE: \"{error_rate}\"}}\n"
            f"    health:\n      readiness: {{http: /ready, period: 500ms, timeout: 1s, "
            f"failure_threshold: 1}}\n"
            f"    stop: {{grace: 5s}}\n    rollout:\n{body}\n")


class MsoError(RuntimeError):
    """An mso command failed; the message carries its output and the daemon log's tail."""


def wait_for(condition: Callable[[], Any], timeout: float, message: str,
             interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {message}")


class App:
    """One app folder with its own `.mso/` state."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / "mso.yaml"
        self.gateway_port = free_port()
        self.instance: str | None = None
        self._client: Any = None

    def write(self, text: str) -> None:
        self.path.write_text(text)

    def cli(self, *args: str, timeout: float = 180.0) -> str:
        proc = subprocess.run([MSO, *args, "--file", str(self.path)], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            log = self.folder / ".mso" / "daemon.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise MsoError(f"mso {' '.join(args)} exited {proc.returncode}: "
                           f"{proc.stdout[-800:]}{proc.stderr[-800:]}\n{tail}")
        return proc.stdout

    def up(self) -> None:
        try:
            self.cli("up", "-d", "--timeout", "120", timeout=180)
        finally:
            try:
                self.instance = str(self.api("/v1/status")["instance"])
            except Exception:  # the daemon may not have come up at all
                self.instance = None

    def api(self, path: str, **params: Any) -> Any:
        if self._client is None:
            from mso.cli.client import ApiClient
            from mso.paths import StatePaths
            self._client = ApiClient(StatePaths.for_manifest(self.path), timeout=20.0)
        return self._client.get(path, **params)

    def rollout(self) -> dict[str, Any]:
        return dict(self.api("/v1/services/echo/rollout"))

    def replicas(self) -> list[dict[str, Any]]:
        return [r for r in self.api("/v1/ps")["replicas"] if r["service"] == "echo"]

    def settled(self, release: int, count: int) -> bool:
        """Exactly `count` replicas, all READY and on `release`."""
        reps = self.replicas()
        return len(reps) == count and all(r["state"] == "READY" and r["release"] == release
                                          for r in reps)

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        return list(self.api("/v1/events", after=after, limit=100000))

    def last_event_id(self) -> int:
        events = self.events()
        return int(events[-1]["id"]) if events else 0

    def down(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        try:
            if (self.folder / ".mso").exists():
                self.cli("down", timeout=180)
        finally:
            if self.instance:
                _sweep(f"MSO_INSTANCE={self.instance}")

    def __enter__(self) -> App:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()


def _sweep(marker: str) -> None:
    """SIGKILL live processes whose environment holds exactly `marker` (ours only)."""
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(entry), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
