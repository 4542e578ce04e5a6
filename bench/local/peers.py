"""The peer tools the embedded engine is compared with: honcho and supervisord.

Both just start processes (supervisord also restarts them); neither probes health nor
routes traffic.  Each runner starts the tool on a generated config for N copies of the
trivial app on known ports, and always stops it and sweeps leftovers by an env marker.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

from common import kill_all, processes_with_env, wait_gone

VENV_BIN = Path(sys.executable).parent
APP = Path(__file__).resolve().parent / "app.py"


def program_names(ports: list[int], replicas: int) -> list[str]:
    """`s01r1`-style names: service index and replica index, one per port, in order."""
    return [f"s{i // replicas + 1:02d}r{i % replicas + 1}" for i in range(len(ports))]


def procfile_text(ports: list[int], replicas: int, python: str = sys.executable) -> str:
    # honcho sets PORT itself (5000 + 100 * index); the inline assignment wins over it.
    return "".join(f"{name}: PORT={port} exec {python} {APP}\n"
                   for name, port in zip(program_names(ports, replicas), ports))


def supervisord_conf(ports: list[int], replicas: int, folder: Path,
                     python: str = sys.executable) -> str:
    lines = [
        "[unix_http_server]", f"file={folder}/supervisor.sock", "",
        "[supervisord]", "nodaemon=true", f"logfile={folder}/supervisord.log",
        f"pidfile={folder}/supervisord.pid", f"childlogdir={folder}", "loglevel=warn", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", f"serverurl=unix://{folder}/supervisor.sock", "",
    ]
    for name, port in zip(program_names(ports, replicas), ports):
        lines += [f"[program:{name}]", f"command={python} {APP}", f'environment=PORT="{port}"',
                  "autorestart=true", f"stdout_logfile={folder}/{name}.log",
                  "redirect_stderr=true", ""]
    return "\n".join(lines)


class PeerTool:
    """One running honcho or supervisord; a context manager that always cleans up."""

    name = "peer"

    def __init__(self, folder: Path, ports: list[int], replicas: int) -> None:
        self.folder = folder
        self.ports = ports
        self.replicas = replicas
        self.marker = f"MSO_BENCH_PEER={uuid.uuid4().hex}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_seconds = float("nan")

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> float:
        """Start the tool; returns the monotonic time just before the spawn."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = self.command()
        key, value = self.marker.split("=", 1)
        env = dict(os.environ, **{key: value})
        started = time.monotonic()
        with open(self.folder / f"{self.name}.out", "wb") as out:
            self.proc = subprocess.Popen(command, cwd=self.folder, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return started

    def stop(self) -> None:
        """SIGTERM the tool; `stop_seconds` is how long until it and all its children were gone."""
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        left = wait_gone(self.marker, timeout=15)
        self.stop_seconds = time.monotonic() - started
        kill_all(left)

    def children(self) -> list[int]:
        pid = self.proc.pid if self.proc else -1
        return [p for p in processes_with_env(self.marker) if p != pid]

    def __enter__(self) -> PeerTool:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Honcho(PeerTool):
    name = "honcho"

    def command(self) -> list[str]:
        procfile = self.folder / "Procfile"
        procfile.write_text(procfile_text(self.ports, self.replicas))
        return [str(VENV_BIN / "honcho"), "start", "-f", str(procfile)]


class Supervisord(PeerTool):
    name = "supervisord"

    def command(self) -> list[str]:
        conf = self.folder / "supervisord.conf"
        conf.write_text(supervisord_conf(self.ports, self.replicas, self.folder))
        return [str(VENV_BIN / "supervisord"), "-n", "-c", str(conf)]
