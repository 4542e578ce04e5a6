"""Shared by the dashboard's end-to-end tests: an app with a secret and a canary that
pauses for a human, and an HTTP session that logs in the way a browser does."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx

from tests.e2e.harness import MsoApp

SECRET = "s3cr3t-dashboard-4d2c9e"
SECRET_2 = "s3cr3t-dashboard-rotated-81b7"

MANIFEST = """
app: dash
gateway: {port: GATEWAY_PORT}
routes: [{path: /, service: echo}]
services:
  echo:
    run: [PYTHON, ECHO_APP]
    replicas: 2
    ports: {http: 8000}
    env: {GREETING: "@VERSION@"}
    secrets:
      token: {file: ./token.txt}
    health:
      readiness: {http: /ready, period: 200ms, timeout: 3s, failure_threshold: 2}
    stop: {grace: 5s}
    rollout:
      strategy: canary
      progress_deadline: 10m
      steps:
        - set_weight: 30
        - pause: {}
      analysis: {interval: 500ms, min_samples: 20}
"""


def write(app: MsoApp, version: str = "v1", secret: str = SECRET) -> None:
    (app.folder / "token.txt").write_text(secret)
    app.write(MANIFEST.replace("@VERSION@", version))


def dashboard_url(app: MsoApp, *args: str) -> str:
    """`mso dashboard --no-open`: its one line, the login URL."""
    out = app.cli("dashboard", "--no-open", *args).stdout.strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/login\?token=[\w-]+", out), out
    return out


def base_of(url: str) -> str:
    return url.split("/login", 1)[0]


def logged_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=base_of(url), timeout=10.0)
    response = client.get(url.replace(base_of(url), ""))
    assert response.status_code == 303, response.text
    return client


def csrf_of(html: str) -> str:
    match = re.search(r'data-csrf="([0-9a-f]{64})"', html)
    assert match, html[:500]
    return match.group(1)


def sse_events(client: httpx.Client, path: str, timeout: float = 30.0) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs of an SSE stream as they arrive, for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    with client.stream("GET", path, timeout=httpx.Timeout(10.0, read=timeout)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: nothing matched within {timeout}s")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield event, json.loads(line[6:])


class RemoteDashboard:
    """`mso dashboard --no-open` for a Swarm or Kubernetes app: it serves in the
    foreground, so it runs as a process whose first stdout line is the login URL."""

    def __init__(self, argv: list[str], cwd: str | None = None) -> None:
        import subprocess
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=cwd)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()  # ends with the process, at worst
        if not re.fullmatch(r"http://127\.0\.0\.1:\d+/login\?token=[\w-]+", self.url):
            self.stop()
            raise AssertionError(f"no login URL: {self.url!r}; "
                                 f"stderr: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def stop(self) -> int:
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def __enter__(self) -> RemoteDashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_remote_dashboard(dash: RemoteDashboard, service: str, services: set[str],
                           traffic: Any) -> None:
    """What a user of a Swarm/Kubernetes app sees: a wrong token refused, every page with
    the engine's replicas and releases, the event log, the gateway's traffic reaching the
    charts (`traffic()` sends some requests through the gateway), and a forged POST
    refused before anything is touched."""
    base = base_of(dash.url)
    assert httpx.get(f"{base}/login?token=wrong", timeout=10).status_code == 401
    assert httpx.get(f"{base}/", timeout=10).status_code == 401
    client = logged_in(dash.url)
    try:
        home = client.get("/")
        assert home.status_code == 200, home.text
        for name in services:
            assert f'href="/services/{name}"' in home.text, name
        page = client.get(f"/services/{service}")
        assert page.status_code == 200, page.text
        assert "READY" in page.text  # the engine's replicas, in `mso ps`'s states
        assert 'data-release="1"' in page.text, page.text[:2000]  # from mso's state
        assert client.get("/services/no-such-service").status_code == 404
        assert client.get(f"/services/{service}/rollout").status_code == 200
        events = client.get("/events")
        assert events.status_code == 200 and "dashboard.started" in events.text
        csrf = csrf_of(home.text)
        forged = client.post(f"/services/{service}/rollout/pause", data={"csrf": "0" * 64})
        assert forged.status_code == 403
        # The gateway's counters reach the rollout page's live charts.
        seen = 0
        for event, payload in sse_events(client, f"/sse/services/{service}/rollout", 60):
            if event == "points":
                seen += sum(p["requests"] for points in payload.values() for p in points)
                if seen >= 5:
                    break
            traffic()
        assert seen >= 5
        # An action with the session's CSRF token is carried out (no rollout runs: the
        # controller says so, shown on the page, and nothing changes).
        done = client.post(f"/services/{service}/rollout/pause", data={"csrf": csrf})
        assert done.status_code == 303, done.text
    finally:
        client.close()
