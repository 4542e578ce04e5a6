"""The shim as an in-container supervisor, run as a container runs it (`python3 shim.py
run FLAGS -- ARGV`, PID 1 there, a plain process here) on loopback with a toy child: its
probes, restarts with backoff, status file and stop signal (no containers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mso.engines.images import shim
from mso.engines.images.supervision import shim_command
from mso.engines.problems import CRASH_LOOP_EXITS

SRC = Path(shim.__file__).resolve().parents[3]

CHILD = """\
import os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.time()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            while os.path.exists("hang"):
                time.sleep(0.05)
        early = time.time() - STARTED < float(os.environ.get("READY_AFTER", "0"))
        bad = self.path == "/ready" and (os.path.exists("unready") or early)
        self.send_response(503 if bad else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

def on_signal(number, frame):
    print(f"child received {signal.Signals(number).name}", flush=True)
    if not os.environ.get("STUBBORN"):
        os._exit(0)

for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, on_signal)
if os.path.exists("hang"):
    os.remove("hang")  # a new process answers again
print(f"child started {os.getpid()}", flush=True)
if os.environ.get("EXIT_CODE") is not None:
    sys.exit(int(os.environ["EXIT_CODE"]))
server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Shim:
    """One `shim.py run` with the toy child; its output lines are collected."""

    def __init__(self, folder: Path, model: dict[str, Any], env: dict[str, str]) -> None:
        self.folder = folder
        self.port = int(model["ports"]["http"])
        self.status = folder / "status"
        (folder / "child.py").write_text(CHILD)
        command = shim_command(model, [sys.executable, "child.py"], forward=False)
        command = [sys.executable, str(Path(shim.__file__)), *command[2:]]
        command[command.index("--"):command.index("--")] = ["--status", str(self.status)]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(SRC), "PORT": str(self.port), **env})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, words: str) -> list[str]:
        return [line for line in self.lines if words in line]

    def check(self) -> subprocess.CompletedProcess[str]:
        """The engine's check, as Docker or the kubelet runs it."""
        return subprocess.run([sys.executable, "-I", "-S", shim.__file__, "probe", "status",
                               str(self.status)], capture_output=True, text=True, timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "it",
             shim: Shim | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; output: {shim and shim.lines}")


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[..., Shim]]:
    started: list[Shim] = []

    def start(env: dict[str, str] | None = None, **model: Any) -> Shim:
        made = Shim(tmp_path, {"ports": {"http": _free_port()}, "restart": "always", **model},
                    env or {})
        started.append(made)
        return made
    yield start
    for one in started:
        if one.proc.poll() is None:
            one.proc.kill()
            one.proc.wait()


def _probe(path: str, **extra: Any) -> dict[str, Any]:
    return {"http": path, "period": 0.1, "timeout": 1.0, "failure_threshold": 2,
            "success_threshold": 1, **extra}


def test_a_crashing_process_is_restarted_with_the_doubling_backoff(run: Callable[..., Shim]
                                                                     ) -> None:
    one = run({"EXIT_CODE": "1"}, backoff={"initial": 0.1, "max": 0.4, "reset_after": 60})
    wait_for(lambda: len(one.saw("restarting in")) >= 4, what="four restarts")
    delays = [line.rsplit("restarting in ", 1)[1] for line in one.saw("restarting in")[:4]]
    assert delays == ["0.1s", "0.2s", "0.4s", "0.4s"]
    assert one.saw("the process exited with status 1; restarting in 0.1s")
    assert len(one.saw("child started")) >= 4
    # Never ready in between: a crash loop, which the engines' checks report at once.
    said = one.check()
    assert said.returncode == 1 and said.stdout.startswith(f"not ready: {shim.CRASH_LOOP}"
                                                           "exited with status 1, ")
    assert one.stop() == 0  # stopped while waiting out a delay


def test_the_crash_loop_count_is_the_local_engines() -> None:
    assert shim.CRASH_LOOP_EXITS == CRASH_LOOP_EXITS


def test_on_failure_ends_with_a_clean_exit(run: Callable[..., Shim]) -> None:
    one = run({"EXIT_CODE": "0"}, restart="on-failure")
    assert one.proc.wait(timeout=30) == 0
    assert one.saw("exited with status 0; not restarted (restart: on-failure)")
    assert len(one.saw("child started")) == 1


def test_sigterm_becomes_the_stop_signal_and_the_grace_ends_in_sigkill(
        run: Callable[..., Shim]) -> None:
    one = run(stop={"signal": "SIGINT", "grace": 0.3})
    wait_for(lambda: one.saw("child started"), what="the child")
    assert one.stop() == 0
    assert one.saw("child received SIGINT") and not one.saw("child received SIGTERM")
    stubborn = run({"STUBBORN": "1"}, stop={"signal": "SIGHUP", "grace": 0.3})
    wait_for(lambda: stubborn.saw("child started"), what="the stubborn child")
    began = time.monotonic()
    assert stubborn.stop() == 128 + signal.SIGKILL
    assert stubborn.saw("child received SIGHUP")
    assert 0.25 < time.monotonic() - began < 10


def test_readiness_is_in_the_status_file_and_the_check_passes_from_the_first_ready(
        run: Callable[..., Shim]) -> None:
    one = run({"READY_AFTER": "0.5"}, health={"readiness": _probe("/ready")})
    first = one.check()
    assert first.returncode == 1 and first.stdout.startswith("not ready"), first
    wait_for(lambda: one.check().stdout.strip() == "ready", what="ready")
    assert one.check().returncode == 0
    (one.folder / "unready").touch()
    lost = wait_for(lambda: (c := one.check()).stdout.startswith("not ready") and c,
                    what="not ready")
    # Once ready, the check passes: Swarm must not replace the task; the output tells.
    assert lost.returncode == 0 and "returned 503" in lost.stdout
    assert one.saw("readiness probe failed 2 times: HTTP GET /ready returned 503; not ready")
    (one.folder / "unready").unlink()
    wait_for(lambda: one.check().stdout.strip() == "ready", what="ready again")
    assert len(one.saw("child started")) == 1  # readiness never restarts
    status = shim.read_status(str(one.status))
    assert status is not None and status["ever_ready"] == status["started"] == "1"


def test_a_failed_liveness_probe_restarts_the_process(run: Callable[..., Shim]) -> None:
    one = run(health={"liveness": _probe("/healthz", period=0.2, timeout=1.0)},
              backoff={"initial": 0.1, "max": 1, "reset_after": 60})
    wait_for(lambda: one.check().stdout.strip() == "ready", what="ready (port open)")
    (one.folder / "hang").touch()
    wait_for(lambda: one.saw("liveness probe failed 2 times: timed out; restarting the "
                             "process"), what="the kill", shim=one)
    wait_for(lambda: len(one.saw("child started")) >= 2, what="a second process", shim=one)
    assert one.saw("liveness probe failed (1 of 2): ")
    assert one.saw("child received SIGTERM")


def test_a_startup_probe_holds_liveness(run: Callable[..., Shim]) -> None:
    one = run({"READY_AFTER": "1"}, health={
        "startup": _probe("/ready", failure_threshold=50),
        "liveness": _probe("/ready", failure_threshold=1)})
    assert one.check().returncode == 1
    wait_for(lambda: one.check().stdout.strip() == "ready", what="ready")
    status = shim.read_status(str(one.status))
    assert status is not None and status["started"] == "1"
    assert len(one.saw("child started")) == 1 and not one.saw("liveness probe failed")


def test_an_exhausted_startup_probe_restarts_the_process(run: Callable[..., Shim]) -> None:
    one = run({"READY_AFTER": "60"}, health={"startup": _probe("/ready")},
              backoff={"initial": 0.1, "max": 1, "reset_after": 60})
    wait_for(lambda: len(one.saw("child started")) >= 2, what="a second process")
    assert one.saw("startup probe failed 2 times: HTTP GET /ready returned 503; restarting")


def test_a_flag_it_does_not_know_is_refused_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, shim.__file__, "run", "--bogus", "1", "--", "true"],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "mso: bad arguments for the shim: unknown flag --bogus"
