"""The conformance suite: each documented behaviour written once, run on every engine.

A scenario is a test function taking `target` (a `Target`), parametrized over the local
engine, Docker Swarm and Kubernetes. It drives only the CLI and the running app (over the
gateway, `mso ps`, `mso logs`, `mso events`), never engine internals, so a scenario that
passes on one engine and fails on another is a broken promise of parity.

Where `mso.spec.support` says an engine does not honour a key, the scenario's manifest is
refused there: `target.refused(...)` asserts that `mso validate --engine X` says so with
file and line, and the scenario ends. Scenarios register their name with `@scenario(...)`;
tests/conformance/test_coverage.py checks that every feature of the support table has one.

The Swarm target needs dockerd (started by the Swarm fixtures), the Kubernetes target the
lab cluster (scripts/k8s-lab.sh, started once for the whole suite here).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mso.spec import support
from tests.e2e.harness import free_port, instance_processes

HERE = Path(__file__).resolve().parent
APP = HERE / "apps" / "conform.py"

F = TypeVar("F", bound=Callable[..., Any])
SCENARIOS: dict[str, str] = {}  # scenario name -> test function name


def scenario(name: str) -> Callable[[F], F]:
    """Mark a test as the conformance scenario `name` (see mso.spec.support)."""
    def register(fn: F) -> F:
        SCENARIOS[name] = fn.__name__
        return pytest.mark.scenario(name)(fn)
    return register


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name): a conformance scenario")


class Target:
    """One app on one engine, driven through the real CLI."""

    def __init__(self, engine: support.EngineName, folder: Path,
                 kubeconfig: Path | None = None) -> None:
        self.engine = engine
        self.folder = folder
        self.kubeconfig = kubeconfig
        self.namespace = f"conf-{uuid.uuid4().hex[:8]}"
        # Swarm is shared by whoever runs tests on this machine: an app name of its own,
        # so two runs of one scenario never remove each other's network or services.
        self.app = f"conf-{uuid.uuid4().hex[:6]}"
        self.gateway_port = free_port()
        self.instance: str | None = None
        self.deployed = False

    # -- the app ------------------------------------------------------------------------
    def write(self, manifest: str) -> None:
        """The manifest (GATEWAY_PORT and the app name filled in) and the conformance app
        beside it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(APP, self.folder / "conform.py")
        # Each Target's app has a name of its own (`self.app`): Swarm names services by
        # app, and runs on one shared dockerd must not manage each other's services.
        (self.folder / "mso.yaml").write_text(
            manifest.replace("GATEWAY_PORT", str(self.gateway_port))
            .replace("\napp: conf\n", f"\napp: {self.app}\n"))

    def edit(self, old: str, new: str) -> None:
        path = self.folder / "mso.yaml"
        text = path.read_text()
        assert old in text, f"{old!r} not in the manifest"
        path.write_text(text.replace(old, new))

    # -- the CLI --------------------------------------------------------------------------
    def mso(self, *args: str, check: bool = True, timeout: float = 900
            ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mso", *args]
        if self.engine != "local" and args[0] not in ("validate", "schema"):
            argv += ["--engine", self.engine]
        if self.engine == "kubernetes" and args[0] not in ("validate", "schema", "render",
                                                          "events"):
            argv += ["--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.run(argv, cwd=self.folder, capture_output=True, text=True,
                              timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"mso {' '.join(args)} on {self.engine} exited "
                                 f"{proc.returncode}:\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-3000:]}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.mso(*args, "-o", "json").stdout)

    def refused(self, field: str) -> bool:
        """True (and checked) when this engine refuses the manifest for `field`: the
        scenario then ends, its refusal being the documented behaviour."""
        loaded = _load(self.folder / "mso.yaml")
        gaps = [f for f in support.FEATURES if not f.supported(self.engine)
                and any(".".join(map(str, p)) == field for p in support.uses(loaded, f))]
        if not gaps:
            return False
        proc = self.mso("validate", "--engine", self.engine, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f": {field}: not supported on {self.engine}: " in proc.stderr, proc.stderr
        return True

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """Start the app and wait until it is READY (`up -d` here, `up` on remote
        engines, which always wait)."""
        args = ("up", "-d", *extra) if self.engine == "local" else ("up", *extra)
        self.deployed = True  # a failed `up` may have started something `down` must remove
        proc = self.mso(*args)
        if self.engine == "local":
            self.instance = _instance(self.folder)
        return proc

    def deploy(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Apply the edited manifest and wait for its rollouts to end."""
        args = ("deploy", "--wait", *extra) if self.engine == "local" else ("deploy", *extra)
        return self.mso(*args, check=check)

    def down(self) -> None:
        if self.deployed:
            self.mso("down", check=False, timeout=600)
        if self.engine == "swarm":
            # A Swarm controller that outlived a failed `down` would go on reconciling
            # the next scenario's app of the same name: a failure must not spread.
            state = str(self.folder / ".mso")
            left = subprocess.run(["pkill", "-9", "-f", f"mso.engines.swarm --state-dir {state}"],
                                  check=False).returncode == 0
            assert not left, "the Swarm controller was still running after `mso down`"
        if self.instance:
            assert instance_processes(self.instance) == [], "processes left after down"

    # -- the running app ------------------------------------------------------------------
    def gateway(self) -> tuple[str, int]:
        host, port = self.json("endpoints")["gateway"].rsplit(":", 1)
        return host, int(port)

    def request(self, method: str, path: str = "/", timeout: float = 10.0,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        host, port = self.gateway()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()

    def get_json(self, path: str = "/") -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (status, body)
        return json.loads(body)

    def ps(self) -> list[dict[str, Any]]:
        return list(self.json("ps")["replicas"])

    def logs(self, service: str | None = None) -> list[dict[str, Any]]:
        args = ["logs", *([service] if service else [])]
        return list(self.json(*args))

    def follow_logs(self, service: str) -> tuple[subprocess.Popen[str], list[str]]:
        """`mso logs SERVICE -f` in the background, and the list its lines go to (a
        thread appends them). Kubernetes keeps no log of a pod once it is gone, so what a
        replica says while it stops is only seen by following it."""
        argv = [sys.executable, "-m", "mso", "logs", service, "-f"]
        if self.engine != "local":
            argv += ["--engine", self.engine]
        if self.engine == "kubernetes":
            argv += ["--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace]
        proc = subprocess.Popen(argv, cwd=self.folder, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        lines: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            lines.extend(proc.stdout)
        threading.Thread(target=read, daemon=True).start()
        return proc, lines

    def said(self, service: str | None, words: str) -> list[float]:
        """Times (from the app's own `conform: ... at T` lines) of lines containing
        `words`, oldest first."""
        times = []
        for record in self.logs(service):
            line = str(record.get("line", ""))
            if "conform: " in line and words in line and " at " in line:
                times.append(float(line.rsplit(" at ", 1)[1].split()[0]))
        return sorted(times)


def _load(path: Path) -> Any:
    from mso.spec.load import load_manifest
    return load_manifest(path, dict(os.environ)).data


def _instance(folder: Path) -> str | None:
    import sqlite3
    db = folder / ".mso" / "state.db"
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='instance_id'").fetchone()
    finally:
        conn.close()
    return str(row[0]) if row else None


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2,
             message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except (AssertionError, OSError, ValueError) as exc:  # the app may be restarting
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {message} "
                         f"(last: {last!r})")


# -- engines ------------------------------------------------------------------------------

#: Scenarios an engine fails today although it accepts the manifest: broken promises
#: being fixed, listed in docs/engines.md ("Known differences"). They are reported as
#: xfail without running: each costs up to 5 minutes of waiting for what does not come.
#: Take an entry out to run its scenario again.
KNOWN_GAPS: dict[tuple[str, str], str] = {
    ("restart_policy", "swarm"):
        "a service whose process ends cleanly under `restart: on-failure` never counts as "
        "started, so `mso up` waits until its timeout",
}


@pytest.fixture(params=[
    pytest.param("local", marks=pytest.mark.e2e),
    pytest.param("swarm", marks=pytest.mark.swarm),
    pytest.param("kubernetes", marks=pytest.mark.kubernetes),
])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    engine: support.EngineName = request.param
    marker = request.node.get_closest_marker("scenario")
    known = KNOWN_GAPS.get((marker.args[0] if marker else "", engine))
    if known is not None:
        pytest.xfail(f"known gap on {engine}: {known}")
    kubeconfig = None
    if engine == "swarm":
        from tests.e2e.swarm.conftest import ensure_swarm
        ensure_swarm()
    elif engine == "kubernetes":
        kubeconfig = request.getfixturevalue("k8s_lab")
    made = Target(engine, tmp_path / "app", kubeconfig)
    try:
        yield made
    finally:
        made.down()
