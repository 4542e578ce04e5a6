"""The CLI's only way to the control plane: HTTP over the daemon's unix socket.

Transport and HTTP failures are translated here into `CliError`s with one-line messages,
so commands never show a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

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


class ApiClient:
    def __init__(self, paths: StatePaths, timeout: float = 60.0) -> None:
        self.paths = paths
        transport = httpx.HTTPTransport(uds=str(paths.api_socket))
        self._http = httpx.Client(transport=transport, base_url="http://mso",
                                  timeout=httpx.Timeout(timeout, connect=5.0))

    def close(self) -> None:
        self._http.close()

    def alive(self) -> bool:
        if not self.paths.api_socket.exists():
            return False
        try:
            return self._http.get("/v1/status", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            if not self.paths.api_socket.exists() or isinstance(exc, httpx.ConnectError):
                raise NotRunning(self.paths) from exc
            raise CliError(f"the control plane did not answer: {exc}") from exc
        return _decode(response)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items()
                                                 if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {})

    def stream(self, method: str, path: str, body: dict[str, Any] | None = None,
               **params: Any) -> Iterator[dict[str, Any]]:
        try:
            with self._http.stream(method, path, json=body,
                                   params={k: v for k, v in params.items() if v is not None},
                                   timeout=httpx.Timeout(None, connect=5.0)) as response:
                if response.status_code >= 400:
                    response.read()
                    _decode(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.ConnectError):
                raise NotRunning(self.paths) from exc
            raise CliError(f"the stream from the control plane broke: {exc}") from exc


def _decode(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text.strip() or response.reason_phrase}
    if response.status_code >= 400:
        message = body.get("error") if isinstance(body, dict) else None
        if message is None and isinstance(body, dict) and "detail" in body:
            message = _detail(body["detail"])
        code = 2 if response.status_code in (400, 422) else 1
        raise CliError(str(message or f"HTTP {response.status_code}"), code)
    return body


def _detail(detail: Any) -> str:
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return f"{where}: {first.get('msg', 'invalid')}"
    return str(detail)
