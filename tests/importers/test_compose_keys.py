"""Hand-made cases for every Compose key `mso import` reads: what each becomes, the line
it is reported at, and that the manifest written is valid (round trip)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mso.spec.errors import ManifestError
from tests.importers.helpers import compose, entry, line_of, round_trip


def test_command_entrypoint_image_and_build(tmp_path: Path) -> None:
    text = """
    name: My Shop
    services:
      web:
        image: shop/web:1.0
        entrypoint: python3 -u
        command: ["-m", "http.server", "8000"]   # <-
        build:
          context: .
          dockerfile: Dockerfile.web
          args: [VERSION=1, DEBUG]
          target: prod
          cache_from: [x]
    """
    imported = compose(tmp_path, text)
    web = imported.data["services"]["web"]
    assert imported.data["app"] == "my-shop"
    assert web["run"] == ["python3", "-u", "-m", "http.server", "8000"]
    assert web["image"] == "shop/web:1.0"
    assert web["build"] == {"context": ".", "dockerfile": "Dockerfile.web",
                           "args": {"VERSION": "1", "DEBUG": ""}, "target": "prod"}
    assert entry(imported, "services.web.command", "translated").line == line_of(text)
    assert entry(imported, "services.web.build.cache_from", "dropped")
    assert entry(imported, "services.web.image", "kept")
    round_trip(imported, tmp_path, ("local", "swarm", "kubernetes"))


def test_environment_and_env_file(tmp_path: Path) -> None:
    (tmp_path / "common.env").write_text("A=1\n")
    text = """
    services:
      app:
        command: [app]
        environment:
          - PLAIN=yes
          - FROM_HOST
          - MISSING        # <-
        env_file:
          - common.env
          - path: optional.env
            required: false
    """
    imported = compose(tmp_path, text, env={"FROM_HOST": "host value"})
    app = imported.data["services"]["app"]
    assert app["env"] == {"PLAIN": "yes", "FROM_HOST": "host value"}
    assert app["env_file"] == ["common.env"]
    assert entry(imported, "services.app.environment.MISSING", "dropped").line is not None
    assert entry(imported, "services.app.env_file.1", "dropped")
    round_trip(imported, tmp_path, check_files=True)


def test_secrets_and_configs(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("s3cret")
    (tmp_path / "nginx.conf").write_text("x")
    text = """
    services:
      app:
        command: [app]
        secrets:
          - db_password
          - source: token
            target: api_token
          - outside      # <-
        configs:
          - source: nginx
            target: /etc/nginx/nginx.conf
          - inline
    secrets:
      db_password: {file: ./pw.txt}
      token: {environment: API_TOKEN}
      outside: {external: true}
    configs:
      nginx: {file: ./nginx.conf}
      inline: {content: "hello"}
    """
    imported = compose(tmp_path, text)
    app = imported.data["services"]["app"]
    assert app["secrets"] == {"db_password": {"file": "pw.txt"}, "api_token": {"env": "API_TOKEN"}}
    assert app["config"] == [{"source": "nginx.conf", "target": "etc/nginx/nginx.conf"}]
    assert "external" in entry(imported, "services.app.secrets.2", "dropped").reason
    assert entry(imported, "services.app.secrets.2").line == line_of(text)
    assert "content" in entry(imported, "services.app.configs.1", "dropped").reason
    round_trip(imported, tmp_path)


def test_unknown_secret_is_an_error(tmp_path: Path) -> None:
    text = """
    services:
      app:
        command: [app]
        secrets: [nope]   # <-
    """
    with pytest.raises(ManifestError, match=rf":{line_of(text)}: services.app.secrets.0: unknown secret"):
        compose(tmp_path, text)


def test_ports_expose_and_the_gateway(tmp_path: Path) -> None:
    text = """
    services:
      web:
        command: [web]
        ports:
          - "127.0.0.1:8081:8000"   # <-
          - "9000/udp"
          - target: 8443
            published: "9443"
            app_protocol: http
            name: admin
      api:
        command: [api]
        ports: ["8082:3000"]
        expose: ["5000"]
      db:
        command: [db]
        ports: ["5432:5432"]
    """
    imported = compose(tmp_path, text)
    data = imported.data
    assert data["gateway"] == {"bind": "127.0.0.1", "port": 8081}
    assert data["services"]["web"]["ports"] == {"http": 8000, "admin": 8443}
    assert data["services"]["api"]["ports"] == {"http": 3000, "http-5000": 5000}
    assert data["services"]["db"]["ports"] == {"tcp": {"port": 5432, "protocol": "tcp"}}
    # first match wins: Host routes before the catch-all
    assert data["routes"] == [
        {"path": "/", "host": "admin.web.localhost", "service": "web", "port": "admin"},
        {"path": "/", "host": "api.localhost", "service": "api"},
        {"path": "/", "service": "web"}]
    assert entry(imported, "services.web.ports.0", "translated").line == line_of(text)
    assert "udp" in entry(imported, "services.web.ports.1", "dropped").reason
    assert "tcp" in entry(imported, "services.db.ports.0", "translated").to
    assert entry(imported, "services.api.expose.0", "translated")
    round_trip(imported, tmp_path, ("local", "swarm", "kubernetes"))


def test_depends_on_conditions_and_the_one_shot_job(tmp_path: Path) -> None:
    text = """
    services:
      web:
        command: [web]
        depends_on:
          db: {condition: service_healthy, restart: true}   # <-
          cache: {condition: service_started, required: false}
          migrate: {condition: service_completed_successfully}
      db:
        command: [db]
        healthcheck: {test: [CMD, db-ready]}
      cache:
        command: [cache]
      migrate:
        command: [migrate]
        depends_on: {db: {condition: service_healthy}}
    """
    imported = compose(tmp_path, text)
    data = imported.data
    assert data["services"]["web"]["depends_on"] == {"db": "healthy", "cache": "started"}
    assert data["jobs"]["migrate"] == {"run": ["migrate"], "depends_on": {"db": "healthy"},
                                       "before": ["web"]}
    assert "migrate" not in data["services"]
    assert entry(imported, "services.web.depends_on.db.restart", "dropped").line == line_of(text)
    assert entry(imported, "services.web.depends_on.cache.required", "dropped")
    assert entry(imported, "services.migrate", "translated").to.startswith("jobs.migrate")
    round_trip(imported, tmp_path, ("local", "swarm"))


@pytest.mark.parametrize("test, argv", [
    ('[CMD, pg_isready, -U, app]', ["pg_isready", "-U", "app"]),
    ('[CMD-SHELL, "pg_isready || exit 1"]', ["/bin/sh", "-c", "pg_isready || exit 1"]),
    ('"curl -f http://localhost/"', ["/bin/sh", "-c", "curl -f http://localhost/"]),
])
def test_healthcheck_becomes_an_exec_probe(tmp_path: Path, test: str, argv: list[str]) -> None:
    text = f"""
    services:
      db:
        command: [db]
        healthcheck:
          test: {test}
          interval: 1m30s
          timeout: 10s
          retries: 3
          start_period: 40s
          start_interval: 5s
    """
    imported = compose(tmp_path, text)
    health = imported.data["services"]["db"]["health"]
    assert health["readiness"] == {"exec": argv, "period": "1m30s", "timeout": "10s",
                                   "failure_threshold": 3}
    assert health["startup"] == {"exec": argv, "period": "5s", "timeout": "10s",
                                 "failure_threshold": 8}
    assert entry(imported, "services.db.healthcheck.test", "translated").to.endswith("exec")
    round_trip(imported, tmp_path)


@pytest.mark.parametrize("check", ["{test: [NONE]}", "{disable: true}"])
def test_a_disabled_healthcheck(tmp_path: Path, check: str) -> None:
    imported = compose(tmp_path, f"services:\n  db:\n    command: [db]\n    healthcheck: {check}\n")
    assert "health" not in imported.data["services"]["db"]
    assert entry(imported, "services.db.healthcheck", "dropped")


@pytest.mark.parametrize("restart, mapped", [('"no"', "never"), ("no", "never"), ("always", "always"),
                                             ("unless-stopped", "always"),
                                             ("on-failure:3", "on-failure")])
def test_restart(tmp_path: Path, restart: str, mapped: str) -> None:
    imported = compose(tmp_path, f"services:\n  a:\n    command: [a]\n    restart: {restart}\n")
    assert imported.data["services"]["a"]["restart"] == mapped
    round_trip(imported, tmp_path)


def test_no_restart_is_reported_with_mso_default(tmp_path: Path) -> None:
    imported = compose(tmp_path, "services:\n  a:\n    command: [a]\n")
    assert "restart" not in imported.data["services"]["a"]
    assert "restart: always" in entry(imported, "services.a", "note").to


def test_stop_signal_and_grace(tmp_path: Path) -> None:
    imported = compose(tmp_path, "services:\n  a:\n    command: [a]\n    stop_signal: SIGINT\n"
                                 "    stop_grace_period: 1m30s\n")
    assert imported.data["services"]["a"]["stop"] == {"signal": "SIGINT", "grace": "1m30s"}
    assert round_trip(imported, tmp_path).manifest.services["a"].stop.grace == 90


def test_deploy(tmp_path: Path) -> None:
    text = """
    services:
      web:
        command: [web]
        deploy:
          mode: replicated
          replicas: 3
          resources:
            limits: {cpus: "0.50", memory: 50M, pids: 10}
            reservations: {cpus: "0.25", memory: 20M}
          restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 2m}
          update_config: {parallelism: 2, order: start-first, failure_action: rollback,
                          delay: 10s, monitor: 30s}
          rollback_config: {parallelism: 1}
          placement: {constraints: [node.role == manager]}
      worker:
        command: [worker]
        scale: 2
        deploy:
          mode: global   # <-
          update_config: {order: stop-first}
    """
    imported = compose(tmp_path, text)
    web, worker = imported.data["services"]["web"], imported.data["services"]["worker"]
    assert web["replicas"] == 3
    assert web["resources"] == {"cpu": 0.5, "memory": "50Mi"}
    assert web["restart"] == "on-failure"
    assert web["backoff"] == {"initial": "5s", "reset_after": "2m"}
    assert web["rollout"] == {"strategy": "rolling", "max_surge": 2, "max_unavailable": 0}
    assert worker["replicas"] == 2
    assert worker["rollout"] == {"strategy": "rolling", "max_surge": 0, "max_unavailable": 1}
    for key in ("resources.reservations", "resources.limits.pids", "restart_policy.max_attempts",
                "update_config.delay", "update_config.monitor", "rollback_config", "placement"):
        assert entry(imported, f"services.web.deploy.{key}", "dropped")
    assert entry(imported, "services.worker.deploy.mode", "dropped").line == line_of(text)
    round_trip(imported, tmp_path)


def test_a_web_service_without_update_config_gets_the_default_rollout(tmp_path: Path) -> None:
    imported = compose(tmp_path, "services:\n  web:\n    command: [web]\n    ports: ['80']\n")
    assert "rollout" not in imported.data["services"]["web"]
    notes = [e for e in imported.report.entries if e.key == "services.web.ports" and e.status == "note"]
    assert any("rolling (default)" in (e.to or "") for e in notes)
    assert any("$PORT" in (e.reason or "") for e in notes)
    assert imported.data["gateway"] == {"port": 8080}


def test_profiles(tmp_path: Path) -> None:
    text = "services:\n  a:\n    command: [a]\n  dbg:\n    command: [dbg]\n    profiles: [debug]\n"
    imported = compose(tmp_path, text)
    assert list(imported.data["services"]) == ["a"]
    assert "--profile debug" in entry(imported, "services.dbg.profiles", "dropped").reason
    imported = compose(tmp_path, text, profiles=("debug",))
    assert list(imported.data["services"]) == ["a", "dbg"]
    imported = compose(tmp_path, text, env={"COMPOSE_PROFILES": "debug"})
    assert list(imported.data["services"]) == ["a", "dbg"]


def test_extends_in_the_file_and_from_another(tmp_path: Path) -> None:
    (tmp_path / "common.yaml").write_text(
        "services:\n  base:\n    command: [serve]\n    environment: {A: '1', B: '1'}\n"
        "    ports: ['8000']\n")
    text = """
    services:
      web:
        extends: {file: common.yaml, service: base}
        environment: {B: '2'}
      worker:
        extends: web
        command: [work]
        ports: ['9000']
    """
    imported = compose(tmp_path, text)
    web, worker = imported.data["services"]["web"], imported.data["services"]["worker"]
    assert web["run"] == ["serve"] and web["env"] == {"A": "1", "B": "2"}
    assert worker["run"] == ["work"] and worker["ports"] == {"http": 8000, "http-9000": 9000}
    # the keys taken from common.yaml are reported at their lines there
    assert entry(imported, "services.web.command").file.endswith("common.yaml")
    round_trip(imported, tmp_path)


def test_extension_fields_and_container_only_keys(tmp_path: Path) -> None:
    text = """
    x-defaults: &defaults
      restart: always
    services:
      app:
        <<: *defaults
        command: [app]
        x-team: payments
        network_mode: host     # <-
        privileged: true
        networks: [back]
        volumes: ["./data:/data"]
        container_name: app1
    networks:
      back: {}
    version: "3.9"
    """
    imported = compose(tmp_path, text)
    assert imported.data["services"]["app"]["restart"] == "always"
    assert entry(imported, "x-defaults", "dropped")
    assert entry(imported, "services.app.x-team", "dropped")
    assert entry(imported, "services.app.network_mode", "dropped").line == line_of(text)
    for key in ("privileged", "networks", "volumes", "container_name"):
        assert entry(imported, f"services.app.{key}", "dropped").reason
    assert entry(imported, "networks", "dropped") and entry(imported, "version", "dropped")
    round_trip(imported, tmp_path)


def test_interpolation_with_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAG=1.2\nPORT_HOST=8089\nGREETING=from-dotenv\n")
    text = """
    services:
      web:
        image: "shop/web:${TAG}"
        command: [serve, "--greeting", "$GREETING", "--price", "$$5", "${UNSET_VAR}"]
        environment:
          MODE: ${MODE:-dev}
          EMPTY_DEFAULT: ${NOPE-fallback}
        ports: ["${PORT_HOST}:8000"]
    """
    imported = compose(tmp_path, text, env={"GREETING": "from-shell"})
    web = imported.data["services"]["web"]
    assert web["image"] == "shop/web:1.2"
    assert web["run"] == ["serve", "--greeting", "from-shell", "--price", "$5", ""]
    assert web["env"] == {"MODE": "dev", "EMPTY_DEFAULT": "fallback"}
    assert imported.data["gateway"]["port"] == 8089
    assert entry(imported, "${UNSET_VAR}", "note").line == 5
    # `$` is written `$$` so mso's own interpolation gives back a literal `$5`
    assert "$$5" in imported.yaml_text()
    assert round_trip(imported, tmp_path).manifest.services["web"].run[4] == "$5"


def test_required_variable_is_an_error_with_its_line(tmp_path: Path) -> None:
    text = """
    services:
      web:
        command: [web, "${DB_URL?set DB_URL first}"]   # <-
    """
    with pytest.raises(ManifestError, match=rf":{line_of(text)}: services.web.command.1: "
                                            "variable DB_URL: set DB_URL first"):
        compose(tmp_path, text)


def test_paths_are_written_relative_to_the_manifest(tmp_path: Path) -> None:
    sub = tmp_path / "app"
    sub.mkdir()
    (sub / "x.env").write_text("A=1\n")
    (sub / "compose.yaml").write_text("services:\n  a:\n    command: [a]\n    env_file: x.env\n"
                                      "    build: .\n")
    from mso.importers import import_file
    imported = import_file(sub / "compose.yaml", {}, out_dir=tmp_path)
    a = imported.data["services"]["a"]
    assert a["cwd"] == "app" and a["env_file"] == ["app/x.env"] and a["build"] == {"context": "app"}
    # a manifest below the compose folder cannot reach its files: each is reported
    deeper = sub / "deploy"
    deeper.mkdir()
    imported = import_file(sub / "compose.yaml", {}, out_dir=deeper)
    assert "outside" in entry(imported, "services.a.env_file", "dropped").reason


def test_a_value_mso_refuses_is_reported_at_the_compose_line(tmp_path: Path) -> None:
    from mso.importers import load_imported
    text = """
    services:
      a:
        command: [a]
        stop_signal: SIGFOO   # <-
    """
    imported = compose(tmp_path, text)
    with pytest.raises(ManifestError, match=rf"compose.yaml:{line_of(text)}: services.a.stop.signal: "
                                            "unknown or unusable stop signal"):
        load_imported(imported, {})


def test_a_value_of_the_wrong_kind_names_the_service(tmp_path: Path) -> None:
    text = """
    services:
      a:             # <-
        command: [a]
        deploy: {replicas: many}
    """
    with pytest.raises(ManifestError, match=rf"compose.yaml:{line_of(text)}: services.a: cannot read"):
        compose(tmp_path, text)


def test_a_service_name_used_as_a_host_is_noted(tmp_path: Path) -> None:
    text = """
    services:
      api:
        command: [api]
        environment:
          REDIS_URL: redis://redis:6379      # <-
          DATABASE_URL: postgresql://app:pw@db:5432/app
        depends_on: [redis]
      redis:
        command: [redis-server]
      db:
        command: [postgres]
    """
    imported = compose(tmp_path, text)
    redis = entry(imported, "services.api.environment.REDIS_URL", "note")
    assert redis.line == line_of(text)
    assert "$REDIS_HOST:$REDIS_PORT" in redis.reason and "replaces the REDIS_URL" in redis.reason
    db = entry(imported, "services.api.environment.DATABASE_URL", "note")
    assert "add db to depends_on" in db.reason


def test_include_override_files_are_refused_with_why(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("services:\n  a:\n    command: [a]\n")
    (tmp_path / "override.yaml").write_text("services:\n  a:\n    command: [b]\n")
    with pytest.raises(ManifestError, match="override.yaml:2: services.a: .*override files"):
        compose(tmp_path, "include:\n  - path: [base.yaml, override.yaml]\n")


def test_develop_watch_becomes_watch(tmp_path: Path) -> None:
    text = """
    services:
      web:
        command: [python3, app.py]
        develop:
          watch:
            - path: ./src
              action: rebuild
              ignore: [node_modules/, "*.log"]
            - path: ./static
              action: sync            # <-
              target: /app/static
            - path: ./requirements.txt
              action: sync+restart
              target: /app/requirements.txt
    """
    imported = compose(tmp_path, text)
    web = imported.data["services"]["web"]
    assert web["watch"] == {"paths": ["src", "requirements.txt"],
                            "ignore": ["node_modules/", "*.log"]}
    assert entry(imported, "services.web.develop.watch.0", "translated").to == \
        "services.web.watch"
    assert entry(imported, "services.web.develop.watch.1", "dropped").line == line_of(text) - 1
    round_trip(imported, tmp_path, ("local",))
