"""`mso up --watch`: the `watch:` key, which changes count, the order and the coalescing
of restarts (no daemon: pure functions, an injected clock, a fake API client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import subprocess

from tests.cli.conftest import clean_env, mso_argv
from mso.cli.watch import Coalescer, Watcher, WatchRule, affected, is_ignored, restart_order, rules_for
from mso.spec.errors import ManifestError
from mso.spec.load import load_manifest

MANIFEST = """\
app: shop
services:
  db:
    run: [python3, db.py]
    watch: shared/
  api:
    run: [python3, api.py]
    depends_on: [db]
    watch:
      paths: [src/, shared/]
      ignore: ["*.log", "data/", "src/gen/*.py"]
  web:
    run: [python3, web.py]
    depends_on: {api: healthy}
    cwd: web
    watch: {action: {signal: hup}}
  plain:
    run: [python3, plain.py]
"""


def _loaded(tmp_path: Path, text: str = MANIFEST) -> Any:
    for folder in ("shared", "src", "web"):
        (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / "mso.yaml").write_text(text)
    return load_manifest(tmp_path / "mso.yaml", {})


def test_the_key_and_its_short_forms(tmp_path: Path) -> None:
    m = _loaded(tmp_path).manifest
    assert m.services["db"].watch.paths == ["shared/"]
    assert m.services["api"].watch.action == "restart"
    assert m.services["web"].watch.action.signal == "SIGHUP"
    assert m.services["plain"].watch is None
    rules = {r.service: r for r in rules_for(_loaded(tmp_path))}
    assert rules["web"].roots == ((tmp_path / "web").resolve(),)  # default: the cwd
    assert rules["web"].action == "signal" and rules["web"].signal == "SIGHUP"
    assert rules["api"].ignore == ("*.log", "data/", "src/gen/*.py")


@pytest.mark.parametrize("watch, line, field, words", [
    ("{action: reload}", 4, "services.db.watch.action", "restart"),
    ("{action: {signal: SIGKILL}}", 4, "services.db.watch.action", "unusable signal"),
    ("{paths: [../elsewhere]}", 4, "services.db.watch.paths.0", "escapes"),
    ("{paths: [a], extra: 1}", 4, "services.db.watch.extra", ""),
    ("{ignore: ['']}", 4, "services.db.watch.ignore", "must not be empty"),
])
def test_bad_watch_is_refused_with_file_and_line(tmp_path: Path, watch: str, line: int,
                                                 field: str, words: str) -> None:
    (tmp_path / "mso.yaml").write_text(
        f"app: a\nservices:\n  db:\n    watch: {watch}\n    run: [x]\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "mso.yaml", {})
    err = caught.value.errors[0]
    assert (err.line, err.field.startswith(field)) == (line, True), str(caught.value)
    assert words in str(caught.value)


def test_a_watched_path_that_does_not_exist_is_an_error_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(
        "app: a\nservices:\n  db:\n    run: [x]\n    watch:\n      paths: [nowhere/]\n")
    with pytest.raises(ManifestError) as caught:
        rules_for(load_manifest(tmp_path / "mso.yaml", {}))
    assert str(caught.value).endswith(
        "mso.yaml:6: services.db.watch.paths.0: 'nowhere/' does not exist; nothing to watch")


def test_changes_are_matched_to_services_with_ignores(tmp_path: Path) -> None:
    rules = rules_for(_loaded(tmp_path))
    root = tmp_path.resolve()

    def hit(*rel: str) -> dict[str, list[str]]:
        found = affected(rules, [root / r for r in rel])
        return {s: [p.relative_to(root).as_posix() for p in ps] for s, ps in found.items()}

    assert hit("shared/util.py") == {"db": ["shared/util.py"], "api": ["shared/util.py"]}
    assert hit("src/app.py") == {"api": ["src/app.py"]}
    assert hit("web/index.html") == {"web": ["web/index.html"]}
    assert hit("mso.yaml", "elsewhere.py") == {}
    # ignore globs: a name anywhere, a folder anywhere, a path
    assert hit("src/debug.log", "src/data/x.json", "src/gen/model.py") == {}
    assert hit("src/gen/model.txt") == {"api": ["src/gen/model.txt"]}
    # mso's own files, byte code, VCS folders and editor temp files never count
    assert hit("shared/.mso/state.db", "src/__pycache__/app.cpython-311.pyc",
               "src/.app.py.swp", "src/app.py~", "src/.#app.py", "src/4913",
               "shared/.git/index") == {}


def test_is_ignored_outside_the_root() -> None:
    rule = WatchRule("a", (Path("/app/src"),))
    assert is_ignored(rule, Path("/app/src"), Path("/app/other.py"))
    assert not is_ignored(rule, Path("/app/src"), Path("/app/src/x.py"))


def test_restart_order_follows_dependencies() -> None:
    deps = {"web": ["api"], "api": ["db"], "db": [], "worker": ["db"]}
    assert restart_order(["web", "db", "api"], deps) == ["db", "api", "web"]
    assert restart_order(["worker", "web", "db"], deps) == ["db", "worker", "web"]
    assert restart_order(["web"], deps) == ["web"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_coalescer_debounces_and_coalesces() -> None:
    clock = Clock()
    c = Coalescer(quiet=0.3, clock=clock)
    assert c.wait() is None and c.take() == {}
    c.add({"api": [Path("/a")]})
    clock.now += 0.2
    c.add({"api": [Path("/b"), Path("/a")], "db": [Path("/c")]})
    clock.now += 0.2
    assert c.take() == {}  # a save 0.2 s ago: not quiet yet
    assert c.wait() == pytest.approx(0.1)
    clock.now += 0.15
    assert c.take() == {"api": [Path("/a"), Path("/b")], "db": [Path("/c")]}
    assert c.take() == {} and c.wait() is None
    for _ in range(20):  # 20 saves while a round runs: one more round
        c.add({"api": [Path("/a")]})
        clock.now += 0.01
    clock.now += 0.3
    assert c.take() == {"api": [Path("/a")]}
    assert c.take() == {}


class FakeApi:
    """The daemon's API as the watcher uses it: replicas replaced on restart."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail
        self.rows = [{"service": s, "replica": f"{s}-1", "state": "READY", "draining": False,
                      "problem": None, "generation": 0} for s in ("db", "api", "web")]
        self.paths = None

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        self.calls.append((path, body))
        service = path.split("/")[3]
        if path.endswith("/restart"):
            problem = {"kind": "crash_loop", "message": "exited 3 times"} if self.fail else None
            self.rows = [r for r in self.rows if r["service"] != service] + [
                {"service": service, "replica": f"{service}-1", "state": "READY" if not self.fail
                 else "BACKOFF", "draining": False, "problem": problem, "generation": 1}]
            return {"strategy": (body or {}).get("strategy", "rolling"), "generation": 1}
        if path.endswith("/settle"):
            return {"stopped": 1}
        return {"replicas": 1}

    def get(self, path: str, **params: Any) -> Any:
        if path == "/v1/logs":
            return [{"ts": 0, "service": "api", "replica": "api-2", "stream": "stderr",
                     "line": "SyntaxError: invalid syntax"}]
        return {"replicas": list(self.rows)}

    def close(self) -> None:
        pass


def _watcher(tmp_path: Path, api: FakeApi, lines: list[str]) -> Watcher:
    loaded = _loaded(tmp_path)
    watcher = Watcher.__new__(Watcher)
    Watcher.__init__(watcher, loaded, api, rules_for(loaded), say=lines.append)  # type: ignore[arg-type]
    watcher.client = api  # type: ignore[assignment]
    return watcher


def test_a_round_restarts_in_dependency_order_and_signals(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr("mso.cli.watch.ApiClient", lambda paths: FakeApi())
    api, lines = FakeApi(), []
    w = _watcher(tmp_path, api, lines)
    root = tmp_path.resolve()
    w.run_round({"web": [root / "web/a.html"], "api": [root / "shared/x.py"],
                 "db": [root / "shared/x.py"]})
    assert [c[0] for c in api.calls] == ["/v1/services/db/restart", "/v1/services/api/restart",
                                          "/v1/services/web/signal"]
    assert api.calls[2][1] == {"signal": "SIGHUP"}
    assert "mso watch: db: shared/x.py changed; rolling restart" in lines
    assert any(line.startswith("mso watch: api: restarted in") for line in lines)
    assert "mso watch: web: web/a.html changed; SIGHUP sent to 1 replica(s)" in lines


def test_a_failed_replacement_is_settled_and_reported(tmp_path: Path, monkeypatch: Any,
                                                      capsys: Any) -> None:
    monkeypatch.setattr("mso.cli.watch.ApiClient", lambda paths: FakeApi())
    api, lines = FakeApi(fail=True), []
    w = _watcher(tmp_path, api, lines)
    assert w.restart("api", "restart", "src/app.py") is False
    assert api.calls[-1][0] == "/v1/services/api/restart/settle"
    err = capsys.readouterr().err
    assert "the old replicas keep serving" in err
    assert "exited 3 times" in err and "SyntaxError: invalid syntax" in err


def _mso(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(mso_argv(*args), cwd=folder, capture_output=True, text=True,
                          timeout=60, env=clean_env())


def test_swarm_refuses_watch_unless_dev(tmp_path: Path) -> None:
    _loaded(tmp_path)
    refused = _mso(tmp_path, "validate", "--engine", "swarm")
    assert refused.returncode == 2, refused.stderr
    assert ("mso.yaml:5: services.db.watch: not supported on swarm: watch is a development "
            "key (mso up --watch on the embedded engine); pass --dev to deploy without it"
            ) in refused.stderr
    assert "Traceback" not in refused.stderr
    allowed = _mso(tmp_path, "validate", "--engine", "swarm", "--dev")
    assert allowed.returncode == 0, allowed.stderr
    assert "mso.yaml:5: services.db.watch: a development key, ignored on swarm (--dev)" \
        in allowed.stderr
    assert "not supported" not in allowed.stderr
    assert _mso(tmp_path, "validate").returncode == 0


def test_up_detached_with_watch_is_refused(tmp_path: Path) -> None:
    _loaded(tmp_path)
    result = _mso(tmp_path, "up", "-d", "--watch")
    assert result.returncode == 2, result.stderr
    assert "--watch: not with -d" in result.stderr


@pytest.mark.parametrize("command", [("deploy", "--engine", "swarm"),
                                     ("deploy", "--engine", "kubernetes"),
                                     ("render", "--engine", "kubernetes"),
                                     ("up", "--engine", "swarm")])
def test_deploys_to_swarm_and_kubernetes_refuse_watch_before_touching_them(
        tmp_path: Path, command: tuple[str, ...]) -> None:
    _loaded(tmp_path)
    refused = _mso(tmp_path, *command)
    assert refused.returncode == 2, refused.stderr
    assert "services.db.watch: not supported on" in refused.stderr
    assert "pass --dev to deploy without it" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_render_with_dev_leaves_watch_out(tmp_path: Path) -> None:
    _loaded(tmp_path)
    rendered = _mso(tmp_path, "render", "--engine", "swarm", "--dev")
    assert rendered.returncode == 0, rendered.stderr
    assert "services.db.watch: a development key, ignored on swarm (--dev)" in rendered.stderr
    assert "watch" not in rendered.stdout
