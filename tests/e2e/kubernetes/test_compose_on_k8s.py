"""Issue 17 on Kubernetes: the compose app of tests/e2e/test_compose_containers.py (a
`build:` web service and Debian's redis-server in a locally built image; the lab has no
registry: its kubelet runs on this machine's dockerd, so mso's locally built images are
used as they are, `imagePullPolicy: Never`), deployed unchanged from its compose file: the
web answers through the gateway counting in the Redis, and a new web image is a new
release that answers without a failed request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.compose_app import hits, write_compose_app
from tests.e2e.kubernetes.helpers import Lab, Load, Mso, get, wait_for

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(3600)]
NAMESPACE = "compose-e2e"


@pytest.fixture(scope="module")
def app(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mso]:
    from mso.engines.images import ensure_base_image
    folder = tmp_path_factory.mktemp("k8s-compose") / "composek8s"
    write_compose_app(folder, ensure_base_image(), 8080)
    mso = Mso(folder, lab.kubeconfig, NAMESPACE, manifest="compose.yaml")
    try:
        yield mso
    finally:
        mso.run("down", check=False)


def test_the_imported_compose_app_runs_on_kubernetes(app: Mso) -> None:
    app.run("deploy", timeout=900)
    host, port = app.json("endpoints")["gateway"].rsplit(":", 1)

    def answer() -> str | None:
        status, body = get(host, int(port), "/")
        return body if status == 200 else None

    count, version = hits(wait_for("web through the gateway", answer, timeout=180))
    assert version == "v1"
    assert hits(answer() or "")[0] > count  # one Redis behind both replicas
    (app.folder / "web" / "VERSION").write_text("v2\n")
    with Load(host, int(port), "/", rate=20, ok=lambda s: s == 200) as load:
        result = app.json("deploy")
        assert [(c["service"], c["release"]) for c in result["changes"]
                if c["created"]] == [("web", 2)], result
        wait_for("v2 answering", lambda: (answer() or "").endswith(" v2"), timeout=300)
    served = load.stop()
    assert served.failures == [], served.failures[:5]
    assert {b.split()[-1] for b in served.bodies} <= {"v1", "v2"}, served.bodies
    wait_for("only release 2 of web left (redis untouched)", lambda: {
        (r["service"], r["release"]) for r in app.json("ps")["replicas"]} == {
        ("web", 2), ("redis", 1)}, timeout=180)
