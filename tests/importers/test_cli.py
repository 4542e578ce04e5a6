"""`mso import` through the real CLI: invalid files exit 2 with `file:line: what is wrong`
(never a traceback), the `-o json` report's shape, `-o FILE`, and `mso validate` on what
was written (on the engines it should pass on)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.cli.conftest import clean_env, mso_argv


def mso(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(mso_argv(*args), cwd=folder, capture_output=True, text=True,
                          timeout=60, env=clean_env())


INVALID = {
    "cycle": ("""\
        services:
          a:
            command: [a]
            depends_on: [b]
          b:
            command: [b]
            depends_on: [a]
        """, "compose.yaml:4: services.a.depends_on.0: dependency cycle: a -> b -> a"),
    "self-dependency": ("""\
        services:
          a:
            command: [a]
            depends_on:
              a: {condition: service_started}
        """, "compose.yaml:5: services.a.depends_on.a: 'a' depends on itself"),
    "unknown service": ("""\
        services:
          a:
            command: [a]
            depends_on: [ghost]
        """, "compose.yaml:4: services.a.depends_on.0: unknown service 'ghost' (defined: a)"),
    "bad YAML": ("""\
        services:
          a:
            command: [a
          b: {}
        """, "compose.yaml:4: YAML syntax error"),
    "unknown condition": ("""\
        services:
          a:
            command: [a]
            depends_on:
              b: {condition: service_ready}
          b:
            command: [b]
        """, "compose.yaml:5: services.a.depends_on.b.condition: unknown condition 'service_ready'"),
    "extends cycle": ("""\
        services:
          a:
            extends: b
          b:
            extends: a
        """, "compose.yaml:5: services.b.extends: extends cycle: a -> b -> a"),
    "no services": ("""\
        name: nothing
        """, "compose.yaml:1: services: no services"),
    "empty": ("", "compose.yaml: the file is empty; a compose file needs `services:`"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_compose_file_exits_2_with_file_and_line(tmp_path: Path, case: str) -> None:
    text, expected = INVALID[case]
    (tmp_path / "compose.yaml").write_text(textwrap.dedent(text))
    for args in (("import", "compose.yaml"), ("up", "-d", "compose.yaml"),
                 ("validate", "compose.yaml")):
        proc = mso(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"mso: {expected}"), (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".mso").exists()  # `up` started nothing


def test_an_include_cycle(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("include: [other.yaml]\nservices:\n  a:\n    command: [a]\n")
    (tmp_path / "other.yaml").write_text("include:\n  - compose.yaml\n")
    proc = mso(tmp_path, "import", "compose.yaml")
    assert proc.returncode == 2
    assert proc.stderr == ("mso: other.yaml:2: include.0: include cycle: compose.yaml -> "
                           "other.yaml -> compose.yaml\n")


SHOP = """\
name: shop
services:
  web:
    command: [python3, -m, http.server]
    ports: ["8080:8000"]
    depends_on: [api]
  api:
    command: python3 -m http.server
    expose: ["8001"]
    environment: {GREETING: hi}
    healthcheck: {test: [CMD, "true"], interval: 5s, timeout: 5s}
  redis:
    image: redis
"""


def test_the_json_report(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SHOP)
    proc = mso(tmp_path, "import", "compose.yaml", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"source", "kind", "manifest", "report", "counts", "not_runnable_locally"}
    assert out["kind"] == "compose" and out["manifest"]["app"] == "shop"
    assert set(out["counts"]) == {"kept", "translated", "dropped", "note"}
    assert all(set(e) == {"file", "line", "key", "status", "to", "reason"} for e in out["report"])
    ports = next(e for e in out["report"] if e["key"] == "services.web.ports.0")
    assert ports == {"file": "compose.yaml", "line": 5, "key": "services.web.ports.0",
                     "status": "translated", "to": ports["to"], "reason": ports["reason"]}
    assert "route /" in ports["to"]
    redis = next(e for e in out["report"] if e["key"] == "services.redis.image")
    assert redis["status"] == "kept" and redis["line"] == 13  # a container of its image
    assert out["manifest"]["services"]["redis"] == {"image": "redis"}
    assert out["not_runnable_locally"] == []


def test_write_a_file_and_validate_it(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SHOP.replace("  redis:\n    image: redis\n", ""))
    proc = mso(tmp_path, "import", "compose.yaml", "-o", "mso.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "compose.yaml:5: services.web.ports.0: translated" in proc.stderr
    assert "mso: wrote mso.yaml" in proc.stderr
    # (Kubernetes refuses `depends_on`: its engine starts every Deployment at once.)
    for engine in ("local", "swarm"):
        check = mso(tmp_path, "validate", "mso.yaml", "--engine", engine)
        assert check.returncode == 0, (engine, check.stderr)
    again = mso(tmp_path, "import", "compose.yaml", "-o", "mso.yaml")
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    assert mso(tmp_path, "import", ".", "-o", "mso.yaml", "--force").returncode == 0
    # without -o: the manifest on stdout, the report on stderr
    plain = mso(tmp_path, "import", "compose.yaml")
    assert plain.stdout.startswith("# Generated by `mso import compose.yaml`")
    assert "app: shop" in plain.stdout and "translated" in plain.stderr


#: A one-shot task that only runs its image: a job that runs its image's own command.
ONE_SHOT = SHOP + """\
  migrate:
    image: migrations
"""
#: A service with nothing to run: it cannot be imported.
NOTHING = SHOP + """\
  migrate:
    environment: {A: b}
"""


def _one_shot(tmp_path: Path, text: str = ONE_SHOT) -> None:
    (tmp_path / "compose.yaml").write_text(text.replace(
        "    depends_on: [api]\n",
        "    depends_on:\n      api: {condition: service_started}\n"
        "      migrate: {condition: service_completed_successfully}\n"))


def test_a_one_shot_image_becomes_a_container_job(tmp_path: Path) -> None:
    _one_shot(tmp_path)
    proc = mso(tmp_path, "import", "compose.yaml", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["manifest"]["jobs"]["migrate"] == {"image": "migrations", "before": ["web"]}
    assert out["not_runnable_locally"] == []
    for engine in ("local", "swarm", "kubernetes"):
        assert mso(tmp_path, "validate", "compose.yaml", "--engine", engine).returncode == 0


def test_up_refuses_services_that_cannot_run_here_yet(tmp_path: Path) -> None:
    _one_shot(tmp_path, NOTHING)
    proc = mso(tmp_path, "up", "-d", "compose.yaml")
    assert proc.returncode == 2
    assert "mso: cannot run compose.yaml yet: migrate: has no command, image or build" \
        in proc.stderr
    assert not (tmp_path / ".mso").exists()


def test_a_compose_file_is_found_in_its_folder(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SHOP.replace("  redis:\n    image: redis\n", ""))
    proc = mso(tmp_path, "validate", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "compose.yaml: valid for local (2 services, 0 jobs)" in proc.stdout


def test_validate_says_what_was_not_imported(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SHOP)
    proc = mso(tmp_path, "validate", "compose.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "valid for local (3 services, 0 jobs)" in proc.stdout  # redis: a container
    assert "not imported" not in proc.stderr
    _one_shot(tmp_path, NOTHING)
    proc = mso(tmp_path, "validate", "compose.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "mso: warning: not imported: migrate: has no command, image or build" in proc.stderr
    assert "mso import: compose.yaml:16: services.migrate: dropped" in proc.stderr


@pytest.mark.parametrize("engine", ["swarm", "kubernetes"])
def test_import_for_an_engine_validates_there(tmp_path: Path, engine: str) -> None:
    text = SHOP.replace("  redis:\n    image: redis\n", "").replace(
        "    depends_on: [api]\n",
        "    depends_on: [api]\n    deploy: {update_config: {parallelism: 1, order: start-first}}\n")
    (tmp_path / "compose.yaml").write_text(text)
    proc = mso(tmp_path, "import", "compose.yaml", "--engine", engine, "-o", "mso.yaml")
    assert proc.returncode == 0, proc.stderr
    refused = [line for line in proc.stderr.splitlines() if f"not supported on {engine}" in line]
    assert all(": dropped (" in line for line in refused)
    if engine == "swarm":  # update_config's surge: Swarm's handoff has none to bound
        assert refused
    check = mso(tmp_path, "validate", "mso.yaml")
    assert check.returncode == 0, check.stderr
    assert f"valid for {engine}" in check.stdout
