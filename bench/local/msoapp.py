"""Drive one mso app for the benchmark through the real CLI (`.venv/bin/mso`).

`manifest_text` is the pure part (the app under test); `MsoRun` starts it with `mso up -d`,
finds the daemon and proxy pids, reads the event log and always brings it down, sweeping
any process that still carries the app's `MSO_INSTANCE` marker.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from common import children_of, free_ports, kill_all, wait_gone

MSO = str(Path(sys.executable).parent / "mso")
APP = Path(__file__).resolve().parent / "app.py"


def service_names(services: int) -> list[str]:
    return [f"s{i + 1:02d}" for i in range(services)]


def manifest_text(*, app: str, services: int, replicas: int, period: str, gateway_port: int,
                  backoff: str = "", python: str = sys.executable) -> str:
    """`services` x `replicas` copies of the trivial app, each with an HTTP readiness probe."""
    names = service_names(services)
    lines = [f"app: {app}", f"gateway: {{bind: 127.0.0.1, port: {gateway_port}}}", "routes:",
             f"  - {{path: /, service: {names[0]}}}", "services:"]
    for name in names:
        lines += [f"  {name}:", f"    run: [{python}, {APP}]", f"    replicas: {replicas}",
                  "    ports: {http: 8000}", "    health:",
                  f"      readiness: {{http: /ready, period: {period}, timeout: 1s, "
                  "failure_threshold: 3, success_threshold: 1}"]
        if backoff:
            lines.append(f"    backoff: {backoff}")
    return "\n".join(lines) + "\n"


class MsoError(RuntimeError):
    """An mso command failed; the message carries its output and the daemon log's tail."""


class MsoRun:
    """One app folder with its own `.mso/` state."""

    def __init__(self, folder: Path, manifest: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mso.yaml").write_text(manifest)
        self.instance: str | None = None
        self.up_called = self.up_returned = float("nan")  # wall clock, like event timestamps
        self.down_seconds = float("nan")
        self.down_error: str | None = None

    def cli(self, *args: str, timeout: float = 180.0) -> str:
        proc = subprocess.run([MSO, *args, "--file", str(self.folder / "mso.yaml")],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            log = self.folder / ".mso" / "daemon.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise MsoError(f"mso {' '.join(args)} exited {proc.returncode}: "
                           f"{proc.stdout[-1000:]}{proc.stderr[-1000:]}\n{tail}")
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json"))

    def up(self, timeout: float = 240.0) -> float:
        """Seconds that `mso up -d` took, i.e. until every replica was READY."""
        started = time.monotonic()
        self.up_called = time.time()
        try:
            self.cli("up", "-d", "--timeout", str(timeout), timeout=timeout + 30)
        finally:
            self.up_returned = time.time()
            self._learn_instance()
        return time.monotonic() - started

    def _learn_instance(self) -> None:
        try:
            self.instance = str(self.status()["instance"])
        except Exception:  # the daemon may not have come up at all
            self.instance = None

    def status(self) -> dict[str, Any]:
        from mso.cli.client import ApiClient
        from mso.paths import StatePaths
        client = ApiClient(StatePaths.for_manifest(self.folder / "mso.yaml"), timeout=10.0)
        try:
            return dict(client.get("/v1/status"))
        finally:
            client.close()

    def daemon_pid(self) -> int:
        return int((self.folder / ".mso" / "daemon.lock").read_text().split()[0])

    def proxy_control(self) -> Path:
        return self.folder / ".mso" / "proxy.sock"

    def proxy_pid(self) -> int:
        return int(proxy_ping(self.proxy_control())["pid"])

    def events(self) -> list[dict[str, Any]]:
        return list(self.json("events", "--tail", "100000"))

    def down(self) -> None:
        """`mso down`, timed; if it fails or hangs, kill the control plane and every replica.

        A failed down is recorded in `down_error` rather than raised, so one bad teardown
        does not throw away the run's measurements (the report lists it).
        """
        started = time.monotonic()
        try:
            if (self.folder / ".mso").exists():
                self.cli("down", timeout=120)
            self.down_seconds = time.monotonic() - started
        except (MsoError, subprocess.TimeoutExpired) as exc:
            self.down_seconds = time.monotonic() - started
            self.down_error = str(exc).splitlines()[0][:300]
            self._kill_control_plane()
        finally:
            if self.instance:
                kill_all(wait_gone(f"MSO_INSTANCE={self.instance}", timeout=15))

    def _kill_control_plane(self) -> None:
        try:
            daemon = self.daemon_pid()
        except (OSError, ValueError, IndexError):
            return
        kill_all([daemon, *children_of(daemon)])

    def __enter__(self) -> MsoRun:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()


def proxy_ping(path: Path, sock: socket.socket | None = None) -> dict[str, Any]:
    """One `ping` on the proxy's control socket (a fresh connection unless one is given)."""
    own = sock is None
    conn = sock or socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if own:
            conn.settimeout(5.0)
            conn.connect(str(path))
        conn.sendall(b'{"op": "ping"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError("proxy closed the control connection")
            data += chunk
        return dict(json.loads(data))
    finally:
        if own:
            conn.close()


def ready_bounds(events: list[dict[str, Any]]) -> tuple[float, float]:
    """Wall times of the daemon's start event and of the last replica's first READY."""
    start = min(float(e["ts"]) for e in events if e["type"] == "daemon.started")
    first_ready: dict[str, float] = {}
    for e in events:
        if e["type"] == "replica.state" and e["data"].get("to") == "READY":
            first_ready.setdefault(str(e["replica"]), float(e["ts"]))
    return start, max(first_ready.values())


def ready_span(events: list[dict[str, Any]]) -> float:
    """Seconds from the daemon's start event to the last replica's first READY."""
    start, last = ready_bounds(events)
    return last - start


def new_gateway_port() -> int:
    return free_ports(1)[0]
