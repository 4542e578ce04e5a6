"""`mso new service`: the service's folder from a template, its entry added to mso.yaml
with the user's comments and formatting kept, and each built-in template's own test
passing in the folder it made."""

from __future__ import annotations

import difflib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mso.cli.client import CliError
from mso.cli.scaffold import add_service
from tests.cli.conftest import clean_env, mso_argv

USER_MANIFEST = """\
# Our shop. Keep this comment.
app: shop   # the stack's name

gateway:
    port: 8090      # odd indentation on purpose

routes:
  - path: /       # catch-all, last
    service: web

services:
    # the front end
    web:
        run: ["python3", "-m", "http.server"]   # quoted on purpose
        ports: {http: 8000}

# a trailing comment
"""


def mso(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(mso_argv(*args), cwd=folder, capture_output=True, text=True,
                          timeout=60, env=clean_env())


def test_editing_keeps_comments_quotes_and_indentation() -> None:
    entry = "run: [python3, app.py]  # how\nports: {http: 8000}\n"
    out = add_service(USER_MANIFEST, "api", entry, "/api")
    diff = list(difflib.ndiff(USER_MANIFEST.splitlines(), out.splitlines()))
    assert not [d for d in diff if d.startswith("- ")], out  # nothing removed or changed
    added = [d[2:] for d in diff if d.startswith("+ ")]
    assert added == ["  - path: /api", "    service: api", "    api:",
                     "        run: [python3, app.py]  # how", "        ports: {http: 8000}"], out
    assert out.endswith("        ports: {http: 8000}\n\n# a trailing comment\n")
    data = yaml.safe_load(out)
    assert data["routes"] == [{"path": "/api", "service": "api"}, {"path": "/", "service": "web"}]
    assert data["services"]["api"] == {"run": ["python3", "app.py"], "ports": {"http": 8000}}
    with pytest.raises(CliError, match="already has a service 'web'"):
        add_service(USER_MANIFEST, "web", entry, None)


def test_a_manifest_without_routes_or_services_gets_them() -> None:
    out = add_service("app: x  # note\n", "api", "run: [a]\n", "/")
    assert out.startswith("app: x  # note\n")
    assert yaml.safe_load(out) == {"app": "x", "routes": [{"path": "/", "service": "api"}],
                                   "services": {"api": {"run": ["a"]}}}


@pytest.mark.parametrize("template,test", [
    ("python-http", [sys.executable, "-m", "unittest", "-q"]),
    ("worker", [sys.executable, "-m", "unittest", "-q"]),
    ("node-http", ["node", "--test"]),
])
def test_each_template_passes_its_own_test(tmp_path: Path, template: str, test: list[str]) -> None:
    if test[0] == "node" and shutil.which("node") is None:
        pytest.skip("node is not installed (scripts/setup.sh installs nodejs for the tests)")
    (tmp_path / "mso.yaml").write_text(USER_MANIFEST)
    done = mso(tmp_path, "new", "service", "svc", "--template", template)
    assert done.returncode == 0, done.stderr
    assert mso(tmp_path, "validate").returncode == 0
    data = yaml.safe_load((tmp_path / "mso.yaml").read_text())
    service = data["services"]["svc"]
    assert service["cwd"] == "./svc" and (tmp_path / "svc" / "Dockerfile").is_file()
    assert (tmp_path / "svc" / "README.md").is_file()
    if template == "worker":
        assert "ports" not in service and {"path": "/svc", "service": "svc"} not in data["routes"]
    else:
        assert service["rollout"]["strategy"] == "canary"
        assert service["health"]["readiness"]["http"] == "/ready"
        assert data["routes"][0] == {"path": "/svc", "service": "svc"}
    result = subprocess.run(test, cwd=tmp_path / "svc", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_user_template_folder(tmp_path: Path) -> None:
    tpl = tmp_path / "tpl"
    (tpl / "files" / "{{ name }}_pkg").mkdir(parents=True)
    (tpl / "template.yaml").write_text(textwrap.dedent("""\
        description: mine
        service:
          run: [python3, -m, {{ name }}_pkg]
          cwd: ./{{ name }}
          ports: {http: {{ port }}}
        """))
    (tpl / "files" / "{{ name }}_pkg" / "__main__.py.jinja").write_text("PORT = {{ port }}\n")
    (tpl / "files" / "raw.txt").write_text("{{ not rendered }}\n")
    app = tmp_path / "app"
    app.mkdir()
    done = mso(app, "new", "service", "api", "--template", str(tpl), "--port", "9100",
               "--route", "/v1")
    assert done.returncode == 0, done.stderr
    assert (app / "api" / "api_pkg" / "__main__.py").read_text() == "PORT = 9100\n"
    assert (app / "api" / "raw.txt").read_text() == "{{ not rendered }}\n"
    data = yaml.safe_load((app / "mso.yaml").read_text())
    assert data["app"] == "app" and data["routes"] == [{"path": "/v1", "service": "api"}]


def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(USER_MANIFEST)
    for args, message in [
        (["Bad_Name"], "not a valid service name"),
        (["web"], "already has a service 'web'"),
        (["api", "--template", "nope"], "not one of python-http, node-http, worker"),
    ]:
        done = mso(tmp_path, "new", "service", *args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    broken = tmp_path / "tpl"
    (broken / "files").mkdir(parents=True)
    (broken / "template.yaml").write_text("service:\n  run: [x]\n  replicas: {{ nope }}\n")
    done = mso(tmp_path, "new", "service", "api", "--template", str(broken))
    assert done.returncode == 2 and "'nope' is undefined" in done.stderr, done.stderr
    (broken / "template.yaml").write_text("service:\n  run: [x]\n  replicas: many\n")
    done = mso(tmp_path, "new", "service", "api", "--template", str(broken))
    assert done.returncode == 2 and "does not validate, nothing was changed" in done.stderr
    assert (tmp_path / "mso.yaml").read_text() == USER_MANIFEST
    assert not (tmp_path / "api").exists()


def test_flow_routes_and_empty_services_are_written_alike() -> None:
    text = "app: x\nroutes:\n  - {path: /, service: web}  # all\nservices:\n  web: {run: [a]}\n"
    out = add_service(text, "api", "run: [b]\n", "/api")
    assert out == ("app: x\nroutes:\n  - {path: /api, service: api}\n  - {path: /, service: web}  # all\n"
                   "services:\n  web: {run: [a]}\n  api:\n    run: [b]\n")
    out = add_service("app: x\nservices: {}\n", "api", "run: [b]\n", None)
    assert yaml.safe_load(out) == {"app": "x", "services": {"api": {"run": ["b"]}}}
