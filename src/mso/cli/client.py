"""The CLI's only way to the control plane: HTTP over the daemon's unix socket.

Transport and HTTP failures are translated here into `CliError`s with one-line messages,
so commands never show a traceback.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

from mso.errors import Failed, Unavailable
from mso.paths import StatePaths


class CliError(Failed):
    """A failure of a command, to report as one line on stderr, with an exit code (2: bad
    usage). Prefer the kinds of mso.errors where one fits."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotRunning(CliError, Unavailable):
    def __init__(self, paths: StatePaths) -> None:
        super().__init__(f"no mso daemon is running for {paths.state_dir.parent} "
                         "(start it with `mso up`)")


class StartupFailed(CliError, Failed):
    """A wait (`up -d`, `deploy --wait`) that ended early or timed out. `failing` lists
    what failed and why, with its last log lines (`output.failure_report` shows it);
    the caller says what was left running."""

    def __init__(self, message: str, failing: list[dict[str, Any]]) -> None:
        super().__init__(message, 1)
        self.failing = failing


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the daemon's unix socket (the API is never served on TCP to the CLI)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("mso", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ApiClient:
    """The daemon's REST API over its unix socket.

    Built on the standard library's http.client rather than httpx: the CLI's commands
    answer in ~0.1 s, and importing httpx alone took a third of that (issue 16). One
    keep-alive connection is reused; streams (`follow=true`) get their own.
    """

    def __init__(self, paths: StatePaths, timeout: float = 60.0) -> None:
        self.paths = paths
        self.timeout = timeout
        self._conn: _UnixConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def alive(self) -> bool:
        if not self.paths.api_socket.exists():
            return False
        try:
            status, _ = self._exchange("GET", "/v1/status", None, timeout=5.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def _exchange(self, method: str, path: str, body: bytes | None,
                  timeout: float | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = _UnixConnection(str(self.paths.api_socket),
                                             timeout or self.timeout)
            conn = self._conn
            if conn.sock is not None:
                conn.sock.settimeout(timeout or self.timeout)
            try:
                conn.request(method, path, body=body,
                             headers={"Content-Type": "application/json"} if body else {})
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a kept-alive connection the daemon closed: once more
                if attempt == 2:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                json_body: Any = None) -> Any:
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        body = None if json_body is None else json.dumps(json_body).encode()
        try:
            status, data = self._exchange(method, target, body)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(self.paths) from exc
        except (OSError, http.client.HTTPException) as exc:
            if not self.paths.api_socket.exists():
                raise NotRunning(self.paths) from exc
            raise CliError(f"the control plane did not answer: {exc}") from exc
        return _decode(status, data)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, {k: _param(v) for k, v in params.items()
                                          if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json_body=body or {})

    def stream(self, method: str, path: str, body: dict[str, Any] | None = None,
               **params: Any) -> Iterator[dict[str, Any]]:
        query = urllib.parse.urlencode({k: _param(v) for k, v in params.items()
                                        if v is not None})
        conn = _UnixConnection(str(self.paths.api_socket), self.timeout)
        try:
            try:
                conn.connect()
                if conn.sock is not None:
                    conn.sock.settimeout(None)  # a follower waits as long as it takes
                conn.request(method, path + (f"?{query}" if query else ""),
                             body=None if body is None else json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"} if body else {})
                response = conn.getresponse()
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise NotRunning(self.paths) from exc
            if response.status >= 400:
                _decode(response.status, response.read())
            while True:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise CliError(f"the stream from the control plane broke: {exc}") from exc
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode(status: int, data: bytes) -> Any:
    try:
        body = json.loads(data) if data else None
    except ValueError:
        body = {"error": data.decode(errors="replace").strip() or f"HTTP {status}"}
    if status >= 400:
        message = body.get("error") if isinstance(body, dict) else None
        if message is None and isinstance(body, dict) and "detail" in body:
            message = _detail(body["detail"])
        code = 2 if status in (400, 422) else 1
        raise CliError(str(message or f"HTTP {status}"), code)
    return body


def _detail(detail: Any) -> str:
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return f"{where}: {first.get('msg', 'invalid')}"
    return str(detail)
