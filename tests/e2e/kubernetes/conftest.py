"""Fixtures for the Kubernetes end-to-end tests: the lab cluster, built on first use.

The lab (scripts/k8s-lab.sh) is the session's `k8s_lab` (tests/conftest.py): the
Kubernetes tests run last, so the other suites never share the machine with it. Tests are
skipped only when the cluster cannot be built here (not root, missing packages); the
reason is printed loudly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.kubernetes.helpers import Lab


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kubernetes: needs the single-node Kubernetes lab")


@pytest.fixture(scope="module")
def lab(k8s_lab: Path) -> Lab:
    """The lab of the whole session (tests/conftest.py): started by the first Kubernetes
    test, after every other test has run, and stopped at the end."""
    return Lab(k8s_lab)
