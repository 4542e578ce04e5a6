"""Rollout notifications (`rollout.notifications`): each rollout event POSTed to webhooks.

One :class:`Notifier` per rollout controller, fed by the event log rather than by the
code paths that write events: every rollout event — `rollout.started`, each step
(`rollout.progressing`), `rollout.paused`, `rollout.promoted`, `rollout.rolledback`,
`rollout.failed`, `rollout.inconclusive`, `rollout.superseded`, `rollout.resumed` — and
every analysis verdict (`analysis.pass`, `analysis.fail`, `analysis.inconclusive`) is
delivered, whichever process wrote it (the controller's tick, or a `mso rollout abort`
handled by the API), so the notifier is the same on every engine.
:meth:`Notifier.pump` reads the events written since its last call (the controller calls
it on every tick) and queues one delivery per event and webhook of the service's
release (the rollout's new release: its manifest says where to notify).

Deliveries to one webhook are sent one at a time, in event order. An attempt that gets
a 2xx answer is delivered; a 5xx, 408, 429, a refused connection or no answer within
``timeout`` is retried after 1 s, 2 s, 4 s... (``retries`` times); any other 4xx is not
retried (the receiver refused that body). The outcome is an event:
`notification.delivered` or `notification.failed`, with the event delivered, the
target, the attempts and the last status or error. Targets are shown redacted: a URL's
userinfo as `***`, a URL taken from a secret (`url_secret`) as `secret NAME`; header
values from `secret_headers` are read from the release's secrets when sent and never
appear in events or logs.

Bodies: ``format: json`` (default) sends ``{id, ts, type, service, message, data}``;
``format: slack`` sends ``{"text": "<service>: <message> (<type>)"}``, which Slack's
incoming webhooks (and Mattermost's, Discord's `/slack` endpoint) accept.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from mso.analysis.providers import credentials, redact_url, scrub
from mso.store.db import Store
from mso.store.records import Event

log = logging.getLogger("mso.controllers.notify")

NOTIFIED_PREFIXES = ("rollout.", "analysis.pass", "analysis.fail", "analysis.inconclusive")
RETRY_STATUSES = frozenset({408, 429})
QUEUE_LIMIT = 1000


class Poster(Protocol):
    """Sends one POST; returns the HTTP status or raises (refused, timed out)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   timeout: float) -> int: ...


class HttpxPoster:
    """The production :class:`Poster` (credentials in the URL sent as basic auth)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   timeout: float) -> int:
        plain, auth = credentials(url)
        async with httpx.AsyncClient(timeout=timeout, auth=auth) as client:
            response = await client.post(plain, content=body, headers=dict(headers))
            return response.status_code


@dataclass(frozen=True)
class Hook:
    """One resolved webhook: where, how, and with which (secret) headers."""

    url: str
    shown: str  # the target as events show it (no secret)
    format: str = "json"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 5.0
    retries: int = 3
    secrets: tuple[str, ...] = ()  # values to scrub from error texts


def notified(event: Event) -> bool:
    return event.type.startswith(NOTIFIED_PREFIXES)


def body(event: Event, fmt: str) -> bytes:
    """The POST body for ``event`` in ``fmt`` (json or slack)."""
    if fmt == "slack":
        text = f"{event.service}: {event.message} ({event.type})"
        return json.dumps({"text": text}).encode()
    return json.dumps({"id": event.id, "ts": event.ts, "type": event.type,
                       "service": event.service, "message": event.message,
                       "data": event.data}, default=str).encode()


def hooks_from_spec(items: list[Mapping[str, Any]], secrets: Mapping[str, str]
                    ) -> tuple[list[Hook], list[str]]:
    """The manifest's validated ``rollout.notifications`` with secrets filled in, and a
    problem per webhook that cannot be sent (a secret missing from the release)."""
    hooks: list[Hook] = []
    problems: list[str] = []
    for number, item in enumerate(items, start=1):
        used: list[str] = []
        url_secret = item.get("url_secret")
        if url_secret:
            url = secrets.get(str(url_secret))
            shown = f"secret {url_secret}"
            if url is None:
                problems.append(f"notification {number}: no secret {url_secret!r}")
                continue
            used.append(url)
        else:
            url = str(item.get("url"))
            shown = redact_url(url)
        headers = {str(k): str(v) for k, v in dict(item.get("headers") or {}).items()}
        missing = [str(n) for n in dict(item.get("secret_headers") or {}).values()
                   if str(n) not in secrets]
        if missing:
            problems.append(f"notification {number} ({shown}): no secret {missing[0]!r}")
            continue
        for header, name in dict(item.get("secret_headers") or {}).items():
            headers[str(header)] = secrets[str(name)]
            used.append(secrets[str(name)])
        headers.setdefault("content-type", "application/json")
        hooks.append(Hook(url, shown, str(item.get("format", "json")), headers,
                          float(item.get("timeout", 5.0)), int(item.get("retries", 3)),
                          tuple(s for s in used if len(s) >= 3)))
    return hooks, problems


class Notifier:
    """Delivers rollout events to the webhooks of each service's manifest (module doc)."""

    def __init__(self, store: Store, poster: Poster | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 backoff: float = 1.0) -> None:
        self.store = store
        self.poster: Poster = poster or HttpxPoster()
        self._sleep = sleep
        self.backoff = backoff
        newest = store.events(limit=1)
        self.cursor = newest[-1].id if newest else 0
        self._queues: dict[str, asyncio.Queue[tuple[Event, Hook]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def pump(self) -> int:
        """Queue the deliveries of the events written since the last call; returns how
        many were queued."""
        events = self.store.events(after_id=self.cursor)
        queued = 0
        for event in events:
            self.cursor = max(self.cursor, event.id)
            if event.service is None or not notified(event):
                continue
            for hook in self._hooks(event):
                queued += self._enqueue(event, hook)
        return queued

    def _hooks(self, event: Event) -> list[Hook]:
        service = str(event.service)
        release = self._release_of(event)
        rel = None if release is None else self.store.release(service, release)
        if rel is None or release is None:
            return []
        items = list(((rel.spec["model"].get("rollout") or {}).get("notifications")) or [])
        if not items:
            return []
        hooks, problems = hooks_from_spec(items, self.store.release_secrets(service, release))
        for problem in problems:
            self.store.add_event("notification.failed", f"{problem}; {event.type} not sent",
                                 service, data={"event_id": event.id, "event": event.type,
                                                "attempts": 0})
        return hooks

    def _release_of(self, event: Event) -> int | None:
        """The release whose manifest says where to notify: the rollout's new release."""
        to = event.data.get("to")
        if isinstance(to, int):
            return to
        raw = self.store.get_rollout(str(event.service))
        if raw is not None and isinstance(raw.get("to_release"), int):
            return int(raw["to_release"])
        want = self.store.desired().get(str(event.service))
        return None if want is None else want.release

    def _enqueue(self, event: Event, hook: Hook) -> int:
        key = f"{event.service}\0{hook.shown}"
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue(QUEUE_LIMIT)
        if queue.full():
            self.store.add_event("notification.failed", f"{hook.shown}: {event.type} dropped: "
                                 f"{QUEUE_LIMIT} notifications already waiting",
                                 event.service, data={"event_id": event.id,
                                                      "event": event.type,
                                                      "target": hook.shown, "attempts": 0})
            return 0
        queue.put_nowait((event, hook))
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = asyncio.ensure_future(self._work(queue))
        return 1

    async def _work(self, queue: asyncio.Queue[tuple[Event, Hook]]) -> None:
        while not queue.empty():
            event, hook = queue.get_nowait()
            try:
                await self.deliver(event, hook)
            except Exception:  # never let one delivery stop the others
                log.exception("notification of event %s to %s failed", event.id, hook.shown)

    async def deliver(self, event: Event, hook: Hook) -> bool:
        """Send ``event`` to ``hook`` with retries; record the outcome as an event."""
        payload = body(event, hook.format)
        attempts = 0
        outcome = ""
        status: int | None = None
        while True:
            attempts += 1
            retry = True
            try:
                status = await self.poster.post(hook.url, payload, hook.headers, hook.timeout)
            except httpx.TimeoutException:
                status, outcome = None, f"no answer within {hook.timeout:g}s"
            except Exception as exc:  # refused, reset, DNS: worth another try
                status, outcome = None, self._scrub(f"unreachable: {exc!r}", hook)
            else:
                if 200 <= status < 300:
                    self.store.add_event(
                        "notification.delivered", f"{hook.shown}: {event.type} delivered "
                        f"(HTTP {status}, attempt {attempts})", event.service,
                        data={"event_id": event.id, "event": event.type,
                              "target": hook.shown, "attempts": attempts, "status": status})
                    return True
                outcome = f"HTTP {status}"
                retry = status >= 500 or status in RETRY_STATUSES
            if not retry or attempts > hook.retries:
                break
            await self._sleep(self.backoff * 2 ** (attempts - 1))
        self.store.add_event(
            "notification.failed", f"{hook.shown}: {event.type} not delivered after "
            f"{attempts} attempt{'s' if attempts > 1 else ''}: {outcome}", event.service,
            data={"event_id": event.id, "event": event.type, "target": hook.shown,
                  "attempts": attempts, "status": status, "error": outcome})
        return False

    @staticmethod
    def _scrub(text: str, hook: Hook) -> str:
        text = scrub(text, hook.url)
        for secret in hook.secrets:
            text = text.replace(secret, "***")
        return text

    async def settle(self) -> None:
        """Wait for the queued deliveries (tests; the controller never waits)."""
        while any(not w.done() for w in self._workers.values()):
            await asyncio.gather(*[w for w in self._workers.values() if not w.done()])

    def close(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        self._workers.clear()
