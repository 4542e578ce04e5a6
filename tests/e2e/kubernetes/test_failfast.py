"""Failing fast on a real Kubernetes 1.20 cluster: a service that crashes at start ends
`mso deploy` with the pod, the reason and its last log lines (those of the container that
already exited), and `mso ps` carries the problem."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mso.engines.kubernetes.kube import Kube
from mso.engines.kubernetes.views import epoch
from tests.e2e.kubernetes.helpers import Lab, Mso, wait_for

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(1200)]
CRASHAPP = Path(__file__).parents[1] / "apps" / "crashapp"
NAMESPACE = "failfast-e2e"
#: Seconds from the pod's creation to the end of `mso deploy`. The kubelet restarts an
#: exited container at once and backs off (10 s) from the second exit: CrashLoopBackOff,
#: the first sign of a loop Kubernetes gives, comes a few seconds after the pod starts.
REPORT_WITHIN = 20.0


@pytest.fixture(scope="module")
def app(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mso]:
    folder = tmp_path_factory.mktemp("k8s-failfast") / "crashapp"
    shutil.copytree(CRASHAPP, folder, ignore=shutil.ignore_patterns(".mso", "__pycache__"))
    mso = Mso(folder, lab.kubeconfig, NAMESPACE)
    try:
        yield mso
    finally:
        mso.run("down", check=False)


def test_a_service_that_crashes_at_start_is_reported_with_its_log(app: Mso) -> None:
    started = time.monotonic()
    proc = app.run("deploy", check=False, timeout=600)
    ended, took = time.time(), time.monotonic() - started
    assert proc.returncode == 1, proc.stderr[-3000:] + proc.stdout[-2000:]
    pods = Kube(str(app.kubeconfig), None).list("v1", "Pod", NAMESPACE,
                                                {"mso.dev/service": "api"})
    assert len(pods) == 1, pods
    name = pods[0]["metadata"]["name"]
    created = epoch(pods[0]["metadata"]["creationTimestamp"])
    assert created is not None
    print(f"\nkubernetes: crash reported {ended - created:.1f}s after the pod was created "
          f"({took:.1f}s for the whole deploy, images and gateway included)")
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("mso: ready")]
    report = lines[lines.index("mso: stopped waiting: 1 replica has a problem"):]
    # mso's shim restarts the process in its container with mso's backoff; the kubelet's
    # startupProbe (the shim's status) says it crash-loops.
    assert report[1].startswith(f"api {name} BACKOFF: exited with status 1, 3 times in a "
                                "row without becoming ready"), proc.stderr
    assert report[1].endswith("mso's shim keeps restarting it in the container"), proc.stderr
    logs = [line for line in report[2:] if line.startswith("    ")]
    assert any(line.endswith(" fatal: DB_URL is not set") for line in logs), proc.stderr
    assert any(line.endswith(" api starting") for line in logs), proc.stderr
    assert len(logs) <= 10
    assert ended - created < REPORT_WITHIN, proc.stderr
    rows = app.json("ps")["replicas"]
    assert rows[0]["problem"]["kind"] == "crash_loop" and rows[0]["pid"] is None, rows


def test_a_local_process_on_the_gateway_port_does_not_matter_to_kubernetes(app: Mso) -> None:
    """On Kubernetes `gateway.port` is the gateway Service's port inside the cluster; a
    node port is allocated by the API server. Nothing binds it on this machine."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        text = (app.folder / "mso.yaml").read_text().replace("port: 8080", f"port: {port}")
        (app.folder / "mso.yaml").write_text(text.replace("run: [python3, app.py]",
                                                          "run: [python3, -m, http.server]"))
        proc = app.run("deploy", check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wait_for("the http.server pod READY",
             lambda: [r for r in app.json("ps")["replicas"] if r["state"] == "READY"])


def test_a_failed_job_ends_the_deploy_with_its_log(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "jobapp"
    shutil.copytree(CRASHAPP, folder, ignore=shutil.ignore_patterns(".mso", "__pycache__"))
    text = (folder / "mso.yaml").read_text().replace("app: failfast", "app: failfast-job")
    (folder / "mso.yaml").write_text(text + (
        "jobs:\n  migrate:\n    run: [python3, -c, \"import sys; print('fatal: migration 7 "
        "failed', file=sys.stderr); sys.exit(2)\"]\n    before: [api]\n"))
    mso = Mso(folder, lab.kubeconfig, "failfast-job-e2e")
    try:
        proc = mso.run("deploy", check=False, timeout=600)
        assert proc.returncode == 1, proc.stderr[-3000:]
        report = proc.stderr[proc.stderr.index("mso: stopped waiting"):].splitlines()
        assert report[1].startswith("migrate migrate-r1-") and \
            " FAILED: exited with status 2 (Error); restartPolicy: Never" in report[1], \
            proc.stderr
        assert any(line.endswith(" fatal: migration 7 failed") for line in report[2:]), \
            proc.stderr
    finally:
        mso.run("down", check=False)
