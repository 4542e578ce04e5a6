"""Loading good manifests: the documented example, environment, secrets, configs, spec hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from mso.spec import LoadedManifest, ManifestError, load_manifest

from .conftest import WriteManifest

EXAMPLE_DIR = Path(__file__).parent / "data"

# The example from MANIFEST.md, plus the `orders` service it routes to and depends on.
EXAMPLE = (EXAMPLE_DIR / "example.yaml").read_text()
EXAMPLE_FILES: dict[str, str | bytes] = {
    "web/Dockerfile": "FROM python:3.11\n",
    ".env": "# defaults\nLOG_LEVEL=debug\nexport FROM_FILE='kept $literal'\n",
    "secrets/db_password": "s3cret\n",
    "conf/web.toml": "title = 'shop'\n",
}


@pytest.fixture
def example(write_manifest: WriteManifest) -> LoadedManifest:
    return load_manifest(write_manifest(EXAMPLE, EXAMPLE_FILES), {})


def test_documented_example_loads_with_its_values(example: LoadedManifest) -> None:
    m = example.manifest
    web = m.services["web"]
    assert m.app == "shop" and m.engine == "local"
    assert (m.gateway.bind, m.gateway.port) == ("127.0.0.1", 8080)
    assert [(r.path, r.host, r.service, r.port) for r in m.routes] == [
        ("/api/orders", "shop.localhost", "orders", "http"),
        ("/", None, "web", None),
    ]
    assert web.run == ["python3", "-m", "shop.web"]
    assert web.ports["http"].port == 8000 and web.ports["http"].protocol == "http"
    assert web.depends_on == {"orders": "healthy"}
    assert web.health.startup is not None and web.health.startup.kind == "http"
    assert web.health.startup.period == 1.0 and web.health.startup.failure_threshold == 30
    assert web.health.liveness is not None and web.health.liveness.kind == "tcp"
    assert web.probe_port(web.health.liveness) == "http"
    assert (web.backoff.initial, web.backoff.max, web.backoff.reset_after) == (0.5, 30.0, 60.0)
    assert (web.stop.signal, web.stop.grace) == ("SIGTERM", 10.0)
    assert (web.resources.cpu, web.resources.memory) == (0.5, 256 * 1024**2)
    assert web.rollout.strategy == "canary" and web.rollout.progress_deadline == 120.0
    assert [s.kind for s in web.rollout.steps] == ["set_weight", "pause", "analysis", "set_weight", "pause"]
    assert web.rollout.steps[1].pause is not None and web.rollout.steps[1].pause.duration == 30.0
    assert web.rollout.keep_previous == 300.0 and web.rollout.preview_port == 8081
    assert web.autoscale is not None and (web.autoscale.min, web.autoscale.max) == (1, 10)
    assert m.jobs["migrate"].before == ["orders"] and m.jobs["migrate"].timeout == 300.0
    assert m.engines.swarm.network == "shop" and m.engines.kubernetes.namespace == "shop"


def test_defaults_match_the_contract(write_manifest: WriteManifest) -> None:
    loaded = load_manifest(write_manifest("app: a\nservices:\n  s: {run: [x]}\n"), {})
    s = loaded.manifest.services["s"]
    assert loaded.manifest.gateway.port == 8080 and loaded.manifest.engine == "local"
    assert s.replicas == 1 and s.restart == "always" and s.shell is False
    assert s.rollout.strategy == "rolling" and (s.rollout.max_surge, s.rollout.max_unavailable) == (1, 0)
    assert s.rollout.analysis.min_samples == 50 and s.rollout.analysis.confidence == 0.99
    assert s.health.readiness is None and s.autoscale is None


def test_paths_are_absolute_and_base_dir_is_the_manifest_folder(example: LoadedManifest) -> None:
    assert example.path.is_absolute() and example.path.name == "mso.yaml"
    assert example.base_dir == example.path.parent


def test_service_env_overlays_env_file_with_env_and_interpolates(example: LoadedManifest) -> None:
    env = example.service_env("web")
    assert env["LOG_LEVEL"] == "info"  # env wins over .env
    assert env["GREETING"] == "hello"  # ${GREETING:-hello} with GREETING unset
    assert env["FROM_FILE"] == "kept $literal"  # single quotes: no interpolation


def test_interpolation_uses_the_given_environ(write_manifest: WriteManifest, tmp_path: Path) -> None:
    path = write_manifest(EXAMPLE, EXAMPLE_FILES)
    loaded = load_manifest(path, {"GREETING": "hi"})
    assert loaded.service_env("web")["GREETING"] == "hi"
    assert loaded.environ["GREETING"] == "hi"


def test_service_env_works_for_jobs(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        """
        app: a
        jobs:
          migrate:
            run: [m]
            env_file: job.env
            env: {RETRIES: 3, VERBOSE: true, RATIO: 0.5}
        """,
        {"job.env": "DSN=postgres://db/${DB:-shop}\n"},
    )
    assert load_manifest(path, {}).service_env("migrate") == {
        "DSN": "postgres://db/shop",
        "RETRIES": "3",
        "VERBOSE": "true",
        "RATIO": "0.5",
    }


def test_secrets_come_from_files_and_environ(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        """
        app: a
        services:
          s:
            run: [x]
            secrets:
              db-password: {file: secrets/db, as_env: true}
              token: {env: API_TOKEN, as_env: MY_TOKEN}
              plain: {env: API_TOKEN}
        """,
        {"secrets/db": "pw\n"},
    )
    loaded = load_manifest(path, {"API_TOKEN": "tok"})
    assert loaded.secrets("s") == {"db-password": b"pw\n", "token": b"tok", "plain": b"tok"}
    assert loaded.secret_env("s") == {"DB_PASSWORD": "pw", "MY_TOKEN": "tok"}


def test_secret_missing_after_load_is_a_manifest_error(write_manifest: WriteManifest, tmp_path: Path) -> None:
    path = write_manifest(
        "app: a\nservices:\n  s:\n    run: [x]\n    secrets:\n      db: {file: db.txt}\n", {"db.txt": "pw"}
    )
    loaded = load_manifest(path, {})
    (tmp_path / "db.txt").unlink()
    with pytest.raises(ManifestError) as info:
        loaded.secrets("s")
    assert (info.value.line, info.value.field) == (6, "services.s.secrets.db.file")


def test_check_files_false_skips_missing_files(write_manifest: WriteManifest) -> None:
    path = write_manifest("app: a\nservices:\n  s:\n    run: [x]\n    env_file: gone.env\n")
    loaded = load_manifest(path, {}, check_files=False)
    with pytest.raises(ManifestError, match="env file 'gone.env' not found"):
        loaded.service_env("s")


def test_configs_return_target_and_content(example: LoadedManifest) -> None:
    assert example.configs("web") == [("conf/web.toml", b"title = 'shop'\n")]
    assert example.configs("migrate") == []


def test_unknown_service_name_is_a_manifest_error(example: LoadedManifest) -> None:
    with pytest.raises(ManifestError, match="no service or job named 'nope'"):
        example.service_env("nope")


def test_field_line_finds_keys_items_and_list_form_names(example: LoadedManifest) -> None:
    text = example.path.read_text().splitlines()
    line = example.field_line("services.web.rollout.steps.2")
    assert line is not None and "analysis" in text[line - 1]
    line = example.field_line("jobs.migrate.before.orders")
    assert line is not None and "before" in text[line - 1]
    line = example.field_line(("services", "web", "ports", "http"))
    assert line is not None and "http: 8000" in text[line - 1]
    assert example.field_line("services.web.no.such.field") == example.field_line("services.web")


def test_absolute_path_inside_the_folder_is_accepted(write_manifest: WriteManifest, tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    path = write_manifest(f"app: a\nservices:\n  s:\n    run: [x]\n    cwd: {tmp_path / 'web'}\n")
    assert load_manifest(path, {}).manifest.services["s"].cwd == str(tmp_path / "web")


def test_missing_cwd_is_reported(write_manifest: WriteManifest) -> None:
    path = write_manifest("app: a\nservices:\n  s:\n    run: [x]\n    cwd: ./nowhere\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path, {})
    assert (info.value.field, info.value.line) == ("services.s.cwd", 5)


def test_merge_keys_and_anchors_work(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        """
        app: a
        services:
          one: &base
            run: [x]
            env: {A: "1"}
          two:
            <<: *base
            env: {A: "2"}
        """
    )
    services = load_manifest(path, {}).manifest.services
    assert services["two"].run == ["x"] and services["two"].env == {"A": "2"}


# --- spec_hash -----------------------------------------------------------------

HASHED = """
app: a
services:
  s:
    run: [python3, app.py]
    replicas: 2
    ports: {http: 8000, admin: 9000}
    env: {A: "1", B: "2"}
    env_file: .env
    secrets:
      key: {file: key.txt}
    config:
      - {source: c.toml, target: c.toml}
"""
HASHED_FILES: dict[str, str | bytes] = {".env": "E=1\n", "key.txt": "k1", "c.toml": "x = 1\n"}


def _hash(write_manifest: WriteManifest, text: str = HASHED, **files: str) -> str:
    path = write_manifest(text, {**HASHED_FILES, **{k.replace("_", "."): v for k, v in files.items()}})
    return load_manifest(path, {}).spec_hash("s")


def test_spec_hash_is_a_full_sha256(write_manifest: WriteManifest) -> None:
    digest = _hash(write_manifest)
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_spec_hash_ignores_key_order_formatting_and_replicas(write_manifest: WriteManifest) -> None:
    base = _hash(write_manifest)
    reordered = HASHED.replace('env: {A: "1", B: "2"}', "env:\n      B: '2'\n      A: '1'").replace("replicas: 2", "replicas: 7")
    assert _hash(write_manifest, reordered) == base
    rollout = HASHED + "    rollout: {strategy: canary, steps: [{set_weight: 5}]}\n"
    assert _hash(write_manifest, rollout) == base
    watch = HASHED + "    watch: {paths: [c.toml], action: {signal: HUP}}\n"
    assert _hash(write_manifest, watch) == base  # development only: not a release


@pytest.mark.parametrize(
    ("text", "files"),
    [
        (HASHED.replace("app.py", "main.py"), {}),
        (HASHED.replace('A: "1"', 'A: "9"'), {}),
        (HASHED, {"_env": "E=2\n"}),
        (HASHED, {"c_toml": "x = 2\n"}),
        (HASHED, {"key_txt": "k2"}),
        (HASHED.replace("{http: 8000, admin: 9000}", "{admin: 9000, http: 8000}"), {}),
        (HASHED + "    stop: {grace: 3s}\n", {}),
    ],
    ids=["command", "env", "env_file", "config", "secret", "port order", "stop"],
)
def test_spec_hash_changes_when_the_release_changes(
    write_manifest: WriteManifest, text: str, files: dict[str, str]
) -> None:
    base = _hash(write_manifest)
    assert _hash(write_manifest, text, **files) != base


def test_loaded_manifest_is_frozen(example: LoadedManifest) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.path = Path("/")  # type: ignore[misc]
    with pytest.raises(ValidationError):
        example.manifest.services["web"].replicas = 3  # type: ignore[misc]


def test_x_extension_keys_hold_anchors_and_are_ignored(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        """
        x-defaults: &defaults
          restart: on-failure
          env: {LOG: info}
        app: a
        services:
          s:
            <<: *defaults
            x-note: ignored
            run: [x]
        """
    )
    s = load_manifest(path, {}).manifest.services["s"]
    assert s.restart == "on-failure" and s.env == {"LOG": "info"}
