"""Fixtures for the Kubernetes end-to-end tests: the lab cluster, built on first use.

The lab (scripts/k8s-lab.sh) is started for each test module and stopped after it, so
the other suites do not share the machine with it; a lab that was already up is reused
and left running (MSO_K8S_KEEP=1 keeps one started here too). Tests are skipped only
when the cluster cannot be built here (not root, missing packages); the reason is
printed loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kubernetes.helpers import ROOT, Lab

LAB = ROOT / "scripts" / "k8s-lab.sh"
TOOLS = ("go", "gcc", "etcd", "openssl", "docker", "iptables", "conntrack", "rsync", "curl")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kubernetes: needs the single-node Kubernetes lab")


def _loud_skip(reason: str) -> None:
    banner = "!" * 78
    print(f"\n{banner}\nKUBERNETES E2E TESTS SKIPPED: {reason}\n{banner}", file=sys.stderr)
    pytest.skip(f"Kubernetes lab unavailable: {reason}")


def _impossible() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (bridges, iptables, kubelet)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return ("missing tools: " + ", ".join(missing) + " (apt-get install golang-go gcc "
                "libc6-dev etcd-server openssl docker.io iptables conntrack rsync curl dpkg-dev)")
    return None


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(LAB), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = _impossible()
    if reason:
        _loud_skip(reason)
    if _run("status", timeout=30).returncode == 0:
        yield Lab(Path("/var/lib/mso-k8s-lab/admin.kubeconfig"))
        return
    build = _run("build", timeout=3600)
    if build.returncode != 0:
        _loud_skip("building Kubernetes failed: " + (build.stderr or build.stdout)[-800:])
    up = _run("up", timeout=600)
    if up.returncode != 0:
        _run("down", timeout=300)
        pytest.fail("the lab did not start: " + up.stderr[-2000:])
    try:
        yield Lab(Path(up.stdout.strip().splitlines()[-1]))
    finally:
        if not os.environ.get("MSO_K8S_KEEP"):
            _run("down", timeout=300)
