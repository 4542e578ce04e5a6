"""Blue/green on a real Kubernetes 1.20 cluster: preview port, promotion, abort, rollback,
and the retirement of the previous release, each under steady traffic.

The tests share one deployed app and run in file order (each builds on the last).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mso.engines.kubernetes.kube import Kube
from tests.e2e.kubernetes.helpers import ROOT, Lab, Load, Mso, get, wait_for

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(3600)]
NAMESPACE = "bluegreen-e2e"
APP = Path(__file__).parent / "bluegreen_app"
PREVIEW_PORT = 8081


def edit(folder: Path, version: str, keep_previous: str | None = None) -> None:
    path = folder / "mso.yaml"
    data = yaml.safe_load(path.read_text())
    echo = data["services"]["echo"]
    echo["env"] = {"ECHO_VERSION": version}
    if keep_previous is not None:
        echo["rollout"]["keep_previous"] = keep_previous
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def app(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mso]:
    folder = tmp_path_factory.mktemp("k8s-bg") / "bluegreen"
    shutil.copytree(APP, folder, ignore=shutil.ignore_patterns(".mso", "__pycache__"))
    shutil.copy(ROOT / "bench" / "kubernetes" / "echo.py", folder / "echo.py")  # ECHO_VERSION
    mso = Mso(folder, lab.kubeconfig, NAMESPACE)
    try:
        yield mso
    finally:
        mso.run("down", check=False)


def kube(mso: Mso) -> Kube:
    return Kube(str(mso.kubeconfig), None)


def gateway(mso: Mso) -> tuple[str, int]:
    host, port = mso.json("endpoints")["gateway"].rsplit(":", 1)
    return host, int(port)


def versions(host: str, port: int, n: int = 20) -> set[str]:
    """The versions answering `n` fresh GETs (each on a new connection)."""
    seen = set()
    for _ in range(n):
        try:
            status, body = get(host, port, "/")
        except OSError as exc:
            seen.add(f"error: {exc}")
            continue
        seen.add(body.strip() if status == 200 else f"HTTP {status}")
    return seen


def wait_only(host: str, port: int, version: str, timeout: float = 120.0) -> None:
    """Poll until every GET answers `version`; a timeout names what answered last."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = versions(host, port)
        if seen == {version}:
            return
        time.sleep(0.5)
    raise AssertionError(f"after {timeout:g}s port {port} still answers {sorted(seen)}, "
                         f"not only {version}")


def phase(mso: Mso) -> str:
    return str(mso.json("rollout", "status", "echo")["phase"])


def deploy_preview(app: Mso, version: str, keep_previous: str | None = None) -> None:
    """Deploy `version` and wait until its preview is ready for promotion."""
    edit(app.folder, version, keep_previous)
    app.run("deploy", timeout=600)
    wait_for(f"the {version} preview", lambda: phase(app) == "Paused", timeout=180)


def promote(app: Mso, version: str) -> tuple[str, int]:
    """Promote the ready preview and wait until the main port answers only `version`."""
    host, port = gateway(app)
    app.run("rollout", "promote", "echo")
    wait_only(host, port, version)
    return host, port


def deployment(mso: Mso, name: str) -> dict[str, object] | None:
    return kube(mso).get("apps/v1", "Deployment", name, NAMESPACE)


def assert_no_failures(load: Load, at_least: int) -> None:
    result = load.stop()
    assert result.ok >= at_least and result.failures == [], (result.failures[:10],
                                                             result.statuses)


def test_deploy_v1_exposes_the_preview_port_on_the_gateway(app: Mso) -> None:
    app.run("deploy", timeout=600)
    host, port = gateway(app)
    wait_for("v1 answers", lambda: versions(host, port, 5) == {"v1"}, timeout=60)
    service = kube(app).get("v1", "Service", "mso-gateway", NAMESPACE)
    assert service is not None
    assert PREVIEW_PORT in {p["port"] for p in service["spec"]["ports"]}


def test_the_preview_port_answers_the_new_release_and_the_main_port_the_old(app: Mso) -> None:
    deploy_preview(app, "v2")
    host, port = gateway(app)
    assert versions(host, port) == {"v1"}
    wait_only(host, PREVIEW_PORT, "v2")
    assert versions(host, port) == {"v1"}


def test_promotion_switches_all_traffic_without_failed_requests(app: Mso) -> None:
    host, port = gateway(app)
    with Load(host, port, "/", rate=60, ok=lambda s: s == 200) as load:
        time.sleep(1)
        app.run("rollout", "promote", "echo")
        wait_only(host, port, "v2")
        time.sleep(2)
    assert_no_failures(load, 100)
    previous = deployment(app, "echo")  # the old release stays up for keep_previous
    assert previous is not None and previous["metadata"]["labels"]["mso.dev/release"] == "1"
    assert phase(app) == "Progressing"
    print(f"\nblue/green promotion: {load.result.ok} ok, {len(load.result.failures)} failed")


def test_abort_within_keep_previous_switches_back_without_failed_requests(app: Mso) -> None:
    host, port = gateway(app)
    with Load(host, port, "/", rate=60, ok=lambda s: s == 200) as load:
        time.sleep(1)
        app.run("rollout", "abort", "echo")
        wait_only(host, port, "v1")
        wait_for("the preview Deployment deleted",
                 lambda: deployment(app, "echo-preview") is None, timeout=60)
        time.sleep(3)
    assert_no_failures(load, 100)
    assert phase(app) == "RolledBack"


def test_rollback_within_keep_previous_returns_to_v1_without_failed_requests(app: Mso) -> None:
    deploy_preview(app, "v3")
    host, port = promote(app, "v3")
    with Load(host, port, "/", rate=60, ok=lambda s: s == 200) as load:
        time.sleep(1)
        app.run("rollback", "echo")
        wait_only(host, port, "v1")
        wait_for("the rollback rolled out", lambda: phase(app) == "Promoted", timeout=180)
        wait_for("the preview Deployment deleted",
                 lambda: deployment(app, "echo-preview") is None, timeout=60)
        time.sleep(2)
    assert_no_failures(load, 100)
    assert versions(host, port) == {"v1"}


def test_the_previous_release_is_retired_after_keep_previous(app: Mso) -> None:
    deploy_preview(app, "v4", keep_previous="5s")
    host, port = gateway(app)
    new = max(r["number"] for r in app.json("releases", "echo"))
    with Load(host, port, "/", rate=60, ok=lambda s: s == 200) as load:
        app.run("rollout", "promote", "echo")
        wait_for("the rollout promoted", lambda: phase(app) == "Promoted", timeout=120)
        wait_for("the preview Deployment retired",
                 lambda: deployment(app, "echo-preview") is None, timeout=180)
        stable = deployment(app, "echo")
        assert stable is not None and stable["metadata"]["labels"]["mso.dev/release"] == str(new)
        wait_for("only stable v4 pods", lambda: {(r["subset"], r["release"]) for r in
                                                 app.json("ps")["replicas"]
                                                 if r["state"] != "STOPPING"}
                 == {("stable", new)}, timeout=120)
        time.sleep(2)
    assert_no_failures(load, 100)
    assert versions(host, port) == {"v4"}
    outcomes = {r["number"]: r["outcome"] for r in app.json("releases", "echo")}
    assert outcomes[new] == "promoted"


def test_a_deploy_within_keep_previous_keeps_serving_the_promoted_release(app: Mso) -> None:
    # v5 promoted, v4 kept as previous in `echo`; then v6 is deployed. `echo` must roll to
    # v5 while `echo-preview` still serves it, and only then take the v6 preview: the main
    # port answers v5 throughout, never the kept v4 and never the v6 preview.
    deploy_preview(app, "v5", keep_previous="10m")
    host, port = promote(app, "v5")
    with Load(host, port, "/", rate=60, ok=lambda s: s == 200) as load:
        time.sleep(1)
        edit(app.folder, "v6")
        app.run("deploy", timeout=600)
        wait_for("the v6 preview", lambda: phase(app) == "Paused", timeout=240)
        wait_only(host, PREVIEW_PORT, "v6")
        time.sleep(2)
    assert set(load.result.bodies) == {"v5"}, load.result.bodies
    assert_no_failures(load, 100)
    assert versions(host, port) == {"v5"}
    releases = app.json("releases", "echo")
    assert [r["outcome"] for r in releases][-2:] == ["promoted", "progressing"]
