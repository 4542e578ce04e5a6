"""What a stored release says: key order, secrets as env, probe ports (issue 14 rows)."""

from __future__ import annotations

from pathlib import Path

from mso.engines.local.model_map import probe_spec
from mso.releases.ports import port_map
from mso.releases.apply import apply_manifest, spec_changes
from mso.daemon.replica_env import replica_environment
from mso.spec.load import load_manifest
from mso.store.db import Store

MANIFEST = """
app: order
services:
  api:
    run: [python3, app.py]
    ports:
      web: 8000
      admin: {port: 9000, protocol: tcp}
      metrics: 9100
    secrets:
      db.password: {env: DB_PASSWORD, as_env: true}
    health:
      readiness: {http: /ready}
"""


def _stored(tmp_path: Path) -> tuple[Store, dict]:  # type: ignore[type-arg]
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    loaded = load_manifest(tmp_path / "mso.yaml", {"DB_PASSWORD": "pw"})
    store = Store(tmp_path / "state.db")
    apply_manifest(store, loaded, "test")
    release = store.latest_release("api")
    assert release is not None
    return store, release.spec


def test_the_first_port_written_stays_first_in_a_stored_release(tmp_path: Path) -> None:
    store, spec = _stored(tmp_path)
    store.close()
    reopened = Store(tmp_path / "state.db")
    stored = reopened.latest_release("api")
    assert stored is not None
    # Alphabetically `admin` would come first and become PORT: the order written wins.
    assert list(port_map(stored.spec["model"])) == ["web", "admin", "metrics"]
    env = replica_environment(base={}, spec=stored.spec, app="order", service="api",
                              replica="api-1", release=1,
                              ports={"web": 41000, "admin": 41001, "metrics": 41002},
                              secrets={"db.password": "pw"}, secrets_dir=tmp_path,
                              config_dir=tmp_path, data_dir=tmp_path, discovery=[])
    assert env["PORT"] == "41000"
    # as_env: `.` becomes `_`, as documented and as Swarm and Kubernetes name it.
    assert env["DB_PASSWORD"] == "pw"
    reopened.close()


def test_an_http_probe_without_a_port_checks_the_first_http_port(tmp_path: Path) -> None:
    store, spec = _stored(tmp_path)
    store.close()
    ports = {"admin": ("tcp", 9000), "web": ("http", 8000)}  # a tcp port written first
    probe = probe_spec(spec["model"]["health"]["readiness"], ports)
    assert probe is not None and probe.port_name == "web"
    explicit = probe_spec({**spec["model"]["health"]["readiness"], "port": "metrics"}, ports)
    assert explicit is not None and explicit.port_name == "metrics"


def test_spec_changes_name_keys_never_values() -> None:
    old = {"model": {"run": ["a"], "replicas": 1, "ports": {"web": 8000}},
           "env": {"A": "1", "B": "2"}, "configs": [], "cwd": "/x"}
    new = {"model": {"run": ["b"], "replicas": 5, "ports": {"web": 8001}},
           "env": {"A": "1", "B": "3", "C": "4"},
           "configs": [{"target": "conf.toml", "content_b64": "eA=="}], "cwd": "/x"}
    keys = spec_changes(old, new, {"token": "s1"}, {"token": "s2"})
    assert keys == ["ports.web", "run", "env.B", "env.C", "config.conf.toml", "secrets.token"]
    assert not any("s2" in k or "3" == k[-1] for k in keys)
