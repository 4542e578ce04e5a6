"""The daemon's REST API, on its unix socket and on the optional TCP port.

A real daemon started by `mso up -d --api-port PORT`: the TCP listener wants the bearer
token from `.mso/api-token`, the socket is private (0600), `/openapi.json` describes the
/v1 paths, and malformed requests get 4xx JSON errors without hurting the daemon.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mso.paths import StatePaths
from tests.e2e.harness import MsoApp, free_port

pytestmark = pytest.mark.e2e

MANIFEST = """
app: apitest
gateway: {port: GATEWAY_PORT}
routes: [{path: /, service: echo}]
services:
  echo:
    run: [PYTHON, ECHO_APP]
    replicas: 2
    ports: {http: 8000}
"""


class Api:
    """The app under test plus HTTP clients for its socket and its TCP port."""

    def __init__(self, app: MsoApp, port: int) -> None:
        self.app = app
        self.paths = StatePaths.for_manifest(app.manifest)
        self.port = port
        self.socket = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.paths.api_socket)),
                                   base_url="http://mso", timeout=30)
        self.tcp = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    @property
    def token(self) -> str:
        return self.paths.api_token.read_text().strip()

    def close(self) -> None:
        self.socket.close()
        self.tcp.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    app = MsoApp(tmp_path_factory.mktemp("api"))
    app.write(MANIFEST)
    port = free_port()
    result: Api | None = None
    try:
        app.cli("up", "-d", "--api-port", str(port))
        app.instance = app.status()["instance"]
        result = Api(app, port)
        yield result
    finally:
        if result is not None:
            result.close()
        app.teardown()


def assert_json_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
    return body


def test_tcp_api_needs_the_bearer_token(api: Api) -> None:
    assert_json_error(api.tcp.get("/v1/ps"), 401)
    assert_json_error(api.tcp.get("/v1/ps", headers={"Authorization": "Bearer wrong"}), 401)
    assert_json_error(api.tcp.get("/v1/ps", headers={"Authorization": api.token}), 401)
    assert_json_error(api.tcp.post("/v1/services/echo/scale", json={"replicas": 0}), 401)
    assert_json_error(api.tcp.get("/openapi.json"), 401)
    ok = api.tcp.get("/v1/ps", headers={"Authorization": f"Bearer {api.token}"})
    assert ok.status_code == 200
    assert ok.json()["app"] == "apitest" and len(ok.json()["replicas"]) == 2
    # The unauthorised scale above did nothing.
    assert len(api.app.replicas("echo")) == 2


def test_tcp_api_listens_on_loopback_only(api: Api) -> None:
    assert len(api.token) >= 32
    with pytest.raises(httpx.ConnectError):
        # The port is bound to 127.0.0.1; another loopback address must not reach it.
        httpx.get(f"http://127.0.0.2:{api.port}/v1/ps", timeout=5)


def test_socket_and_token_are_private(api: Api) -> None:
    assert stat.S_ISSOCK(api.paths.api_socket.stat().st_mode)
    assert stat.S_IMODE(api.paths.api_socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(api.paths.api_token.stat().st_mode) == 0o600
    assert stat.S_IMODE(api.paths.state_dir.stat().st_mode) == 0o700


def test_openapi_on_the_socket_lists_the_v1_paths(api: Api) -> None:
    response = api.socket.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    assert {"/v1/status", "/v1/ps", "/v1/endpoints", "/v1/events", "/v1/logs",
            "/v1/apply", "/v1/down", "/v1/services/{service}/scale",
            "/v1/services/{service}/restart", "/v1/services/{service}/run",
            "/v1/services/{service}/releases"} <= paths
    assert all(p.startswith("/v1/") for p in paths)


@pytest.mark.parametrize("kwargs", [
    {"json": {"replicas": -1}},
    {"json": {"replicas": "many"}},
    {"json": {"replicas": 1.5}},
    {"json": {}},
    {"json": [1]},
    {"content": b"not json", "headers": {"content-type": "application/json"}},
    {"content": b"{\"replicas\": ", "headers": {"content-type": "application/json"}},
    {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}},
], ids=["negative", "string", "float", "missing", "array", "not-json", "truncated",
        "binary"])
def test_malformed_scale_is_a_4xx_json_error_and_changes_nothing(
        api: Api, kwargs: dict[str, Any]) -> None:
    body = assert_json_error(api.socket.post("/v1/services/echo/scale", **kwargs), 422)
    assert any(word in body["error"] for word in ("replicas", "JSON", "request body")), body
    assert api.socket.get("/v1/status").status_code == 200
    assert len(api.app.replicas("echo")) == 2


def test_unknown_service_and_unknown_path_are_404_json(api: Api) -> None:
    body = assert_json_error(api.socket.post("/v1/services/x/scale", json={"replicas": 1}),
                             404)
    assert "no such service: x" in body["error"]
    assert_json_error(api.socket.post("/v1/services/x/restart"), 404)
    assert api.socket.get("/v1/nothing-here").status_code == 404


def test_malformed_run_and_apply_are_rejected(api: Api) -> None:
    assert_json_error(api.socket.post("/v1/services/echo/run", json={"argv": []}), 422)
    assert_json_error(api.socket.post("/v1/apply", json={"environ": {}}), 422)
    missing = str(Path(api.app.folder) / "missing.yaml")
    body = assert_json_error(api.socket.post("/v1/apply", json={"manifest": missing}), 422)
    assert "missing.yaml" in body["error"]
    assert api.app.all_ready(2)


def test_watch_endpoints_reject_bad_input(api: Api) -> None:
    """`mso up --watch`'s calls: restart with a strategy, settle, signal."""
    assert_json_error(api.socket.post("/v1/services/echo/signal", json={"signal": "SIGKILL"}),
                      422)
    assert_json_error(api.socket.post("/v1/services/echo/signal", json={}), 422)
    assert_json_error(api.socket.post("/v1/services/x/signal", json={"signal": "HUP"}), 404)
    assert_json_error(api.socket.post("/v1/services/x/restart/settle"), 404)
    assert_json_error(api.socket.post("/v1/services/echo/restart",
                                      json={"strategy": "sideways"}), 422)
    assert api.app.all_ready(2)


def test_every_mutating_call_is_an_event_with_its_origin(api: Api) -> None:
    """Calls that change something (or try to) are recorded: what, from where, how they
    ended; a refused call too; reads are not; bodies never."""
    token = {"Authorization": f"Bearer {api.token}"}
    api.tcp.post("/v1/services/echo/scale", json={"replicas": 2}, headers=token)
    api.tcp.post("/v1/services/echo/scale", json={"replicas": 2})  # no token: 401
    api.socket.post("/v1/services/echo/restart")
    api.socket.post("/v1/diff", json={"manifest": str(api.app.manifest),
                                      "environ": {"SOME_SECRET": "zzz-secret-zzz"}})
    api.socket.get("/v1/ps")
    calls = [e for e in api.socket.get("/v1/events", params={"limit": 1000}).json()
             if e["type"] == "api.call"]
    seen = [(e["data"]["path"], e["data"]["status"], e["data"]["origin"].split(" ")[0])
            for e in calls]
    assert ("/v1/services/echo/scale", 200, "tcp") in seen
    assert ("/v1/services/echo/scale", 401, "tcp") in seen
    assert ("/v1/services/echo/restart", 200, "the") in seen  # "the api socket"
    assert not any(path in ("/v1/diff", "/v1/ps") for path, _, _ in seen)
    assert all("zzz-secret-zzz" not in str(e) for e in calls)
