"""`mso up --watch` (issue 18): a save goes live through a readiness-gated rolling restart
with no failed request; a broken save keeps the old replicas serving and says why; the
`signal` action reloads in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import APPS, MsoApp, wait_for
from tests.e2e.load import Load

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

WATCHED = str(APPS / "watched.py")

MANIFEST = """
app: watched
gateway: {port: GATEWAY_PORT}
routes:
  - {path: /, service: web}
services:
  web:
    run: [PYTHON, WATCHED]
    replicas: REPLICAS
    ports: {http: 8000}
    health:
      readiness: {http: /, period: 200ms}
    watch:
      ignore: ["*.tmp"]
      action: ACTION
"""


def save(folder: Path, text: str) -> None:
    """Save as editors do: write a temp file, rename it over the old one."""
    tmp = folder / "content.txt.tmp"
    tmp.write_text(text + "\n")
    os.replace(tmp, folder / "content.txt")


class Upper:
    """`mso up --watch` in the background, its output collected."""

    def __init__(self, app: MsoApp) -> None:
        self.app = app
        self.proc = subprocess.Popen([sys.executable, "-m", "mso", "up", "--watch"],
                                     cwd=app.folder, env=app.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reader.join(timeout=10)


@pytest.fixture
def watching(app: MsoApp) -> Iterator[tuple[MsoApp, Any]]:
    started: list[Upper] = []

    def start(replicas: int = 1, action: str = "restart") -> Upper:
        app.write(MANIFEST.replace("WATCHED", WATCHED).replace("REPLICAS", str(replicas))
                  .replace("ACTION", action))
        save(app.folder, "v0")
        upper = Upper(app)
        started.append(upper)
        wait_for(lambda: "mso: ready in" in upper.output, timeout=120,
                 message=f"mso up --watch to be ready:\n{upper.output}")
        app.instance = app.status()["instance"]
        assert app.get()[1] == "v0"
        return upper

    try:
        yield app, start
    finally:
        for upper in started:
            upper.stop()


def served(app: MsoApp, text: str) -> bool:
    return app.get()[1] == text


def test_twenty_saves_in_a_row_go_live_with_no_failed_request(watching: Any) -> None:
    app, start = watching
    upper = start(replicas=2)
    with Load(app.gateway_port, rate=50) as load:
        wait_for(lambda: load.result.ok >= 25, timeout=30, message="load running")
        for i in range(1, 21):
            save(app.folder, f"v{i}")
            # Paced past the 0.3 s debounce, so saves land while a restart runs: they
            # must coalesce into one more round each time (the test's input, not a wait).
            time.sleep(0.4)
        wait_for(lambda: served(app, "v20"), timeout=120,
                 message=f"v20 served:\n{upper.output}")
        wait_for(lambda: load.result.bodies["v20"] >= 25, timeout=30, message="v20 under load")
        wait_for(lambda: upper.output.rstrip().splitlines()[-1].startswith(
            "mso watch: web: restarted in"), timeout=120, message=f"the last round done:\n"
                 f"{upper.output}")
    result = load.stop()
    assert result.failures == [], (result.failures[:5], upper.output)
    assert result.total >= 100
    restarts = [line for line in upper.lines if "rolling restart" in line]
    # 20 saves coalesce into a few rounds, never one per save.
    assert 2 <= len(restarts) < 20, upper.output
    assert all(r["state"] == "READY" for r in app.replicas("web") if not r["draining"])


def test_a_broken_save_keeps_the_old_replica_serving_and_says_why(watching: Any) -> None:
    app, start = watching
    upper = start()
    old = {r["replica"] for r in app.replicas("web")}
    with Load(app.gateway_port, rate=50) as load:
        save(app.folder, "crash now")
        wait_for(lambda: "the old replicas keep serving" in upper.output, timeout=120,
                 message=f"the failure reported:\n{upper.output}")
        assert served(app, "v0")
        # the replacement is stopped, the old replica kept
        wait_for(lambda: {r["replica"] for r in app.replicas("web")} == old, timeout=60,
                 message="the failed replacement stopped")
        save(app.folder, "v1")  # fixed
        wait_for(lambda: served(app, "v1"), timeout=120, message=f"v1:\n{upper.output}")
    result = load.stop()
    assert result.failures == [], (result.failures[:5], upper.output)
    out = upper.output
    assert "fatal: bad content 'crash now'" in out  # the replacement's last log lines
    assert "exited 3 times in a row" in out or "crash loop" in out, out
    assert "mso watch: web: fix it and save again" in out
    # ... and in `mso events` (the dashboard's events page): the failure and its reason
    failed = [e for e in app.events() if e["type"] == "service.restart_failed"]
    assert failed and "exited 3 times" in failed[0]["message"], failed


def test_the_recreate_action_stops_then_starts(watching: Any) -> None:
    app, start = watching
    upper = start(replicas=2, action="recreate")
    save(app.folder, "v1")
    wait_for(lambda: "mso watch: web: restarted in" in upper.output, timeout=120,
             message=f"the recreate restart:\n{upper.output}")
    assert "mso watch: web: content.txt changed; recreate restart" in upper.output
    assert served(app, "v1")
    events = app.events()
    began = max(i for i, e in enumerate(events) if e["type"] == "service.restart")
    after = [e["message"] for e in events[began:] if e["type"] == "replica.state"]
    stopped = [i for i, m in enumerate(after) if "-> STOPPED" in m and "recreate" in m]
    started = [i for i, m in enumerate(after) if "-> STARTING" in m]
    assert len(stopped) == 2 and len(started) == 2, after
    assert max(stopped) < min(started), after  # stop first, then start


def test_the_signal_action_reloads_in_place(watching: Any) -> None:
    app, start = watching
    upper = start(action="{signal: SIGHUP}")
    before = [(r["replica"], r["pid"]) for r in app.replicas("web")]
    save(app.folder, "v1")
    wait_for(lambda: served(app, "v1"), timeout=60, message=f"v1:\n{upper.output}")
    assert [(r["replica"], r["pid"]) for r in app.replicas("web")] == before
    assert "mso watch: web: content.txt changed; SIGHUP sent to 1 replica(s)" in upper.output


def test_on_the_shop_an_edit_goes_live_with_no_failed_request(shop: MsoApp) -> None:
    """Issue 18's "done": on the shop as shipped (its services' `watch:` keys), `mso up
    --watch`, edit a service, see it live with no failed request; then `mso deploy` makes
    the edit a release of that service only (its watched files: mso.releases.sources)."""
    upper = Upper(shop)
    try:
        wait_for(lambda: "mso: ready in" in upper.output, timeout=180,
                 message=f"the shop ready:\n{upper.output}")
        shop.instance = shop.status()["instance"]
        page = shop.folder / "shop" / "page.py"
        with Load(shop.gateway_port, rate=50) as load:
            wait_for(lambda: load.result.ok >= 25, timeout=30, message="load running")
            tmp = page.with_name(".page.py.tmp")
            tmp.write_text(page.read_text().replace("<footer>served by",
                                                    "<footer>edited live, served by"))
            os.replace(tmp, page)
            wait_for(lambda: "edited live" in shop.get()[1], timeout=120,
                     message=f"the edit live:\n{upper.output}")
            wait_for(lambda: "mso watch: web: restarted in" in upper.output, timeout=120,
                     message=f"the restart done:\n{upper.output}")
        result = load.stop()
        assert result.failures == [], (result.failures[:5], upper.output)
        assert "mso watch: web: shop/page.py changed; rolling restart" in upper.output
        assert "mso watch: orders" not in upper.output  # page.py is web's alone
        deployed = shop.json("deploy")
        assert [(c["service"], c["release"]) for c in deployed["changes"] if c["created"]] \
            == [("web", 2)], deployed
    finally:
        upper.stop()
