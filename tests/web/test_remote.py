"""The dashboard's source for Swarm and Kubernetes apps (mso.web.remote), over a fake
engine behind the `RemoteEngine`/`SupportsDashboard` interface; the real engines are
shown in tests/e2e/swarm/test_shop_on_swarm.py and tests/e2e/kubernetes/test_shop.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mso.engines.remote import RemoteEngineError
from mso.importers import load_app
from mso.store.db import Store
from mso.web import remote
from mso.web.remote import RemoteSource, weights_of

MANIFEST = """
app: remote-dash
engine: swarm
services:
  web:
    run: [python3, -m, http.server]
    ports: {http: 8000, admin: 8001}
  worker:
    run: [python3, -c, "import time; time.sleep(1e9)"]
"""


class FakeEngine:
    """The calls the dashboard makes of a remote engine, answered from memory."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.logs_seen: list[tuple[str | None, float | None, int | None]] = []
        self.lines: list[dict[str, Any]] = []
        self.commands: list[tuple[str, str]] = []

    def state_store(self, loaded: Any) -> Store:
        return Store(self.db)

    def metrics(self, loaded: Any) -> dict[str, Any]:
        return {"clusters": {}}

    def ps(self, loaded: Any) -> dict[str, Any]:
        return {"app": "remote-dash", "replicas": []}

    def endpoints(self, loaded: Any) -> dict[str, Any]:
        return {"gateway": "127.0.0.1:1", "metrics": "", "routes": [], "services": {}}

    def rollout(self, loaded: Any, action: str, service: str) -> dict[str, Any]:
        self.commands.append((action, service))
        return {"service": service, "phase": "Progressing", "weight": 30}

    def rollback(self, loaded: Any, service: str, to: int | None) -> int:
        return 7

    def logs(self, loaded: Any, service: str | None, follow: bool, since: float | None,
             tail: int | None) -> Iterator[dict[str, Any]]:
        assert not follow  # the dashboard polls; it never holds a stream open
        self.logs_seen.append((service, since, tail))
        found = [r for r in self.lines if since is None or r["ts"] >= since]
        return iter(found[-tail:] if tail else found)


@pytest.fixture()
def source(tmp_path: Path) -> Iterator[tuple[RemoteSource, FakeEngine]]:
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    loaded = load_app(tmp_path / "mso.yaml", {}, check_files=False)
    engine = FakeEngine(tmp_path / "state.db")
    src = RemoteSource("swarm", engine, loaded)  # type: ignore[arg-type]
    yield src, engine
    src.close()


def test_names_clusters_and_unknown_services(source: tuple[RemoteSource, FakeEngine]) -> None:
    src, engine = source
    assert src.services() == ["web", "worker"]
    assert src.clusters() == {"web/http": "web", "web/admin": "web"}
    with pytest.raises(KeyError):
        asyncio.run(src.rollout_status("nope"))
    with pytest.raises(KeyError):
        asyncio.run(src.rollback("nope", 1))
    assert engine.commands == []  # refused before the engine is asked
    status = asyncio.run(src.rollout_status("web"))
    assert src.rollout_active("web", status)
    assert asyncio.run(src.weights()) == {"web": {"stable": 70, "canary": 30},
                                          "worker": {"stable": 70, "canary": 30}}


def test_weights_from_a_rollout_status() -> None:
    assert weights_of({"phase": None, "weight": None}) == {"stable": 100}
    assert weights_of({"phase": "Promoted", "weight": 100}) == {"stable": 100}
    assert weights_of({"phase": "Paused", "weight": 25}) == {"stable": 75, "canary": 25}


def test_followed_logs_are_polled_and_each_line_comes_once(
        source: tuple[RemoteSource, FakeEngine], monkeypatch: pytest.MonkeyPatch) -> None:
    src, engine = source
    monkeypatch.setattr(remote, "LOG_POLL", 0.01)
    engine.lines = [{"ts": 1.0, "line": "old"}]

    async def take(n: int) -> list[str]:
        got: list[str] = []
        follower = src.follow_logs("web")
        async for record in follower:
            got.append(record["line"])
            if len(got) == n:
                break
        await follower.aclose()  # type: ignore[attr-defined]
        return got

    async def scenario() -> list[str]:
        async def feed() -> None:
            await asyncio.sleep(0.05)
            engine.lines += [{"ts": 2.0, "line": "a"}, {"ts": 2.0, "line": "b"}]
            await asyncio.sleep(0.05)
            engine.lines += [{"ts": 3.0, "line": "c"}]
        feeder = asyncio.ensure_future(feed())
        got = await asyncio.wait_for(take(3), 10)
        await feeder
        return got

    assert asyncio.run(scenario()) == ["a", "b", "c"]  # "old" was before the page opened
    assert all(tail is None or tail == 1 for _, _, tail in engine.logs_seen)


def test_an_engine_without_the_dashboard_interface_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    loaded = load_app(tmp_path / "mso.yaml", {}, check_files=False)
    with pytest.raises(RemoteEngineError, match="cannot serve the dashboard"):
        RemoteSource("swarm", object(), loaded)  # type: ignore[arg-type]


def test_a_never_deployed_swarm_app_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    mso = str(Path(sys.executable).with_name("mso"))
    done = subprocess.run([mso, "dashboard", "--no-open", "-f", str(tmp_path / "mso.yaml")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "mso: remote-dash was never deployed to Swarm from here; run `mso deploy --engine "
        "swarm` first"], done.stderr
