"""The rollout controller with providers: a canary a Prometheus query fails is rolled back
with the provider's reason in events and status; one whose query has no data is held,
never promoted. The Prometheus here is a loopback HTTP server answering the instant-query
API (the real one is in tests/e2e/test_providers.py and the conformance scenario)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from mso.controllers.rollouts import Member, RolloutController
from mso.store.db import Store
from mso.store.records import Desired
from tests.analysis.test_run import snapshot


class FakePrometheus:
    """Answers /api/v1/query with `values[subset]` (a list of sample strings)."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = {"stable": ["0"], "canary": ["0"]}
        self.queries: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)["query"][0]
                owner.queries.append(query)
                subset = "canary" if "canary" in query else "stable"
                result = [{"metric": {}, "value": [time.time(), v]}
                          for v in owner.values[subset]]
                body = json.dumps({"status": "success", "data": {
                    "resultType": "vector", "result": result}}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.close()


class Host:
    """A RolloutHost whose proxy sees healthy traffic on both subsets."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.requests = 0

    def members(self, service: str) -> list[Member]:
        return [Member("stable", 1, True), Member("canary", 2, True)]

    async def metrics(self) -> dict[str, Any]:
        self.requests += 100
        return snapshot(self.requests)

    def relabel(self, service: str, mapping: dict[str, str]) -> None:
        pass

    def wake(self) -> None:
        pass


def controller(tmp_path: Path, port: int, deadline: str = "60") -> RolloutController:
    model = {"ports": {"http": 8000}, "rollout": {
        "strategy": "canary", "progress_deadline": float(deadline),
        "steps": [{"set_weight": 50}, {"analysis": {"duration": 0.3}}],
        "analysis": {"interval": 0.05, "min_samples": 10, "providers": [{"prometheus": {
            "url": f"http://admin:hunter22@127.0.0.1:{port}",
            "query": 'err{subset="{{subset}}",release="{{release}}"}', "max": 0.05}}]}}}
    store = Store(tmp_path / "s.db")
    for n in (1, 2):
        store.add_release("web", f"h{n}", {"kind": "service", "model": model}, {}, "t", "x")
    store.set_desired(Desired("web", "service", 2, 2, 2))
    made = RolloutController(Host(store))
    made.begin("web", 1, 2)
    return made


def tick_until(made: RolloutController, done: Callable[[dict[str, Any]], bool],
               timeout: float = 20.0) -> dict[str, Any]:
    async def loop() -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await made.tick()
            status = made.status("web")
            if done(status):
                return status
            await asyncio.sleep(0.02)  # let the providers' samples run
        raise AssertionError(f"timed out; last status {made.status('web')}")
    return asyncio.run(loop())


def test_a_canary_failing_a_prometheus_query_is_rolled_back_with_its_reason(
        tmp_path: Path, prometheus: FakePrometheus) -> None:
    prometheus.values = {"stable": ["0"], "canary": ["0.3"]}
    made = controller(tmp_path, prometheus.port)
    # (Held Inconclusive first when the 0.3 s analysis ends before the first sample.)
    status = tick_until(made, lambda s: s["phase"] not in ("Progressing", "Inconclusive"))
    assert status["phase"] == "RolledBack", status
    assert status["reason"] == ('analysis failed: prometheus 1: err{subset="canary",'
                                'release="2"}: canary 0.3 > max 0.05 (stable 0)')
    shown = {p["name"]: p for p in status["analysis"]["providers"]}
    assert (shown["prometheus 1"]["phase"], shown["prometheus 1"]["value"],
            shown["prometheus 1"]["stable_value"]) == ("fail", 0.3, 0.0)
    assert set(prometheus.queries) == {'err{subset="stable",release="1"}',
                                       'err{subset="canary",release="2"}'}
    events = made.d.store.events()
    provider_events = [e for e in events if e.type == "analysis.provider"]
    assert provider_events and provider_events[-1].message.startswith("prometheus 1 fail: ")
    assert any(e.type == "rollout.rolledback" and "prometheus 1" in e.message for e in events)
    text = json.dumps(status) + json.dumps([e.message for e in events]) + \
        json.dumps([e.data for e in events])
    assert "hunter22" not in text and "admin" not in text
    assert status["thresholds"]["providers"][0]["prometheus"]["url"].startswith(
        "http://***@127.0.0.1:")


def test_a_query_without_data_holds_the_canary_until_the_deadline_fails_it(
        tmp_path: Path, prometheus: FakePrometheus) -> None:
    prometheus.values = {"stable": ["0"], "canary": []}
    made = controller(tmp_path, prometheus.port, deadline="3")
    held = tick_until(made, lambda s: s["phase"] == "Inconclusive" and "no data" in s["reason"])
    assert "prometheus 1: query returned no data" in held["reason"], held
    assert any("prometheus 1 (http://***@127.0.0.1" in way for way in held["next"]), held
    ended = tick_until(made, lambda s: s["phase"] not in ("Inconclusive", "Progressing"))
    assert ended["phase"] == "Failed" and "progress_deadline" in ended["reason"], ended
    assert made.d.store.desired()["web"].release == 1


def test_a_good_canary_is_promoted_once_prometheus_agrees(
        tmp_path: Path, prometheus: FakePrometheus) -> None:
    made = controller(tmp_path, prometheus.port)
    status = tick_until(made, lambda s: s["promoting"] or not s["phase"] in (
        "Progressing", "Inconclusive"))
    assert status["promoting"], status
    passed = [e for e in made.d.store.events() if "analysis passed" in e.message]
    assert passed and "prometheus 1: " in passed[0].message


def test_the_analysis_reads_and_judges_every_interval(tmp_path: Path) -> None:
    """`analysis.interval: 5s`: the rollout still ticks every second (steps, pauses),
    but the proxy is read (and the providers sampled) once per 5 s of the clock; the
    first poll after the analysis duration ends is taken at once."""
    model = {"ports": {"http": 8000}, "rollout": {
        "strategy": "canary", "steps": [{"set_weight": 50}, {"analysis": {"duration": 12}}],
        "analysis": {"interval": 5, "min_samples": 10}}}
    store = Store(tmp_path / "s.db")
    for n in (1, 2):
        store.add_release("web", f"h{n}", {"kind": "service", "model": model}, {}, "t", "x")
    store.set_desired(Desired("web", "service", 2, 2, 2))
    now = [1000.0]
    host = Host(store)
    made = RolloutController(host, clock=lambda: now[0])
    made.begin("web", 1, 2)
    polled: list[float] = []

    async def run() -> None:
        for _ in range(30):
            before = host.requests
            await made.tick()
            if host.requests != before:
                polled.append(now[0])
            now[0] += 1.0
    asyncio.run(run())
    # Polls every 5 s, and the analysis step's final poll as soon as its 12 s are over.
    gaps = [b - a for a, b in zip(polled, polled[1:])]
    assert len(polled) == 4 and gaps[:-1] == [5.0, 5.0] and 0 < gaps[-1] < 5, polled
    assert made.status("web")["promoting"] or made.status("web")["phase"] == "Promoted"
