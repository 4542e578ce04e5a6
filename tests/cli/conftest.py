"""Fixtures of the CLI tests: a folder with a manifest, and a running echo app to query.

The shared app is started once per session through the real `mso up -d` and brought down
at the end; tests that change it (restart, scale) get their own through `app_factory`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import MsoApp

# db is a dependency of echo, so echo's replicas get DB_URL; echo holds a secret file.
ECHO_WITH_DEP = """
app: clitest
gateway: {port: GATEWAY_PORT}
routes:
  - {path: /, service: echo}
services:
  db:
    run: [PYTHON, ECHO_APP]
    ports: {http: 8000}
  echo:
    run: [PYTHON, ECHO_APP]
    replicas: REPLICAS
    ports: {http: 8000}
    env: {CONTROL_DIR: CONTROL_PATH, GREETING: hi}
    depends_on: [db]
    secrets:
      token: {file: ./token.txt}
    health:
      readiness: {http: /ready, period: 200ms, timeout: 1s, failure_threshold: 1}
    stop: {grace: 5s}
  ticker:
    # Logs whatever the tests drop into CONTROL_PATH/say, so they can make a new log
    # line appear on demand.
    run: "while :; do if [ -f CONTROL_PATH/say ]; then cat CONTROL_PATH/say; rm -f CONTROL_PATH/say; fi; sleep 0.05; done"
    shell: true
    stop: {grace: 1s}
"""

RUNNING_REPLICAS = 4  # db-1, echo-1, echo-2, ticker-1

SECRET = "tok-cli-3b9e"


def write_echo_app(app: MsoApp, replicas: int = 2) -> None:
    control = app.folder / "control"
    control.mkdir(exist_ok=True)
    (app.folder / "token.txt").write_text(SECRET)
    app.write(ECHO_WITH_DEP.replace("CONTROL_PATH", str(control))
              .replace("REPLICAS", str(replicas)))


def start_echo_app(app: MsoApp, replicas: int = 2) -> MsoApp:
    write_echo_app(app, replicas)
    app.up()
    return app


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[[str], MsoApp]]:
    """Fresh, not yet started apps, each in its own folder; all torn down at the end."""
    made: list[MsoApp] = []

    def make(name: str = "app") -> MsoApp:
        folder = tmp_path / name
        folder.mkdir()
        made.append(MsoApp(folder))
        return made[-1]

    try:
        yield make
    finally:
        for app in made:
            app.teardown()


@pytest.fixture(scope="session")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MsoApp]:
    """db, 2 echo replicas and a ticker, READY, shared by the read-only tests."""
    app = MsoApp(tmp_path_factory.mktemp("running"))
    try:
        start_echo_app(app)
        yield app
    finally:
        app.teardown()


def mso_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "mso", *args]


def clean_env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def say(app: MsoApp, text: str) -> None:
    """Make the ticker log `text` (renamed into place, so it never reads half a file)."""
    tmp = app.folder / "control" / "say.tmp"
    tmp.write_text(text + "\n")
    tmp.rename(app.folder / "control" / "say")
