"""Issue 18's open end on the embedded engine: new code with an unchanged manifest is a new
numbered release (mso.releases.sources), rolled out with the service's strategy, so a
canary judges the new code on the laptop as on Swarm and Kubernetes. Only the service
whose watched files changed gets one; a rollback to code that is no longer on disk is
refused, and the same code deployed twice is one release."""

from __future__ import annotations

import pytest

from tests.e2e.harness import APPS, MsoApp, wait_for
from tests.e2e.load import Load

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MANIFEST = f"""
app: newcode
gateway: {{port: GATEWAY_PORT}}
routes:
  - {{path: /other, service: other}}
  - {{path: /, service: api}}
services:
  api:
    run: [PYTHON, {APPS / "watched.py"}]
    replicas: 2
    ports: {{http: 8000}}
    env: {{CONTENT_FILE: api/content.txt}}
    health:
      readiness: {{http: /, period: 200ms}}
    watch: [api/]
    rollout:
      strategy: canary
      progress_deadline: 60s
      steps:
        - set_weight: 50
        - analysis: {{duration: 2s}}
      analysis: {{interval: 500ms, min_samples: 20, max_error_rate_increase: 0.01}}
  other:
    run: [PYTHON, {APPS / "watched.py"}]
    ports: {{http: 8000}}
    env: {{CONTENT_FILE: other/content.txt}}
    watch: [other/]
"""


def _code(app: MsoApp, service: str, text: str) -> None:
    (app.folder / service).mkdir(exist_ok=True)
    (app.folder / service / "content.txt").write_text(text + "\n")


def _releases(app: MsoApp, service: str) -> list[tuple[int, str]]:
    return [(r["number"], r["change"]) for r in app.json("releases", service)]


def test_new_code_is_a_canary_release_and_rollback_sticks(app: MsoApp) -> None:
    _code(app, "api", "v1")
    _code(app, "other", "o1")
    app.write(MANIFEST)
    app.up()
    assert app.get("/")[1] == "v1"
    unchanged = app.json("deploy")
    assert [c["created"] for c in unchanged["changes"]] == [False, False], unchanged

    _code(app, "api", "v2")
    (app.folder / "api" / "notes.swp").write_text("editor file: never code\n")
    with Load(app.gateway_port, rate=100) as load:
        result = app.json("deploy")
        created = [(c["service"], c["release"], c["change"]) for c in result["changes"]
                   if c["created"]]
        assert [(s, r) for s, r, _ in created] == [("api", 2)], result
        assert created[0][2].startswith("new code src:"), created
        assert app.json("rollout", "status", "api")["strategy"] == "canary"
        wait_for(lambda: app.json("rollout", "status", "api")["phase"] == "Promoted",
                 timeout=90, message="the canary of the new code promoted")
    served = load.stop()
    assert served.failures == [], served.failures[:5]
    assert set(served.bodies) == {"v1", "v2"}, served.bodies  # both ran side by side
    wait_for(lambda: {app.get("/")[1] for _ in range(6)} == {"v2"}, message="v2 only")
    assert app.get("/other")[1] == "o1"
    assert [r["release"] for r in app.replicas("other")] == [1]

    # A `run:` service runs the files on disk: a rollback to other code is refused (it
    # would restart on v2 and call it release 1); restoring the files is new code again.
    refused = app.cli("rollback", "api", check=False)
    assert refused.returncode != 0
    assert "release 1 of api ran code src:" in refused.stderr, refused.stderr
    assert "restore the files" in refused.stderr
    _code(app, "api", "v1")
    restored = app.json("deploy")
    assert [(c["service"], c["release"]) for c in restored["changes"] if c["created"]] \
        == [("api", 3)], restored
    app.cli("rollout", "promote", "api")
    wait_for(lambda: {app.get("/")[1] for _ in range(6)} == {"v1"}, timeout=60,
             message="v1 again")
    again = app.json("deploy")
    assert [c["created"] for c in again["changes"]] == [False, False], again
    assert [n for n, _ in _releases(app, "api")] == [1, 2, 3]
