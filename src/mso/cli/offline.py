"""The read-only commands when no daemon runs: straight from `.mso/`.

After `mso down`, or after the daemon crashed, everything `ps`, `logs`, `events`,
`releases` and `rollout status` show is still on disk: the state database (opened
read-only, so reading can never change what the next daemon finds) and the log store.
Answers have the same JSON shapes as the API's, so `-o json` scripts work either way;
`ps` marks its answer as the last known state.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mso.api import views
from mso.cli.client import CliError
from mso.controllers.rollouts import stored_status
from mso.engines.local.logstore import LogStore, Record
from mso.paths import StatePaths
from mso.store.db import Store


@contextmanager
def opened(paths: StatePaths) -> Iterator[Store]:
    try:
        store = Store.open_readonly(paths.db)
    except sqlite3.Error as exc:
        raise CliError(f"cannot read mso's state in {paths.db}: {exc}") from exc
    try:
        yield store
    finally:
        store.close()


def ps(paths: StatePaths) -> dict[str, Any]:
    with opened(paths) as store:
        records = store.replicas()
        app = ""
        raw = store.get_meta("app_config")
        if raw:
            app = str(json.loads(raw).get("app", ""))
        # The newest start or stop among the last events (an `api.call` event of the
        # `down` itself, or a late replica event, may come after the stop).
        lifecycle = [e for e in store.events(0, None, 50)
                     if e.type in ("daemon.started", "daemon.stopped")]
        stopped = lifecycle[-1:] if lifecycle and lifecycle[-1].type == "daemon.stopped" \
            else []
    rows = []
    for rec in records:
        port = next(iter(rec.ports.values()), None)
        rows.append({"service": rec.service, "replica": rec.id, "release": rec.release,
                     "subset": rec.subset, "state": rec.state, "pid": None,
                     "address": f"127.0.0.1:{port}" if port else None, "ports": rec.ports,
                     "restarts": rec.restarts, "spec_hash": rec.spec_hash[:12],
                     "reason": rec.reason, "problem": None, "draining": False,
                     "resources": {}, "updated": rec.updated})
    if stopped:
        note = f"mso is not running: stopped by `mso down` at {_when(stopped[0].ts)}"
    elif rows:
        note = (f"mso is not running (its daemon is gone): last known state, recorded at "
                f"{_when(max(rec.updated for rec in records))}; `mso up` adopts what "
                "survived")
    else:
        note = "mso is not running"
    return {"app": app, "replicas": rows, "jobs": {}, "waiting": {}, "offline": note}


def events(paths: StatePaths, service: str | None, tail: int,
           after: int = 0) -> list[dict[str, Any]]:
    with opened(paths) as store:
        return [e.as_json() for e in store.events(after, service, tail)]


def releases(paths: StatePaths, service: str) -> list[dict[str, Any]]:
    with opened(paths) as store:
        found = views.releases(store, service)
    if not found:
        raise CliError(f"no such service: {service}")
    return found


def rollout_status(paths: StatePaths, service: str) -> dict[str, Any]:
    with opened(paths) as store:
        try:
            return stored_status(store, service)
        except KeyError:
            raise CliError(f"no such service: {service}") from None


def logs(paths: StatePaths, service: str | None, since: float | None,
         tail: int | None) -> list[Record]:
    if not paths.logs_dir.is_dir():
        return []
    return LogStore(paths.logs_dir).read(service=service, since=since, tail=tail)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
