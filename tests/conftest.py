"""Suite-wide order and the one Kubernetes lab.

The suite runs in three phases, in this order: everything that needs neither Docker Swarm
nor Kubernetes (unit tests, the embedded engine's end-to-end tests), then the tests marked
`swarm`, then those marked `kubernetes`. The lab cluster (scripts/k8s-lab.sh: etcd, an
API server, a kubelet and the rest on this machine's two cores) is started once, by the
first Kubernetes test, and stopped when the session ends; so the timing-sensitive tests of
the embedded engine never share the machine with it, and the lab starts once instead of
once per module. Within a phase, tests keep the order pytest collected them in (the
conformance module's scenarios are split over the phases by engine).

`scripts/test.sh` without arguments (what CI runs) does not rely on that order: it runs the
first phase alone, then the Swarm and the Kubernetes phases side by side in two pytest
processes (`-m`), after starting the lab itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "scripts" / "k8s-lab.sh"
LAB_KUBECONFIG = Path("/var/lib/mso-k8s-lab/admin.kubeconfig")
LAB_TOOLS = ("go", "gcc", "etcd", "openssl", "docker", "iptables", "conntrack", "rsync",
             "curl")


def _phase(item: pytest.Item) -> int:
    if item.get_closest_marker("kubernetes") is not None:
        return 2
    if item.get_closest_marker("swarm") is not None:
        return 1
    return 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_phase)  # stable: collection order within a phase


def _loud_skip(reason: str) -> None:
    banner = "!" * 78
    print(f"\n{banner}\nKUBERNETES E2E TESTS SKIPPED: {reason}\n{banner}", file=sys.stderr)
    pytest.skip(f"Kubernetes lab unavailable: {reason}")


def _lab(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(LAB), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def k8s_lab() -> Iterator[Path]:
    """The lab's admin kubeconfig. A lab that was already up is reused and left running;
    one started here is stopped at the end of the session (MSO_K8S_KEEP=1 keeps it).
    Skipped, loudly, only when the cluster cannot be built on this machine."""
    if os.geteuid() != 0:
        _loud_skip("the lab needs root (bridges, iptables, kubelet)")
    missing = [t for t in LAB_TOOLS if shutil.which(t) is None]
    if missing:
        _loud_skip("missing tools: " + ", ".join(missing) + " (apt-get install golang-go "
                   "gcc libc6-dev etcd-server openssl docker.io iptables conntrack rsync "
                   "curl dpkg-dev)")
    if _lab("status", timeout=30).returncode == 0:
        yield LAB_KUBECONFIG
        return
    build = _lab("build", timeout=3600)
    if build.returncode != 0:
        _loud_skip("building Kubernetes failed: " + (build.stderr or build.stdout)[-800:])
    up = _lab("up", timeout=600)
    if up.returncode != 0:
        _lab("down", timeout=300)
        pytest.fail("the lab did not start: " + up.stderr[-2000:])
    try:
        yield Path(up.stdout.strip().splitlines()[-1])
    finally:
        if not os.environ.get("MSO_K8S_KEEP"):
            _lab("down", timeout=300)


@pytest.fixture(scope="session", autouse=True)
def _private_secrets_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The secrets keys of the apps the tests make (mso.store.secretbox) go to a folder of
    this session, not the user's ~/.config/mso; daemons the tests start inherit it."""
    old = os.environ.get("MSO_KEY_DIR")
    os.environ["MSO_KEY_DIR"] = str(tmp_path_factory.mktemp("mso-keys"))
    yield
    if old is None:
        os.environ.pop("MSO_KEY_DIR", None)
    else:
        os.environ["MSO_KEY_DIR"] = old
