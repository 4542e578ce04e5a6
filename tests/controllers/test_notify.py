"""Rollout notifications (mso.controllers.notify) behind a fake Poster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from mso.controllers.notify import Notifier, body
from mso.store.db import Store
from mso.store.records import Desired

TOKEN = "s3cr3t-token-value"


class FakePoster:
    """Answers each POST with the next of `answers` (an int status, or an exception)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   timeout: float) -> int:
        self.posts.append((url, body, dict(headers)))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_store(tmp_path: Path, notifications: list[dict[str, Any]]) -> Store:
    store = Store(tmp_path / "s.db")
    model = {"run": ["x"], "rollout": {"strategy": "canary", "notifications": notifications}}
    store.add_release("web", "h1", {"kind": "service", "model": model}, {"tok": TOKEN,
                                                                         "hook": "http://h/x"},
                      "t", "x")
    store.set_desired(Desired("web", "service", 1, 1, 1))
    return store


def run(notifier: Notifier) -> None:
    async def go() -> None:
        notifier.pump()
        await notifier.settle()
    asyncio.run(go())


def outcomes(store: Store) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.data) for e in store.events() if e.type.startswith("notification.")]


async def no_wait(seconds: float) -> None:
    pass


def test_rollout_events_are_posted_in_order_with_secret_headers(tmp_path: Path) -> None:
    store = make_store(tmp_path, [{"url": "http://hooks.example/a", "format": "json",
                                   "headers": {"x-team": "ops"},
                                   "secret_headers": {"authorization": "tok"}}])
    poster = FakePoster()
    notifier = Notifier(store, poster, sleep=no_wait)
    store.add_event("rollout.started", "canary rollout 1 -> 2", "web", data={"to": 1})
    store.add_event("replica.started", "web-1 started", "web")  # not a rollout event
    store.add_event("analysis.fail", "canary error rate ...", "web")
    store.add_event("analysis.provider", "prometheus 1 fail", "web")  # not a verdict
    run(notifier)
    sent = [json.loads(b) for _, b, _ in poster.posts]
    assert [s["type"] for s in sent] == ["rollout.started", "analysis.fail"]
    assert sent[0]["service"] == "web" and sent[0]["data"] == {"to": 1}
    assert poster.posts[0][2]["authorization"] == TOKEN
    assert poster.posts[0][2]["x-team"] == "ops"
    assert [t for t, _ in outcomes(store)] == ["notification.delivered"] * 2
    everything = json.dumps([e.as_json() for e in store.events()])
    assert TOKEN not in everything
    run(notifier)  # nothing new: nothing sent again
    assert len(poster.posts) == 2


def test_retries_with_backoff_then_delivered(tmp_path: Path) -> None:
    store = make_store(tmp_path, [{"url_secret": "hook", "format": "slack", "retries": 3}])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
    poster = FakePoster(500, httpx.ConnectError("refused"), 200)
    notifier = Notifier(store, poster, sleep=sleep)
    store.add_event("rollout.promoted", "canary promoted", "web", data={"to": 1})
    run(notifier)
    assert waits == [1.0, 2.0]
    assert poster.posts[0][0] == "http://h/x"
    assert json.loads(poster.posts[0][1]) == {"text": "web: canary promoted (rollout.promoted)"}
    (kind, data), = outcomes(store)
    assert kind == "notification.delivered" and data["attempts"] == 3
    assert data["target"] == "secret hook"  # the URL from a secret is never shown
    assert "http://h/x" not in json.dumps([e.as_json() for e in store.events()])


def test_gives_up_after_retries_and_does_not_retry_a_refusal(tmp_path: Path) -> None:
    store = make_store(tmp_path, [{"url": "http://u:pw123@hooks.example/a", "retries": 2}])
    poster = FakePoster(503, 503, 503, 400)
    notifier = Notifier(store, poster, sleep=no_wait)
    store.add_event("rollout.rolledback", "rolled back", "web", data={"to": 1})
    store.add_event("rollout.failed", "failed", "web", data={"to": 1})
    run(notifier)
    (k1, d1), (k2, d2) = outcomes(store)
    assert (k1, d1["attempts"], d1["error"]) == ("notification.failed", 3, "HTTP 503")
    assert (k2, d2["attempts"], d2["status"]) == ("notification.failed", 1, 400)
    assert d1["target"] == "http://***@hooks.example/a"
    assert "pw123" not in json.dumps([e.as_json() for e in store.events()])


def test_slack_body() -> None:
    from mso.store.records import Event
    event = Event(7, 1.0, "rollout.paused", "web", None, "step 2: paused", {})
    assert json.loads(body(event, "slack")) == {"text": "web: step 2: paused (rollout.paused)"}
    assert json.loads(body(event, "json"))["id"] == 7


def test_history_before_the_notifier_started_is_not_sent(tmp_path: Path) -> None:
    store = make_store(tmp_path, [{"url": "http://hooks.example/a"}])
    store.add_event("rollout.started", "old", "web", data={"to": 1})
    poster = FakePoster()
    run(Notifier(store, poster, sleep=no_wait))
    assert poster.posts == []
