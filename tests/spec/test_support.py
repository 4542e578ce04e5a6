"""The support table: one source of truth, refused with file:line, documented as generated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mso.spec import support
from mso.spec.errors import ManifestError
from mso.spec.load import load_manifest

ROOT = Path(__file__).resolve().parents[2]


def test_docs_engines_table_is_the_generated_one() -> None:
    text = (ROOT / "docs" / "engines.md").read_text()
    found = re.search(r"<!-- support-table:[^\n]*-->\n(.*?)<!-- end support-table -->", text,
                      re.S)
    assert found, "docs/engines.md lost its support-table markers"
    assert found.group(1) == support.markdown_table(), \
        "regenerate with: python -m mso.spec.support"


MANIFEST = """\
app: gaps
services:
  web:
    run: [python3, app.py]
    ports: {http: 8000}
    stop: {signal: SIGINT}
    restart: on-failure
    autoscale: {min: 1, max: 3, target_rps_per_replica: 50}
    health:
      readiness: {http: /ready, period: 500ms}
      liveness: {http: /healthz}
    rollout:
      strategy: recreate
      max_surge: 2
      analysis: {interval: 5s}
  cache:
    image: redis:7
    run: [redis-server]
    stop: {signal: SIGINT}
    backoff: {initial: 1s}
    health:
      readiness: {exec: [redis-cli, ping]}
      liveness: {exec: [redis-cli, ping]}
jobs:
  migrate: {run: [python3, m.py], before: [web], timeout: 1m}
"""


def _refusals(tmp_path: Path, engine: support.EngineName) -> list[tuple[int | None, str, str]]:
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    loaded = load_manifest(tmp_path / "mso.yaml", {})
    try:
        support.check(loaded, engine)
    except ManifestError as exc:
        return [(e.line, e.field, e.message) for e in exc.errors]
    return []


def test_each_engine_refuses_what_it_would_ignore_with_file_and_line(tmp_path: Path) -> None:
    assert _refusals(tmp_path, "local") == []  # the embedded engine honours all of it
    swarm = {field for _, field, _ in _refusals(tmp_path, "swarm")}
    assert {"services.web.rollout.max_surge", "services.cache.health.liveness",
            "services.cache.backoff"} <= swarm
    assert not {"services.web.rollout.strategy", "jobs.migrate.timeout",
                "services.web.autoscale"} & swarm
    # A `run:` service runs under mso's shim, which supervises it as the local engine does.
    assert not {"services.web.health.liveness",
                "services.web.health.readiness.timeout"} & swarm
    kubernetes = {field for _, field, _ in _refusals(tmp_path, "kubernetes")}
    assert {"services.cache.stop.signal", "services.cache.backoff", "services.web.restart",
            "services.web.health.readiness.period"} <= kubernetes
    assert not {"services.web.rollout.strategy", "jobs.migrate.before",
                "services.web.autoscale", "services.web.stop.signal"} & kubernetes


def test_a_default_written_out_is_not_a_use(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(
        "app: ok\nservices:\n  web:\n    run: [a]\n    stop: {signal: SIGTERM}\n"
        "    restart: always\n    rollout: {strategy: rolling}\n")
    loaded = load_manifest(tmp_path / "mso.yaml", {})
    for engine in support.ENGINES:
        support.check(loaded, engine)


@pytest.mark.e2e
def test_validate_for_an_engine_refuses_in_one_located_line(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(
        "app: sig\nservices:\n  web:\n    image: busybox\n    run: [sh]\n"
        "    stop: {signal: SIGINT}\n")
    proc = subprocess.run([sys.executable, "-m", "mso", "validate", "--engine", "kubernetes"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"mso: {tmp_path / 'mso.yaml'}:6: services.web.stop.signal: not supported on "
        "kubernetes: a container built from `image:`/`build:` has no mso shim to translate "
        "the kubelet's SIGTERM, and a pod is always stopped with the image's STOPSIGNAL "
        "(SIGTERM); handle SIGTERM, or use a `run:` service")
    ok = subprocess.run([sys.executable, "-m", "mso", "validate", "--engine", "swarm"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "valid for swarm" in ok.stdout
