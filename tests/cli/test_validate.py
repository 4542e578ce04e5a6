"""`mso validate` and `mso up` through the real CLI on broken manifests.

Every broken manifest must exit 2 with exactly one line on stderr naming
`file:line: field: problem`, and never a traceback; `up` must refuse it without starting
a daemon or anything else.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import clean_env, mso_argv


@dataclass(frozen=True)
class Broken:
    id: str
    yaml: str  # the offending line carries `# <-`
    field: str
    problem: str


BROKEN = [
    Broken("unknown top-level key", """
        app: shop
        servces: {}   # <-
        """, "servces", "unknown key 'servces'"),
    Broken("unknown service key", """
        app: shop
        services:
          web:
            run: [app]
            replica: 2   # <-
        """, "services.web.replica", "did you mean 'replicas'?"),
    Broken("duplicate key", """
        app: shop
        services:
          web:
            run: [app]
            replicas: 1
            replicas: 2   # <-
        """, "services.web.replicas", "duplicate key 'replicas'"),
    Broken("bad app name", """
        app: My Shop   # <-
        services: {}
        """, "app", "invalid name 'My Shop'"),
    Broken("bad service name", """
        app: shop
        services:
          Web_1:   # <-
            run: [app]
        """, "services.Web_1", "invalid name 'Web_1'"),
    Broken("port out of range", """
        app: shop
        services:
          web:
            run: [app]
            ports:
              http: 70000   # <-
        """, "services.web.ports.http", "out of range"),
    Broken("duplicate port number", """
        app: shop
        services:
          web:
            run: [app]
            ports:
              http: 8000
              admin: 8000   # <-
        """, "services.web.ports.admin", "already used by port 'http'"),
    Broken("udp protocol", """
        app: shop
        services:
          web:
            run: [app]
            ports:
              dns: {port: 53, protocol: udp}   # <-
        """, "services.web.ports.dns.protocol", "'udp'"),
    Broken("run string without shell", """
        app: shop
        services:
          web:
            run: python3 app.py   # <-
        """, "services.web.run", "shell: true"),
    Broken("empty run", """
        app: shop
        services:
          web:
            run: []   # <-
        """, "services.web.run", "must not be empty"),
    Broken("missing run", """
        app: shop
        services:
          web:   # <-
            replicas: 1
        """, "services.web.run", "required key is missing"),
    Broken("bad duration", """
        app: shop
        services:
          web:
            run: [app]
            stop: {grace: 10 parsecs}   # <-
        """, "services.web.stop.grace", "not a duration"),
    Broken("negative replicas", """
        app: shop
        services:
          web:
            run: [app]
            replicas: -1   # <-
        """, "services.web.replicas", "greater than or equal to 0"),
    Broken("replicas not a number", """
        app: shop
        services:
          web:
            run: [app]
            replicas: many   # <-
        """, "services.web.replicas", "expected an integer"),
    Broken("probe with two kinds", """
        app: shop
        services:
          web:
            run: [app]
            ports: {http: 8000}
            health:
              readiness: {http: /ready, tcp: http}   # <-
        """, "services.web.health.readiness", "exactly one of http, tcp or exec"),
    Broken("failure_threshold 0", """
        app: shop
        services:
          web:
            run: [app]
            ports: {http: 8000}
            health:
              readiness:
                http: /ready
                failure_threshold: 0   # <-
        """, "services.web.health.readiness.failure_threshold", "at least 1"),
    Broken("unknown restart policy", """
        app: shop
        services:
          web:
            run: [app]
            restart: sometimes   # <-
        """, "services.web.restart", "sometimes"),
    Broken("depends on an unknown service", """
        app: shop
        services:
          web:
            run: [app]
            depends_on: [nope]   # <-
        """, "services.web.depends_on.nope", "unknown service or job 'nope'"),
    Broken("route to an unknown service", """
        app: shop
        routes:
          - {path: /, service: ghost}   # <-
        services:
          web:
            run: [app]
            ports: {http: 8000}
        """, "routes.0.service", "ghost"),
    Broken("unknown engine", """
        app: shop
        engine: nomad   # <-
        services: {}
        """, "engine", "nomad"),
    Broken("bad memory size", """
        app: shop
        services:
          web:
            run: [app]
            resources: {memory: lots}   # <-
        """, "services.web.resources.memory", "lots"),
    Broken("secret file escapes the folder", """
        app: shop
        services:
          web:
            run: [app]
            secrets:
              key: {file: ../../etc/passwd}   # <-
        """, "services.web.secrets.key.file", "escape"),
    Broken("gateway port out of range", """
        app: shop
        gateway:
          port: 99999   # <-
        services: {}
        """, "gateway.port", "out of range"),
    Broken("unknown rollout strategy", """
        app: shop
        services:
          web:
            run: [app]
            rollout:
              strategy: yolo   # <-
        """, "services.web.rollout.strategy", "yolo"),
    Broken("yaml syntax error", """
        app: shop
        services:
          web: [unclosed   # <-
        """, "", ""),
]


def _write(folder: Path, text: str) -> tuple[Path, int]:
    body = textwrap.dedent(text).lstrip("\n")
    lines = body.splitlines()
    marked = [i + 1 for i, line in enumerate(lines) if "# <-" in line]
    assert len(marked) == 1
    manifest = folder / "mso.yaml"
    manifest.write_text(body)
    return manifest, marked[0]


def _mso(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(mso_argv(*args), cwd=folder, capture_output=True, text=True,
                          timeout=60, env=clean_env())


def assert_one_located_error(proc: subprocess.CompletedProcess[str], manifest: Path,
                             case: Broken, line: int) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    # A YAML syntax error may be reported where the parser noticed it (the next line).
    match = re.match(rf"^mso: {re.escape(str(manifest))}:(\d+): (.*)$", lines[0])
    assert match, lines[0]
    if case.field:
        assert int(match.group(1)) == line, lines[0]
        assert match.group(2).startswith(f"{case.field}: "), lines[0]
        assert case.problem in match.group(2), lines[0]
    else:
        assert int(match.group(1)) in (line, line + 1), lines[0]


@pytest.mark.parametrize("case", BROKEN, ids=[c.id for c in BROKEN])
def test_validate_names_file_line_field_and_problem(tmp_path: Path, case: Broken) -> None:
    manifest, line = _write(tmp_path, case.yaml)
    assert_one_located_error(_mso(tmp_path, "validate"), manifest, case, line)


def test_validate_json_of_a_broken_manifest_still_exits_2_with_the_line(
        tmp_path: Path) -> None:
    case = BROKEN[1]
    manifest, line = _write(tmp_path, case.yaml)
    proc = _mso(tmp_path, "validate", "-o", "json")
    assert_one_located_error(proc, manifest, case, line)
    report = json.loads(proc.stdout)
    assert report["valid"] is False and report["file"] == str(manifest)
    [error] = report["errors"]
    assert (error["line"], error["field"]) == (line, case.field)
    assert case.problem in error["message"] and error["file"] == str(manifest)


def test_valid_manifest_exits_0_and_json_summarises_it(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(textwrap.dedent("""
        app: shop
        routes: [{path: /, service: web}]
        services:
          web: {run: [sh], ports: {http: 8000}, depends_on: [db]}
          db: {run: [cat], ports: {pg: {port: 5432, protocol: tcp}}}
        jobs:
          migrate: {run: [migrate], before: [web]}
        """))
    plain = _mso(tmp_path, "validate")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip().endswith(": valid for local (2 services, 1 job)")
    # A command that is not on PATH is a warning (it may be installed before `up`).
    assert plain.stderr.strip() == (f"mso: {tmp_path / 'mso.yaml'}:8: jobs.migrate.run.0: "
                                    "warning: command 'migrate' not found on PATH")
    proc = _mso(tmp_path, "validate", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["valid"] is True and summary["app"] == "shop"
    assert summary["services"] == ["db", "web"] and summary["jobs"] == ["migrate"]
    assert [(w["line"], w["field"]) for w in summary["warnings"]] == \
        [(8, "jobs.migrate.run.0")]


def test_validate_of_a_missing_manifest_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _mso(tmp_path, "validate")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "mso.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_up_refuses_a_broken_manifest_and_starts_nothing(tmp_path: Path) -> None:
    case = BROKEN[1]
    manifest, line = _write(tmp_path, case.yaml)
    proc = _mso(tmp_path, "up", "-d", "--timeout", "20")
    assert_one_located_error(proc, manifest, case, line)
    # No daemon: nothing answers, and no state (socket, database) was created.
    assert not (tmp_path / ".mso" / "api.sock").exists()
    assert not (tmp_path / ".mso" / "state.db").exists()
    ps = _mso(tmp_path, "ps")
    assert ps.returncode == 1 and "nothing has run for" in ps.stderr
