"""A command's hold on a remote engine's store: "don't act on desired state yet".

On Swarm and Kubernetes a background controller reconciles from the same store the CLI
writes. `mso deploy` records a new desired release and only then begins its rollout; a
controller tick in between would see the release without its rollout and start the
wrong kind of update (on Swarm an ordinary handoff, on Kubernetes a stable Deployment
moved to the new release), which the rollout then has to undo. Commands that record a
release and begin its rollout do both under `hold`, and controllers skip their tick while
`held`. A command that died holding it releases it by age.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from mso.store.db import Store

HOLD_KEY = "hold"
HOLD_TTL = 120.0


@contextmanager
def hold(store: Store) -> Iterator[None]:
    token = {"ts": time.time(), "id": uuid.uuid4().hex, "released": False}
    store.set_meta(HOLD_KEY, json.dumps(token))
    try:
        yield
    finally:
        if store.get_meta(HOLD_KEY) == json.dumps(token):  # not a later command's hold
            store.set_meta(HOLD_KEY, json.dumps({**token, "released": True}))


def quiet(store: Store, now: float) -> str | None:
    """None while a command holds the store; otherwise a token naming the last hold.

    A controller reads it before it reads desired state and again before it acts: an
    unchanged token means no command began recording anything in between, so what it
    read is consistent (a release and its rollout both or neither)."""
    raw = store.get_meta(HOLD_KEY)
    if raw is None:
        return ""
    try:
        token = json.loads(raw)
        since, released = float(token["ts"]), bool(token.get("released"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw  # garbled: never blocks the controllers
    return raw if released or now - since >= HOLD_TTL else None


def held(store: Store, now: float) -> bool:
    return quiet(store, now) is None
