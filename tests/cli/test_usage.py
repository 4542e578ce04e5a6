"""Exit codes and usage errors of the real `mso` CLI, and `mso schema`.

0 ok, 1 failed, 2 bad usage or invalid manifest; errors are one line, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import RUNNING_REPLICAS, clean_env, mso_argv
from tests.e2e.harness import MsoApp


def _mso(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(mso_argv(*args), cwd=folder, capture_output=True, text=True,
                          timeout=60, env=clean_env())


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mso: "), proc.stderr
    return lines[0]


def test_schema_is_a_json_schema_with_services(tmp_path: Path) -> None:
    proc = _mso(tmp_path, "schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert "json-schema.org" in schema["$schema"]
    assert schema["type"] == "object"
    assert {"app", "services", "routes", "gateway"} <= set(schema["properties"])
    assert schema.get("additionalProperties") is False  # unknown keys are errors


@pytest.mark.parametrize("args", [
    ("bogus",),
    ("ps", "--bogus"),
    ("ps", "-o", "yaml"),
    ("logs", "--tail", "many"),
    ("logs", "--tail", "-1"),
    ("events", "--tail", "-1"),
    ("scale",),
    ("run", "echo"),
    ("up", "--engine", "nomad"),
    ("rollout", "promote", "web", "-w"),
    ("rollout", "status", "web", "--timeout", "5"),
    ("rollout", "status", "web", "-w", "--timeout", "0"),
], ids=lambda a: " ".join(a))
def test_bad_usage_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    assert_one_line_error(_mso(tmp_path, *args), 2)


def test_scale_without_a_count_is_bad_usage(tmp_path: Path) -> None:
    line = assert_one_line_error(_mso(tmp_path, "scale", "echo"), 2)
    assert "SERVICE=N" in line


@pytest.mark.parametrize("args", [
    ("ps",), ("endpoints",), ("events",), ("logs",), ("scale", "web=2"),
    ("restart", "web"), ("releases", "web"), ("run", "web", "--", "true"),
], ids=lambda a: " ".join(a))
def test_commands_outside_an_app_folder_say_so_in_one_line(tmp_path: Path,
                                                           args: tuple[str, ...]) -> None:
    line = assert_one_line_error(_mso(tmp_path, *args), 2)
    assert line == (f"mso: no mso.yaml found in {tmp_path} or any folder above it; run mso "
                    "in your app's folder or pass -f FILE")


@pytest.mark.parametrize("args", [
    ("ps",), ("events",), ("logs",), ("releases", "web"), ("rollout", "status", "web"),
], ids=lambda a: " ".join(a))
def test_read_only_commands_before_the_first_up(tmp_path: Path,
                                                args: tuple[str, ...]) -> None:
    (tmp_path / "mso.yaml").write_text("app: a\nservices: {web: {run: [x]}}\n")
    line = assert_one_line_error(_mso(tmp_path, *args), 1)
    assert line == f"mso: nothing has run for {tmp_path / 'mso.yaml'} yet: start it with `mso up`"


@pytest.mark.parametrize("args", [
    ("endpoints",), ("scale", "web=2"), ("restart", "web"), ("run", "web", "--", "true"),
    ("rollout", "promote", "web"),
], ids=lambda a: " ".join(a))
def test_commands_that_need_the_daemon_say_so(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "mso.yaml").write_text("app: a\nservices: {web: {run: [x]}}\n")
    line = assert_one_line_error(_mso(tmp_path, *args), 1)
    assert "no mso daemon is running" in line and "mso up" in line


def test_down_without_a_daemon_is_a_no_op(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text("app: a\nservices: {web: {run: [x]}}\n")
    proc = _mso(tmp_path, "down")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "nothing is running"
    assert not (tmp_path / ".mso").exists()


@pytest.mark.e2e
def test_unknown_service_fails_with_exit_1_and_daemon_keeps_working(
        running: MsoApp) -> None:
    for args in (("scale", "nope=2"), ("restart", "nope"), ("releases", "nope"),
                 ("logs", "nope"), ("run", "nope", "--", "true")):
        line = assert_one_line_error(running.cli(*args, check=False), 1)
        assert "no such service: nope" in line, args
    assert running.all_ready(RUNNING_REPLICAS)


@pytest.mark.parametrize(("args", "message"), [
    (("restart", "web", "--engine", "swarm"),
     "mso: mso restart: not supported on swarm yet; deploy a changed manifest"),
    (("run", "web", "--engine", "kubernetes", "--", "true"),
     "mso: mso run: not supported on kubernetes yet; add a job to the manifest"),
    (("up", "--engine", "kubernetes", "--api-port", "9999"),
     "mso: --api-port: not supported on kubernetes: there is no mso daemon there"),
    (("up", "-d", "--engine", "swarm", "--timeout", "5"),
     "mso: --timeout: not supported on swarm: the engine's deploy waits"),
    (("up", "--engine", "swarm", "--keep-on-failure"),
     "mso: --keep-on-failure: not supported on swarm"),
], ids=lambda a: " ".join(a) if isinstance(a, tuple) else "")
def test_flags_and_commands_that_mean_nothing_on_an_engine_are_refused(
        tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    """Never silently ignored (issue 14): one line, exit 2, before anything is done."""
    (tmp_path / "mso.yaml").write_text("app: a\nservices: {web: {run: [sh]}}\n")
    line = assert_one_line_error(_mso(tmp_path, *args), 2)
    assert line.startswith(message), line
