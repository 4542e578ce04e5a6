"""`mso events` on the remote engines: an app's event log, read from that engine's store.

The Swarm and Kubernetes controllers record every decision in their store (releases,
rollout phases, analysis verdicts with their numbers, objects created, updated, drained and
removed) with the local daemon's schema, so the records have the local engine's JSON shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from mso.store.db import Store

FOLLOW_POLL = 0.5


def read_events(
    db: Path, service: str | None, follow: bool, tail: int,
    sleep: Callable[[float], None] = time.sleep,
) -> Generator[dict[str, Any], None, None]:
    """The last `tail` events (oldest first); with `follow`, then every new one as it
    is recorded, until the caller stops iterating."""
    store = Store(db)
    try:
        batch = store.events(0, service, tail) if tail > 0 else []
        last = batch[-1].id if batch else _newest_id(store)
        yield from (e.as_json() for e in batch)
        while follow:
            batch = store.events(last, service, 1000)
            for event in batch:
                last = event.id
                yield event.as_json()
            if not batch:
                sleep(FOLLOW_POLL)
    finally:
        store.close()


def _newest_id(store: Store) -> int:
    newest = store.events(0, None, 1)
    return newest[-1].id if newest else 0
