"""Helpers of the Kubernetes end-to-end tests: running mso, paced load, address checks."""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
LAB_NETS = [ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.200.0.0/24", "10.201.0.0/24", "172.16.0.0/12", "0.0.0.0/32",
    "224.0.0.0/24")]  # link-local multicast (IGMP reports of the lab's bridge): never routed
LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")


@dataclass(frozen=True)
class Lab:
    kubeconfig: Path


@dataclass
class Mso:
    """Runs the mso CLI against one manifest folder and the lab's kubeconfig."""

    folder: Path
    kubeconfig: Path
    namespace: str
    manifest: str = "mso.yaml"  #: its name in `folder` (a compose file works too)

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mso", *args, "--file", str(self.folder / self.manifest),
               "--engine", "kubernetes"]
        if args[0] in ("deploy", "up", "down", "ps", "endpoints", "scale", "releases",
                       "rollback", "rollout", "logs"):
            cmd += ["--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"mso {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stderr[-3000:]}\n{done.stdout[-2000:]}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0,
              interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bodies: dict[str, int] = field(default_factory=dict)  # bodies of accepted responses


class Load:
    """GETs `path` on host:port at about `rate` requests/s (keep-alive), until stopped."""

    def __init__(self, host: str, port: int, path: str, rate: float = 60.0,
                 threads: int = 3, ok: Callable[[int], bool] = lambda s: s < 500) -> None:
        self.host, self.port, self.path, self.ok = host, port, path, ok
        self.interval = threads / rate
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self.threads:
            t.join(timeout=30)
        return self.result

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            body = ""
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read().decode(errors="replace").strip()
                status = response.status
                error = None if self.ok(status) else f"HTTP {status}"
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                status, error = 0, f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.result.statuses[status] = self.result.statuses.get(status, 0) + 1
                if error is None:
                    self.result.ok += 1
                    self.result.bodies[body] = self.result.bodies.get(body, 0) + 1
                else:
                    self.result.failures.append(f"{time.strftime('%X')} {error}")
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def get(host: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def outside_lab(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        return not ip.is_loopback
    return ip in LINK_LOCAL or not any(ip in net for net in LAB_NETS)


def conntrack_flows() -> list[dict[str, str]]:
    """Every tracked IPv4 flow's original direction: {src, dst, dport}."""
    out = subprocess.run(["conntrack", "-L", "-f", "ipv4"], capture_output=True,
                         text=True).stdout
    flows = []
    for line in out.splitlines():
        fields = {}
        for key in ("src", "dst", "dport"):
            match = re.search(rf"\b{key}=(\S+)", line)  # the first one: original direction
            if match:
                fields[key] = match.group(1)
        if "src" in fields and "dst" in fields:
            flows.append(fields)
    return flows


def lab_process_peers(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(process, remote address) of every TCP/UDP socket of the lab's processes."""
    out = subprocess.run(["ss", "-Htunap"], capture_output=True, text=True).stdout
    peers = []
    for line in out.splitlines():
        match = re.search(r'users:\(\("([^"]+)"', line)
        if match is None or not match.group(1).startswith(names):
            continue
        remote = line.split()[5]
        host = remote.rsplit(":", 1)[0].strip("[]")
        if host not in ("*", "0.0.0.0", "::"):
            peers.append((match.group(1), host.split("%")[0]))
    return peers
