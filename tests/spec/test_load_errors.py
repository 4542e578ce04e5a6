"""A corpus of broken manifests: each error names the exact field, line and problem."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mso.spec import ManifestError, load_manifest

from .conftest import WriteManifest
from .helpers import marked_line


@dataclass(frozen=True)
class Case:
    id: str
    yaml: str
    field: str
    message: str
    files: dict[str, str | bytes] = dc_field(default_factory=dict)
    environ: dict[str, str] = dc_field(default_factory=dict)


CASES = [
    Case("cwd of a container service", """
        app: shop
        services:
          cache:
            image: redis:7
            cwd: ./cache   # <-
        """, "services.cache.cwd", "runs in its image's WORKDIR on every engine"),
    Case("unknown top-level key", """
        app: shop
        servces: {}   # <-
        """, "servces", "unknown key 'servces' (did you mean 'services'?)"),
    Case("unknown service key", """
        app: shop
        services:
          web:
            run: [app]
            replica: 2   # <-
        """, "services.web.replica", "did you mean 'replicas'?"),
    Case("duplicate key", """
        app: shop
        services:
          web:
            run: [app]
            replicas: 1
            replicas: 2   # <-
        """, "services.web.replicas", "duplicate key 'replicas' (first defined on line 5)"),
    Case("bad service name", """
        app: shop
        services:
          Web_1:   # <-
            run: [app]
        """, "services.Web_1", "invalid name 'Web_1'"),
    Case("bad app name", """
        app: My Shop   # <-
        services: {}
        """, "app", "invalid name 'My Shop'"),
    Case("app name too long", f"""
        app: {"a" * 64}   # <-
        """, "app", "at most 63 characters"),
    Case("port out of range", """
        app: shop
        services:
          web:
            run: [app]
            ports:
              http: 70000   # <-
        """, "services.web.ports.http", "port 70000 is out of range (1-65535)"),
    Case("duplicate port number", """
        app: shop
        services:
          web:
            run: [app]
            ports:
              http: 8000
              admin: 8000   # <-
        """, "services.web.ports.admin", "port 8000 is already used by port 'http'"),
    Case("bad port name", """
        app: shop
        services:
          web:
            run: [app]
            ports:
              HTTP_Main: 8000   # <-
        """, "services.web.ports.HTTP_Main", "invalid port name 'HTTP_Main'"),
    Case("port name without letter", """
        app: shop
        services:
          web:
            run: [app]
            ports:
              8000: 8000   # <-
        """, "services.web.ports.8000", "at least one letter"),
    Case("protocol not http or tcp", """
        app: shop
        services:
          web:
            run: [app]
            ports:
              dns: {port: 53, protocol: udp}   # <-
        """, "services.web.ports.dns.protocol", "must be one of 'http' or 'tcp' (got 'udp')"),
    Case("run string without shell", """
        app: shop
        services:
          web:
            run: python3 app.py   # <-
        """, "services.web.run", "set shell: true"),
    Case("empty run", """
        app: shop
        services:
          web:
            run: []   # <-
        """, "services.web.run", "run must not be empty"),
    Case("run item not a string", """
        app: shop
        services:
          web:
            run:
              - app
              - {flag: 1}   # <-
        """, "services.web.run.1", "expected a string"),
    Case("port given as a word", """
        app: shop
        services:
          web:
            run: [app]
            ports:
              http: eighty   # <-
        """, "services.web.ports.http", "expected a port number"),
    Case("missing run", """
        app: shop
        services:
          web:   # <-
            replicas: 1
        """, "services.web.run", "required key is missing"),
    Case("bad duration", """
        app: shop
        services:
          web:
            run: [app]
            stop: {grace: 10 parsecs}   # <-
        """, "services.web.stop.grace", "'10 parsecs' is not a duration"),
    Case("negative replicas", """
        app: shop
        services:
          web:
            run: [app]
            replicas: -1   # <-
        """, "services.web.replicas", "greater than or equal to 0 (got -1)"),
    Case("replicas not a number", """
        app: shop
        services:
          web:
            run: [app]
            replicas: many   # <-
        """, "services.web.replicas", "expected an integer, got a string"),
    Case("replicas true", """
        app: shop
        services:
          web:
            run: [app]
            replicas: true   # <-
        """, "services.web.replicas", "expected a whole number, not true/false"),
    Case("gateway bind not an address", """
        app: shop
        gateway:
          bind: 999.1.1.1   # <-
        services:
          web:
            run: [app]
        """, "gateway.bind", "'999.1.1.1' is not an IP address"),
    Case("probe with two kinds", """
        app: shop
        services:
          web:
            run: [app]
            ports: {http: 8000}
            health:
              readiness: {http: /ready, tcp: http}   # <-
        """, "services.web.health.readiness", "exactly one of http, tcp or exec (got http and tcp)"),
    Case("probe with no kind", """
        app: shop
        services:
          web:
            run: [app]
            health:
              liveness: {period: 5s}   # <-
        """, "services.web.health.liveness", "exactly one of http, tcp or exec (got none)"),
    Case("failure_threshold 0", """
        app: shop
        services:
          web:
            run: [app]
            ports: {http: 8000}
            health:
              readiness:
                http: /ready
                failure_threshold: 0   # <-
        """, "services.web.health.readiness.failure_threshold", "must be at least 1"),
    Case("liveness success_threshold 2", """
        app: shop
        services:
          web:
            run: [app]
            ports: {http: 8000}
            health:
              liveness:
                tcp: http
                success_threshold: 2   # <-
        """, "services.web.health.liveness.success_threshold", "must be 1 for liveness probes"),
    Case("http probe on tcp-only service", """
        app: shop
        services:
          db:
            run: [db]
            ports: {pg: {port: 5432, protocol: tcp}}
            health:
              readiness: {http: /ready}   # <-
        """, "services.db.health.readiness.http", "an http probe needs an http port"),
    Case("tcp probe naming unknown port", """
        app: shop
        services:
          web:
            run: [app]
            ports: {http: 8000}
            health:
              liveness: {tcp: admin}   # <-
        """, "services.web.health.liveness.tcp", "port 'admin' is not defined in ports (defined: http)"),
    Case("http probe naming unknown port", """
        app: shop
        services:
          web:
            run: [app]
            ports: {http: 8000}
            health:
              readiness: {http: /ready, port: admin}   # <-
        """, "services.web.health.readiness.port", "port 'admin' is not defined"),
    Case("restart sometimes", """
        app: shop
        services:
          web:
            run: [app]
            restart: sometimes   # <-
        """, "services.web.restart", "must be one of 'always', 'on-failure' or 'never' (got 'sometimes')"),
    Case("depends_on unknown service", """
        app: shop
        services:
          web:
            run: [app]
            depends_on: [db]   # <-
        """, "services.web.depends_on.db", "unknown service or job 'db' (defined: web)"),
    Case("depends_on unknown service, mapping form", """
        app: shop
        services:
          web:
            run: [app]
            depends_on:
              db: healthy   # <-
        """, "services.web.depends_on.db", "unknown service or job 'db'"),
    Case("dependency cycle", """
        app: shop
        services:
          web:
            run: [app]
            depends_on: [api]   # <-
          api:
            run: [api]
            depends_on: [web]
        """, "services.web.depends_on.api", "dependency cycle: web -> api -> web"),
    Case("dependency cycle through a job", """
        app: shop
        services:
          web:
            run: [app]
            depends_on: {migrate: completed}   # <-
        jobs:
          migrate:
            run: [migrate]
            depends_on: [web]
        """, "services.web.depends_on.migrate", "dependency cycle: web -> migrate -> web"),
    Case("dependency cycle through before", """
        app: shop
        services:
          web:
            run: [app]
        jobs:
          migrate:
            run: [migrate]
            depends_on: [web]
            before: [web]   # <-
        """, "jobs.migrate.before.0", "dependency cycle: web -> migrate -> web"),
    Case("bad depends_on condition", """
        app: shop
        services:
          web:
            run: [app]
            depends_on:
              api: ready   # <-
          api:
            run: [api]
        """, "services.web.depends_on.api", "must be one of 'started', 'healthy' or 'completed' (got 'ready')"),
    Case("depends_on a job without completed", """
        app: shop
        services:
          web:
            run: [app]
            depends_on:
              migrate: healthy   # <-
        jobs:
          migrate:
            run: [migrate]
        """, "services.web.depends_on.migrate", "the only condition for a job is completed"),
    Case("job before unknown service", """
        app: shop
        services:
          web:
            run: [app]
        jobs:
          migrate:
            run: [migrate]
            before: [web, orders]   # <-
        """, "jobs.migrate.before.1", "unknown service 'orders'"),
    Case("service and job share a name", """
        app: shop
        services:
          web:
            run: [app]
        jobs:
          web:   # <-
            run: [migrate]
        """, "jobs.web", "is both a service and a job"),
    Case("route to unknown service", """
        app: shop
        routes:
          - path: /
            service: front   # <-
        services:
          web:
            run: [app]
            ports: {http: 8000}
        """, "routes.0.service", "unknown service 'front' (defined: web)"),
    Case("route to tcp port", """
        app: shop
        routes:
          - service: db
            port: pg   # <-
        services:
          db:
            run: [db]
            ports: {pg: {port: 5432, protocol: tcp}}
        """, "routes.0.port", "port 'pg' is tcp; only http ports can be routed"),
    Case("route to service without http port", """
        app: shop
        routes:
          - service: db   # <-
        services:
          db:
            run: [db]
        """, "routes.0.service", "has no http port to route to"),
    Case("secret with both file and env", """
        app: shop
        services:
          web:
            run: [app]
            secrets:
              db: {file: ./db.txt, env: DB}   # <-
        """, "services.web.secrets.db", "exactly one of file or env", {"db.txt": "hunter2"}),
    Case("secret file missing", """
        app: shop
        services:
          web:
            run: [app]
            secrets:
              db: {file: ./secrets/db.txt}   # <-
        """, "services.web.secrets.db.file", "secret file './secrets/db.txt' not found"),
    Case("secret env var missing", """
        app: shop
        services:
          web:
            run: [app]
            secrets:
              db: {env: DB_PASSWORD}   # <-
        """, "services.web.secrets.db.env", "environment variable DB_PASSWORD is not set"),
    Case("env_file escaping the folder", """
        app: shop
        services:
          web:
            run: [app]
            env_file: [.env, ../../etc/environment]   # <-
        """, "services.web.env_file.1", "escapes the manifest's folder", {".env": "A=1"}),
    Case("absolute cwd outside the folder", """
        app: shop
        services:
          web:
            run: [app]
            cwd: /etc   # <-
        """, "services.web.cwd", "outside the manifest's folder"),
    Case("env_file missing", """
        app: shop
        services:
          web:
            run: [app]
            env_file: .env.local   # <-
        """, "services.web.env_file.0", "env file '.env.local' not found"),
    Case("unset variable without default", """
        app: shop
        services:
          web:
            run: [app]
            env:
              DSN: postgres://${DB_HOST}/shop   # <-
        """, "services.web.env.DSN", "variable DB_HOST is not set"),
    Case("required variable with message", """
        app: shop
        services:
          web:
            run: [app, "${MODE:?set MODE to dev or prod}"]   # <-
        """, "services.web.run.1", "variable MODE: set MODE to dev or prod"),
    Case("canary steps with rolling strategy", """
        app: shop
        services:
          web:
            run: [app]
            rollout:
              steps:   # <-
                - set_weight: 10
        """, "services.web.rollout.steps", "steps apply to strategy canary only (strategy is rolling)"),
    Case("set_weight 150", """
        app: shop
        services:
          web:
            run: [app]
            rollout:
              strategy: canary
              steps:
                - set_weight: 150   # <-
        """, "services.web.rollout.steps.0.set_weight", "between 0 and 100, got 150"),
    Case("step with two kinds", """
        app: shop
        services:
          web:
            run: [app]
            rollout:
              strategy: canary
              steps:
                - {set_weight: 10, pause: 5s}   # <-
        """, "services.web.rollout.steps.0", "exactly one of set_weight, pause or analysis"),
    Case("max_surge and max_unavailable 0", """
        app: shop
        services:
          web:
            run: [app]
            rollout:
              max_surge: 0
              max_unavailable: 0%   # <-
        """, "services.web.rollout.max_unavailable", "cannot both be 0"),
    Case("autoscale min greater than max", """
        app: shop
        services:
          web:
            run: [app]
            autoscale:
              min: 5   # <-
              max: 2
              target_rps_per_replica: 100
        """, "services.web.autoscale.min", "min (5) must not be greater than max (2)"),
    Case("memory with docker units", """
        app: shop
        services:
          web:
            run: [app]
            resources: {memory: 512m}   # <-
        """, "services.web.resources.memory", "Mi/Gi are binary"),
    Case("gateway port out of range", """
        app: shop
        gateway:
          port: 0   # <-
        """, "gateway.port", "port 0 is out of range"),
    Case("YAML syntax error", """
        app: shop
        services:
          web:
            run: [app
            replicas: 2   # <-
        """, "", "YAML syntax error"),
    Case("top level is a list", """
        - app: shop   # <-
        """, "", "the top level must be a mapping"),
    Case("unknown engine", """
        app: shop
        engine: nomad   # <-
        """, "engine", "must be one of 'local', 'swarm' or 'kubernetes' (got 'nomad')"),
    Case("unknown engines key", """
        app: shop
        engines:
          kubernetes: {namespace: shop, nmespace: x}   # <-
        """, "engines.kubernetes.nmespace", "did you mean 'namespace'?"),
    Case("config target escaping", """
        app: shop
        services:
          web:
            run: [app]
            config:
              - {source: a.toml, target: ../a.toml}   # <-
        """, "services.web.config.0.target", "relative path without '..'", {"a.toml": "x"}),
    Case("bad stop signal", """
        app: shop
        services:
          web:
            run: [app]
            stop: {signal: SIGFOO}   # <-
        """, "services.web.stop.signal", "unknown or unusable stop signal 'SIGFOO'"),
    Case("secret as_env colliding with env", """
        app: shop
        services:
          web:
            run: [app]
            env: {DB_PASSWORD: x}
            secrets:
              db_password: {env: PW, as_env: true}   # <-
        """, "services.web.secrets.db_password.as_env", "DB_PASSWORD is also set in env", {}, {"PW": "s3cret"}),
    Case("env value null", """
        app: shop
        services:
          web:
            run: [app]
            env:
              TOKEN:   # <-
        """, "services.web.env.TOKEN", "TOKEN has no value"),
    Case("preview port is the gateway port", """
        app: shop
        gateway: {port: 8080}
        services:
          web:
            run: [app]
            ports: {http: 8000}
            rollout:
              strategy: blue_green
              preview_port: 8080   # <-
        """, "services.web.rollout.preview_port", "port 8080 is already used by the gateway"),
    Case("two services share a preview port", """
        app: shop
        services:
          web:
            run: [app]
            ports: {http: 8000}
            rollout: {strategy: blue_green, preview_port: 8081}
          api:
            run: [app]
            ports: {http: 8000}
            rollout:
              strategy: blue_green
              preview_port: 8081   # <-
        """, "services.api.rollout.preview_port", "port 8081 is already used by service 'web'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_manifest_reports_field_line_and_message(case: Case, write_manifest: WriteManifest) -> None:
    path = write_manifest(case.yaml, case.files)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, case.environ)
    matching = [e for e in info.value.errors if e.field == case.field]
    assert matching, f"no error at {case.field!r}; got:\n{info.value}"
    err = matching[0]
    assert err.line == marked_line(case.yaml), str(info.value)
    assert case.message in err.message, str(info.value)
    assert err.file == str(path)
    assert str(err).startswith(f"{path}:{err.line}: ")


def test_corpus_is_big_enough() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_text_has_no_pydantic_noise(case: Case, write_manifest: WriteManifest) -> None:
    path = write_manifest(case.yaml, case.files)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, case.environ)
    text = str(info.value)
    for noise in ("Value error,", "errors.pydantic.dev", "input_value", "input_type", "[type=", "Traceback"):
        assert noise not in text


def test_secret_values_never_appear_in_errors(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        """
        app: shop
        services:
          web:
            run: [app]
            env: {DB_PASSWORD: x}
            secrets:
              db_password: {env: PW, as_env: true}
              other: {file: missing.txt}
        """
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path, {"PW": "hunter2-very-secret"})
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(info.value.errors)


def test_several_errors_are_reported_at_once_one_per_line(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        """
        app: Shop
        services:
          web:
            run: [app]
            replicas: -1
            restart: sometimes
        """
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path, {})
    lines = str(info.value).splitlines()
    assert [e.field for e in info.value.errors] == ["app", "services.web.replicas", "services.web.restart"]
    assert len(lines) == 3
    assert [e.line for e in info.value.errors] == [1, 5, 6]


def test_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "nope.yaml")
    assert info.value.line is None
    assert "file not found" in str(info.value)


def test_directory_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="is a directory"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        (b"", None, "the file is empty"),
        (b"# just a comment\n", None, "the file is empty"),
        (b"app: shop\nname: \xff\xfe\n", 2, "not valid UTF-8"),
        (b"app: shop\n---\napp: other\n", 2, "YAML syntax error"),
        (b"just a string\n", 1, "the top level must be a mapping"),
        (b"a: &a [*a]\n", 1, "recursive YAML alias"),
        (b"app: shop\n\tservices: {}\n", 2, "a tab character (column 1): YAML indents with spaces only"),
        # found by the fuzzer (tests/fuzz): PyYAML's reader errors carry no line of their own
        (b"app: shop\nservices:\n  web: {run: [a\x07]}\n", 3,
         "control character U+0007 (column 16): YAML does not allow it"),
        (b"app: shop\n\nx: \x00\n", 3, "control character U+0000 (column 4)"),
        (b"app: \xc2\x85\x1b[31m\n", 1, "control character U+001B (column 7)"),
        (b"app: shop\nservices: {}\ngateway: {port: !!int http}\n", 3, "gateway.port: 'http' cannot be read as !!int"),
        (b"app: !!float shop\nservices: {}\n", 1, "app: 'shop' cannot be read as !!float"),
        (b"app: !!timestamp shop\nservices: {}\n", 1, "app: 'shop' cannot be read as !!timestamp"),
        (b"app: shop\nservices:\n  web:\n    run: [x]\n    stop: {grace: 1" + b"0" * 400 + b"}\n", 5,
         "services.web.stop.grace: duration 10000000000000000000... is too large"),
        (b"app: shop\nservices:\n  web:\n    run: [x]\n    stop: {grace: 1" + b"0" * 400 + b"h}\n", 5,
         "h' is not a duration"),
        (b"app: shop\nservices:\n  web:\n    run: [x]\n    resources: {memory: 1" + b"0" * 400 + b"Mi}\n", 5,
         "services.web.resources.memory: size '1000"),
        (b"app: shop\nservices:\n  web:\n    run: [x]\n    resources: {cpu: 1" + b"0" * 400 + b"m}\n", 5,
         "services.web.resources.cpu: CPU '1000"),
        (b"app: shop\nservices:\n  web:\n    run: [x]\n    depends_on: [[db]]\n", 5,
         "services.web.depends_on: expected the name of a service or job, got list"),
    ],
    ids=["empty", "only comment", "bad encoding", "two documents", "scalar", "recursive alias", "tab indent",
         "bell", "nul", "escape after a NEL", "int tag", "float tag", "timestamp tag", "huge int duration",
         "huge compound duration", "huge size", "huge cpu", "list in depends_on"],
)
def test_unreadable_files_are_clean_errors(tmp_path: Path, content: bytes, line: int | None, fragment: str) -> None:
    path = tmp_path / "mso.yaml"
    path.write_bytes(content)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, {})
    assert info.value.line == line, str(info.value)
    assert fragment in str(info.value)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "mso.yaml"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ManifestError, match="alias bomb") as info:
        load_manifest(path, {})
    # the line of the top-level entry that went past the limit (the fuzzer found it had none)
    assert (info.value.line, info.value.field) == (6, "a5"), str(info.value)  # 10**5 x's


def test_union_typed_fields_report_one_error(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        """
        app: shop
        services:
          web:
            run: [app, {flag: 1}]
            secrets: {s: {env: X, as_env: 3}}
        """
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path, {"X": "x"})
    assert [(e.field, e.message) for e in info.value.errors] == [
        ("services.web.run.1", "expected a string"),
        ("services.web.secrets.s.as_env", "expected true or false or a string, got a number"),
    ]


_FRAGMENTS = [
    "app: a\n", "services:\n", "  web:\n", "    run: [x]\n", "    ports: {http: 8000}\n", "    replicas: -1\n",
    "- x\n", "  - y\n", "&a [*a]\n", "${X}\n", "key: 'open\n", "\t", ": : :\n", "{[}]\n", "jobs: {j: {run: x}}\n",
    "routes: [{service: web}]\n", "    health: {readiness: {http: /}}\n", "    depends_on: [web]\n", "\xff\n", "---\n",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=8))
def test_loading_arbitrary_text_raises_only_manifest_errors(tmp_path: Path, parts: list[str]) -> None:
    path = tmp_path / "mso.yaml"
    path.write_text("".join(parts))
    try:
        load_manifest(path, {}, check_files=False)
    except ManifestError as exc:
        assert str(exc).startswith(str(path))
        assert "cannot load manifest" not in str(exc)  # the catch-all hides bugs: must not fire


def test_a_program_path_too_long_to_check_is_a_warning(write_manifest: WriteManifest) -> None:
    # found by the fuzzer: OSError (ENAMETOOLONG) escaped from command_warnings
    path = write_manifest(f"app: shop\nservices:\n  web:\n    run: ['./{'y' * 5000}']\n")
    (warning,) = load_manifest(path, {}).command_warnings()
    assert warning.line == 4 and "cannot check" in warning.message


def test_a_cwd_too_long_for_the_os_is_a_file_line_error(write_manifest: WriteManifest) -> None:
    # found by the 10,000-case fuzz run: is_dir() raised OSError (ENAMETOOLONG) past the
    # loader's own errors
    path = write_manifest(f"app: shop\nservices:\n  web:\n    run: [sleep, '1']\n"
                          f"    cwd: './{'y' * 5000}'\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path, {})
    assert "cannot load manifest" not in str(info.value)
    assert "services.web.cwd" in str(info.value) and "cannot use directory" in str(info.value)
