"""Reading a long-running CLI process's output line by line, with timeouts.

`mso logs -f`, `mso events -f`, `mso run` and foreground `mso up` stream forever or for a
while; a reader thread feeds their lines to a queue so tests can wait for one line
without blocking on the pipe.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.cli.conftest import clean_env, mso_argv


class StreamingCli:
    """A real `mso` process whose stdout lines are collected as they arrive."""

    def __init__(self, folder: Path, *args: str, ignore_sigint: bool = False) -> None:
        # SIGINT back to default: when pytest itself runs as a background job, SIGINT is
        # ignored and the child would inherit that, so Ctrl-C tests would test nothing.
        # `ignore_sigint` starts it the way a shell starts `mso up &` instead.
        self.proc = subprocess.Popen(mso_argv(*args), cwd=folder, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=clean_env(),
                                     preexec_fn=_ignore_sigint if ignore_sigint
                                     else _default_sigint)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        """The first line (already seen or new) that satisfies `predicate`."""
        for line in self.lines:
            if predicate(line):
                return line
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                raise AssertionError(f"output ended (exit {self.proc.wait()}) before the "
                                     f"expected line; got {self.lines[-10:]}")
            self.lines.append(item)
            if predicate(item):
                return item
        raise AssertionError(f"no expected line within {timeout}s; got {self.lines[-10:]}")

    def finish(self, timeout: float = 30.0) -> tuple[int, list[str], str]:
        """Wait for exit; return the exit code, every stdout line and stderr."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        assert self.proc.stderr is not None
        return code, self.lines, self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=15)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
