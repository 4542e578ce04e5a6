"""`mso new service` on a real Kubernetes (issue 18): the python-http service, unchanged,
is deployed, answers through the gateway with its probes, and a changed config rolls out
as a canary to promotion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kubernetes.helpers import Lab, Load, Mso, get, wait_for
from tests.e2e.paved import paved_app, set_greeting

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(1800)]
NAMESPACE = "paved-e2e"


@pytest.fixture(scope="module")
def app(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mso]:
    manifest = paved_app(tmp_path_factory.mktemp("k8s-paved") / "paved", "paved", 8080)
    mso = Mso(manifest.parent, lab.kubeconfig, NAMESPACE)
    try:
        yield mso
    finally:
        mso.run("down", check=False)


def answer(app: Mso, path: str) -> dict:  # type: ignore[type-arg]
    host, port = app.json("endpoints")["gateway"].rsplit(":", 1)
    status, body = get(host, int(port), path)
    return dict(json.loads(body)) if status == 200 else {"status_code": status}


def test_new_service_deploys_on_kubernetes(app: Mso) -> None:
    app.run("deploy", timeout=900)
    wait_for("api answering", lambda: answer(app, "/hi").get("message") == "hello from api",
             timeout=180)
    assert answer(app, "/healthz") == {"status": "ok"}
    assert answer(app, "/ready")["status"] == "ready"
    set_greeting(app.folder / "mso.yaml", "hello again")
    host, port = app.json("endpoints")["gateway"].rsplit(":", 1)
    with Load(host, int(port), "/", rate=20) as load:
        result = app.json("deploy")
        assert [c["release"] for c in result["changes"]] == [2], result
        assert app.json("rollout", "status", "api")["strategy"] == "canary"
        wait_for("the canary promoted",
                 lambda: app.json("rollout", "status", "api")["phase"] == "Promoted", timeout=600)
    served = load.stop()
    messages = {json.loads(b)["message"] for b in served.bodies if b.startswith("{")}
    assert messages == {"hello from api", "hello again"}, served.bodies
    wait_for("the new config", lambda: answer(app, "/").get("message") == "hello again",
             timeout=180)
