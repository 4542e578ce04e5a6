"""Shared fixtures for tests that read an engine store's event log."""
from __future__ import annotations

import sys
from pathlib import Path

from mso.store.db import Store

MSO = str(Path(sys.executable).with_name("mso"))
#: A one-service manifest, enough for `mso events --engine ...` to find the app.
MANIFEST = """app: evt
services:
  web:
    run: [python3, -m, http.server, "8000"]
    ports: {http: 8000}
"""


def seed_events(db: Path) -> Path:
    """Three events: two of service web (one with analysis numbers), one app-wide."""
    store = Store(db)
    store.add_event("release.created", "release 1: initial release", "web",
                    data={"release": 1})
    store.add_event("analysis.fail", "canary errors", "web",
                    data={"verdict": "fail", "canary": {"requests": 80, "errors": 9}})
    store.add_event("swarm.gateway", "gateway created on port 8080")
    store.close()
    return db
