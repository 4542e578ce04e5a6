"""The Compose Specification's own examples, imported.

Sources (compose-spec/compose-spec, read through the project's library of public
repositories; copied verbatim, except the `05-services.md` ones, written from the
specification's text):
* `02-model.md` (commit 12c2232e), "Illustrative example";
* `15-profiles.md` (commit 17c223e1), "Illustrative example";
* `14-include.md` (commit 113e4855), the first example (with the included file written here);
* `05-services.md`, `depends_on`: the short and long syntax examples;
* `deploy.md` (commit 04828616): the `deploy:` examples (below).

Every one of them runs images only (no `command:`): each becomes a service without `run:`
(the image's own command, as a container on every engine), and what is checked is that
nothing is dropped silently: each service and key is in the report with its line, and what
is written is a valid manifest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mso.spec.errors import ManifestError
from tests.importers.helpers import compose, entry, round_trip

MODEL = """\
services:
  frontend:
    image: awesome/webapp
    ports:
      - "443:8043"
    networks:
      - front-tier
      - back-tier
    configs:
      - httpd-config
    secrets:
      - server-certificate

  backend:
    image: awesome/database
    volumes:
      - db-data:/etc/data
    networks:
      - back-tier

volumes:
  db-data:
    driver: flocker
    driver_opts:
      size: "10GiB"

configs:
  httpd-config:
    external: true

secrets:
  server-certificate:
    external: true

networks:
  # The presence of these objects is sufficient to define them
  front-tier: {}
  back-tier: {}
"""

PROFILES = """\
services:
  foo:
    image: foo
  bar:
    image: bar
    profiles:
      - test
  baz:
    image: baz
    depends_on:
      - bar
    profiles:
      - test
  zot:
    image: zot
    depends_on:
      - bar
    profiles:
      - debug
"""

INCLUDE = """\
include:
  - my-compose-include.yaml  #with serviceB declared
services:
  serviceA:
    build: .
    depends_on:
      - serviceB #use serviceB directly as if it was declared in this Compose file
"""

DEPENDS_SHORT = """\
services:
  web:
    build: .
    depends_on:
      - db
      - redis
  redis:
    image: redis
  db:
    image: postgres
"""

DEPENDS_LONG = """\
services:
  web:
    build: .
    depends_on:
      db:
        condition: service_healthy
        restart: true
      redis:
        condition: service_started
  redis:
    image: redis
  db:
    image: postgres
"""


def test_the_model_example_reports_every_key(tmp_path: Path) -> None:
    imported = compose(tmp_path, MODEL)
    lines = MODEL.splitlines()
    for key, written in (("volumes", "volumes:"), ("networks", "networks:")):
        found = entry(imported, key, "dropped")
        assert found.line == lines.index(written) + 1, found
    for name, image in (("frontend", "awesome/webapp"), ("backend", "awesome/database")):
        found = entry(imported, f"services.{name}.image", "kept")
        assert "container" in found.reason and found.line == lines.index(f"    image: {image}") + 1
        assert imported.data["services"][name]["image"] == image
        assert "run" not in imported.data["services"][name]  # the image's own command
    assert imported.local_blockers == []
    assert "# Not imported" not in imported.yaml_text()
    round_trip(imported, tmp_path, ("local", "swarm", "kubernetes"))


@pytest.mark.parametrize("profiles, kept", [((), ["foo"]), (("test",), ["foo", "bar", "baz"]),
                                            (("test", "debug"), ["foo", "bar", "baz", "zot"])])
def test_the_profiles_example(tmp_path: Path, profiles: tuple[str, ...], kept: list[str]) -> None:
    imported = compose(tmp_path, PROFILES, profiles=profiles)
    left_out = {e.key for e in imported.report.entries
                if e.status == "dropped" and e.reason and "profile" in e.reason}
    assert left_out == {f"services.{n}.profiles" for n in ("bar", "baz", "zot") if n not in kept}
    # the kept ones are image-only: containers, each image reported
    assert sorted(imported.data["services"]) == sorted(kept)
    assert all(entry(imported, f"services.{n}.image", "kept") for n in kept)
    assert imported.local_blockers == []
    round_trip(imported, tmp_path)


def test_the_profiles_example_with_debug_only_is_invalid(tmp_path: Path) -> None:
    """The spec: with only `debug`, zot depends on bar, which is not enabled: invalid."""
    with pytest.raises(ManifestError) as caught:
        compose(tmp_path, PROFILES, profiles=("debug",))
    assert "compose.yaml:17: services.zot.depends_on.0: " in str(caught.value)
    assert "--profile test" in str(caught.value)


def test_the_include_example(tmp_path: Path) -> None:
    (tmp_path / "my-compose-include.yaml").write_text(
        "services:\n  service-b:\n    command: [python3, -m, http.server]\n    expose: ['8000']\n")
    imported = compose(tmp_path, INCLUDE.replace("serviceA", "service-a")
                       .replace("serviceB", "service-b"))
    assert entry(imported, "include", "translated").line == 1
    # service-a has only `build:`: it runs its image's own command, as a container
    assert imported.data["services"]["service-a"]["build"]
    assert "run" not in imported.data["services"]["service-a"]
    assert imported.data["services"]["service-b"]["run"] == ["python3", "-m", "http.server"]
    assert imported.data["services"]["service-b"]["ports"] == {"http": 8000}
    round_trip(imported, tmp_path)


def test_service_names_that_are_not_dns_labels_are_refused(tmp_path: Path) -> None:
    """The include example's own names (serviceA) are not DNS labels, which mso needs."""
    (tmp_path / "my-compose-include.yaml").write_text("services:\n  serviceB:\n    image: b\n")
    with pytest.raises(ManifestError, match=r"compose.yaml:4: services.serviceA: service name "):
        compose(tmp_path, INCLUDE)


@pytest.mark.parametrize("text", [DEPENDS_SHORT, DEPENDS_LONG], ids=["short", "long"])
def test_the_depends_on_examples(tmp_path: Path, text: str) -> None:
    imported = compose(tmp_path, text)
    services = imported.data["services"]
    assert sorted(services) == ["db", "redis", "web"]
    assert set(services["web"]["depends_on"]) == {"db", "redis"}  # kept: they all run now
    assert not any(e.key.startswith("services.web.depends_on") and e.status == "dropped"
                   and "restart" not in e.key for e in imported.report.entries)
    round_trip(imported, tmp_path)


# deploy.md (commit 04828616): its examples' `deploy:` blocks, each put under a service that
# has a command (theirs run `image: awesome/webapp` only, which is left out: see above).
DEPLOY_EXAMPLES = {
    "endpoint_mode": ("""\
    ports:
      - "8080:80"
    deploy:
      mode: replicated
      replicas: 2
      endpoint_mode: vip
""", {"replicas": 2, "ports": {"http": 80}}, ["deploy.endpoint_mode"]),
    "resources": ("""\
    deploy:
      resources:
        limits:
          cpus: '0.50'
          memory: 50M
        reservations:
          cpus: '0.25'
          memory: 20M
""", {"resources": {"cpu": 0.5, "memory": "50Mi"}}, ["deploy.resources.reservations"]),
    "placement": ("""\
    deploy:
      placement:
        constraints:
          disktype: ssd
""", {}, ["deploy.placement"]),
    "restart_policy": ("""\
    deploy:
      restart_policy:
        condition: on-failure
        delay: 5s
        max_attempts: 3
        window: 120s
""", {"restart": "on-failure", "backoff": {"initial": "5s", "reset_after": "120s"}},
     ["deploy.restart_policy.max_attempts"]),
    "update_config": ("""\
    deploy:
      update_config:
        parallelism: 2
        delay: 10s
        order: stop-first
""", {"rollout": {"strategy": "rolling", "max_surge": 0, "max_unavailable": 2}},
     ["deploy.update_config.delay"]),
}


@pytest.mark.parametrize("name", list(DEPLOY_EXAMPLES))
def test_the_deploy_examples(tmp_path: Path, name: str) -> None:
    block, expected, dropped = DEPLOY_EXAMPLES[name]
    text = "services:\n  frontend:\n    command: [webapp]\n" + block
    imported = compose(tmp_path, text)
    frontend = imported.data["services"]["frontend"]
    for key, value in expected.items():
        assert frontend[key] == value, key
    for key in dropped:
        assert entry(imported, f"services.frontend.{key}", "dropped")
    round_trip(imported, tmp_path)
