"""Fixtures for the Swarm end-to-end tests: a real dockerd and a single-node swarm.

The fixtures start what is missing (install docker.io, start dockerd, `docker swarm
init`), and skip the suite loudly only when docker.io cannot be installed at all.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]

MSO = [str(Path(sys.executable).with_name("mso"))]


def _run(argv: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _docker_ok() -> bool:
    return shutil.which("docker") is not None and _run(["docker", "info"], 20).returncode == 0


def ensure_swarm() -> None:
    if shutil.which("dockerd") is None:
        _run(["apt-get", "update"], 300)
        proc = _run(["apt-get", "install", "-y", "docker.io"], 600)
        if proc.returncode != 0 or shutil.which("dockerd") is None:
            msg = f"SKIPPING SWARM TESTS: docker.io cannot be installed: {proc.stderr[-400:]}"
            print("\n" + "!" * 70 + "\n" + msg + "\n" + "!" * 70, file=sys.stderr)
            pytest.skip(msg)
    if not _docker_ok() and _run(["pgrep", "-x", "dockerd"]).returncode == 0:
        # A dockerd that is slow to answer (a loaded machine) is waited for, never joined
        # by a second one: two daemons on one state directory corrupt Swarm's.
        deadline = time.monotonic() + 120
        while not _docker_ok() and time.monotonic() < deadline:
            time.sleep(1)
    if not _docker_ok():
        log = open("/var/log/mso-dockerd.log", "ab")
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 90
        while not _docker_ok():
            if time.monotonic() > deadline:
                pytest.fail("dockerd did not come up in 90s; see /var/log/mso-dockerd.log")
            time.sleep(0.5)
    state = _run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.strip()
    if state != "active":
        proc = _run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"])
        assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="session")
def swarm() -> None:
    ensure_swarm()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mso(*args: str, cwd: Path, timeout: float = 400.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*MSO, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"mso {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def mso_json(*args: str, cwd: Path) -> Any:
    return json.loads(mso(*args, "-o", "json", cwd=cwd).stdout)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Load:
    """GETs through the gateway in a loop (one keep-alive-less client per thread)."""

    def __init__(self, url: str, threads: int = 2) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self.bodies: list[bytes] = []  # in order, so a test can tell what answered when
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        import urllib.error
        import urllib.request
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    self.bodies.append(r.read())
                    self.ok += 1
            except urllib.error.HTTPError as exc:
                self.failed.append(f"HTTP {exc.code}")
            except Exception as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def app_copy(src: Path, dest: Path, port: int) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".mso", "__pycache__", ".mypy_cache"))
    manifest = dest / "mso.yaml"
    text = manifest.read_text()
    for old in ("port: 8080", "{port: 8080}"):
        text = text.replace(old, old.replace("8080", str(port)))
    manifest.write_text(text)
    return manifest


@pytest.fixture
def deployed(swarm: None, tmp_path: Path) -> Iterator[Any]:
    """A factory deploying a copy of an app; everything is removed afterwards."""
    made: list[Path] = []

    def make(src: Path, name: str = "app") -> tuple[Path, int]:
        port = free_port()
        manifest = app_copy(src, tmp_path / name, port)
        made.append(manifest)
        return manifest, port

    yield make
    for manifest in made:
        mso("down", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent, check=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "swarm: end-to-end tests against a real Docker Swarm")
