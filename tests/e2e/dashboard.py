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
