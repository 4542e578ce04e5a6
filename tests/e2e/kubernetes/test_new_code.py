"""New code with an unchanged manifest on a real Kubernetes: a new numbered release,
rolled out with the service's canary, and not made again by the same code (issue 14)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.kubernetes.helpers import ROOT, Lab, Load, Mso, get, wait_for

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(1800)]
NAMESPACE = "newcode-e2e"
APP = Path(__file__).parent / "bluegreen_app"


@pytest.fixture(scope="module")
def app(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mso]:
    folder = tmp_path_factory.mktemp("k8s-newcode") / "newcode"
    shutil.copytree(APP, folder, ignore=shutil.ignore_patterns(".mso", "__pycache__"))
    shutil.copy(ROOT / "bench" / "kubernetes" / "echo.py", folder / "echo.py")
    data = yaml.safe_load((folder / "mso.yaml").read_text())
    data["app"] = "newcode"
    data["services"]["echo"]["rollout"] = {
        "strategy": "canary", "progress_deadline": "3m",
        "steps": [{"set_weight": 50}, {"analysis": {"duration": "5s"}}],
        "analysis": {"interval": "500ms", "min_samples": 5}}
    (folder / "mso.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    mso = Mso(folder, lab.kubeconfig, NAMESPACE)
    try:
        yield mso
    finally:
        mso.run("down", check=False)


def answers(mso: Mso) -> set[str]:
    host, port = mso.json("endpoints")["gateway"].rsplit(":", 1)
    seen = set()
    for _ in range(6):
        try:
            status, body = get(host, int(port), "/")
            seen.add(body.strip() if status == 200 else f"HTTP {status}")
        except OSError as exc:
            seen.add(f"error: {exc}")
    return seen


def test_new_code_with_the_same_manifest_is_a_canary_release(app: Mso) -> None:
    app.run("deploy", timeout=600)
    wait_for("v1 answers", lambda: answers(app) == {"v1"}, timeout=120)
    code = app.folder / "echo.py"
    code.write_text(code.read_text().replace(
        'VERSION = os.environ.get("ECHO_VERSION", "v1").encode()',
        'VERSION = b"new-" + os.environ.get("ECHO_VERSION", "v1").encode()'))
    host, port = app.json("endpoints")["gateway"].rsplit(":", 1)
    with Load(host, int(port), "/", rate=40) as load:  # the canary's analysis needs traffic
        result = app.json("deploy")
        assert [(c["release"], c["created"]) for c in result["changes"]] == [(2, True)], \
            result
        assert result["changes"][0]["change"].startswith("new image "), result
        status = app.json("rollout", "status", "echo")
        assert status["strategy"] == "canary", status
        wait_for("the canary promoted",
                 lambda: app.json("rollout", "status", "echo")["phase"] == "Promoted",
                 timeout=300)
    served = load.stop()
    assert {"v1", "new-v1"} <= set(served.bodies), served.bodies  # both ran side by side
    wait_for("the new code answers", lambda: answers(app) == {"new-v1"}, timeout=120)
    again = app.json("deploy")
    assert [c["created"] for c in again["changes"]] == [False], again
    assert [r["number"] for r in app.json("releases", "echo")] == [1, 2]
