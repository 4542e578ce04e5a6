"""The REST API of the local control plane (FastAPI; OpenAPI at /openapi.json).

Served on a unix socket (mode 0600) by default, and optionally on 127.0.0.1 over TCP,
where every request needs `Authorization: Bearer <token>`. Responses never carry secret
values: releases are shown without their secrets and environments are not exposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from mso import __version__
from mso.api import views
from mso.daemon.containers import build_images
from mso.releases.sources import source_digests
from mso.daemon.oneoff import run_oneoff
from mso.releases.apply import drift
from mso.errors import MsoError, NotFound
from mso.importers import load_app
from mso.spec.service import signal_name

if TYPE_CHECKING:
    from mso.daemon.core import Daemon


#: POSTs that only read (a diff of a manifest against the running releases).
READ_ONLY_POSTS = frozenset({"/v1/diff"})

#: Bounds of the query parameters (beyond them SQLite's integers overflow, or a "tail" of
#: 10^30 lines would be read): anything larger is a 422, not a 500.
MAX_ID = 2**62
MAX_LIMIT = 100_000
MAX_TIME = 2.0**40


class ErrorBody(BaseModel):
    """Every failure's answer: one sentence a user can act on."""

    error: str
    detail: list[dict[str, Any]] | None = None


#: The failures any call may answer with (mso.errors says which kind is which status).
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (401, "missing or wrong bearer token (TCP listener)"),
        (404, "no such service, release or rollout"),
        (409, "not now: the state forbids it"),
        (422, "the request or the manifest it names is wrong"),
        (503, "something mso needs did not answer (the proxy, a full disk); retry"))}


class ApplyRequest(BaseModel):
    manifest: str = Field(description="Absolute path of the manifest to apply")
    environ: dict[str, str] = Field(default_factory=dict,
                                    description="The caller's environment, for interpolation")
    force: bool = Field(default=False, description="Roll out a manifest identical to a "
                        "release that was rolled back or undone by a rollback")


class DiffRequest(BaseModel):
    manifest: str = Field(description="Absolute path of the manifest to compare")
    environ: dict[str, str] = Field(default_factory=dict,
                                    description="The caller's environment, for interpolation")


class RestartRequest(BaseModel):
    strategy: Literal["rolling", "recreate"] | None = Field(
        default=None, description="How to replace the replicas; default: the service's rollout strategy")


class SettleRequest(BaseModel):
    reason: str = Field(default="", max_length=2000, description="Why the restart failed")


class SignalRequest(BaseModel):
    signal: str = Field(description="Signal name, e.g. SIGHUP")

    @field_validator("signal")
    @classmethod
    def _known(cls, value: str) -> str:
        return signal_name(value, "signal", "SIGHUP or SIGUSR1")


class ScaleRequest(BaseModel):
    replicas: int = Field(ge=0, le=1000)


class RollbackRequest(BaseModel):
    to: int | None = Field(default=None, ge=1, description="Release number; default: the previous one")


class DashboardRequest(BaseModel):
    port: int | None = Field(default=None, ge=0, le=65535,
                             description="Port on 127.0.0.1; default: a free one")


class RunRequest(BaseModel):
    argv: list[str] = Field(min_length=1)


def create_app(daemon: Daemon, token: str | None = None,
               on_down: Callable[[], Awaitable[None]] | None = None,
               dashboard: Callable[[int | None], Awaitable[int]] | None = None) -> FastAPI:
    """The API of `daemon`. `dashboard(port)` starts the web dashboard (mso.web, which
    this layer does not import: the daemon's entry point passes it in) and answers its
    port."""
    app = FastAPI(title="mso control plane", version=__version__,
                  description="The local engine's REST API. The CLI talks only to this.",
                  responses=ERRORS)

    if token is not None:
        @app.middleware("http")
        async def bearer_auth(request: Request, call_next: Any) -> Response:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"error": "missing or wrong bearer token"}, 401)
            response: Response = await call_next(request)
            return response

    @app.middleware("http")
    async def record_mutations(request: Request, call_next: Any) -> Response:
        """Every call that changes something is an event: what, from where, and how it
        ended (the body is not recorded: it may carry the caller's environment)."""
        response: Response = await call_next(request)
        if request.method == "POST" and request.url.path not in READ_ONLY_POSTS:
            client = request.client
            origin = f"tcp {client.host}:{client.port}" if client is not None \
                else "the api socket"
            agent = request.headers.get("user-agent", "")
            with contextlib.suppress(Exception):  # a full disk must not fail the call
                daemon.store.add_event(
                    "api.call", f"POST {request.url.path} from {origin}: "
                    f"{response.status_code}", None, None,
                    {"method": "POST", "path": request.url.path, "origin": origin,
                     "user_agent": agent[:100], "status": response.status_code})
        return response

    @app.exception_handler(KeyError)
    async def not_found(request: Request, exc: KeyError) -> JSONResponse:
        return JSONResponse({"error": f"no such service: {exc.args[0]}"}, 404)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The same `{"error": ...}` shape as every other failure, so clients need one
        # parser; FastAPI's own `detail` list stays for those who want every problem.
        return JSONResponse({"error": _first_problem(exc.errors()),
                             "detail": jsonable_encoder(exc.errors())}, 422)

    @app.exception_handler(MsoError)
    async def mso_error(request: Request, exc: MsoError) -> JSONResponse:
        # The error tree (mso.errors) says the status: a bad manifest 422, a rollout
        # command with nothing to act on 409, the proxy not answering 503, ...
        return JSONResponse({"error": str(exc)}, exc.http_status)

    @app.get("/v1/services/{service}/rollout")
    async def rollout_status(service: str) -> dict[str, Any]:
        return daemon.rollouts.status(service)

    @app.post("/v1/services/{service}/rollout/{action}")
    async def rollout_action(service: str, action: Literal["promote", "abort", "pause",
                                                           "resume"]) -> dict[str, Any]:
        return daemon.rollouts.command(action, service)

    @app.post("/v1/services/{service}/rollback")
    async def rollback(service: str, body: RollbackRequest) -> dict[str, Any]:
        number = daemon.rollback(service, body.to)
        return {"service": service, "release": number}

    @app.post("/v1/secrets/rotate-key")
    async def rotate_secrets_key() -> dict[str, Any]:
        count = daemon.store.rotate_secrets_key()
        daemon.store.add_event("secrets.key_rotated",
                               f"secrets key rotated; {count} release(s) re-encrypted")
        return {"releases": count}

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return daemon.status()

    @app.post("/v1/apply")
    async def apply(body: ApplyRequest) -> dict[str, Any]:
        loaded = await asyncio.to_thread(load_app, body.manifest, body.environ)
        built = await asyncio.to_thread(build_images, loaded)  # docker build: off the loop
        sources = await asyncio.to_thread(source_digests, loaded)  # reads the code
        changes = daemon.apply(loaded, force=body.force, built=built, sources=sources)
        # Routes and listeners change at once (nothing else waits for them), so a port
        # the proxy cannot bind is this request's answer, not a later event only.
        await daemon.push_routes()
        return {"changes": [{"service": c.service, "release": c.release,
                             "created": c.created, "change": c.change, "held": c.held}
                            for c in changes],
                "proxy_error": daemon.push_error}

    @app.post("/v1/diff")
    async def diff(body: DiffRequest) -> dict[str, Any]:
        """Services whose manifest differs from the release they run, and which keys."""
        loaded = await asyncio.to_thread(load_app, body.manifest, body.environ)
        return {"drift": [d.to_json() for d in drift(daemon.store, loaded)]}

    @app.get("/v1/ps")
    async def ps() -> dict[str, Any]:
        return views.ps(daemon)

    @app.get("/v1/endpoints")
    async def endpoints() -> dict[str, Any]:
        return views.endpoints(daemon)

    @app.get("/v1/services/{service}/releases")
    async def releases(service: str) -> list[dict[str, Any]]:
        found = views.releases(daemon.store, service)
        if not found:
            raise KeyError(service)
        return found

    @app.post("/v1/services/{service}/scale")
    async def scale(service: str, body: ScaleRequest) -> dict[str, Any]:
        daemon.scale(service, body.replicas)
        return {"service": service, "replicas": body.replicas}

    @app.post("/v1/services/{service}/restart")
    async def restart(service: str, body: RestartRequest | None = None) -> dict[str, Any]:
        how = daemon.restart(service, body.strategy if body is not None else None)
        # `generation`: the replicas this restart starts carry it in /v1/ps.
        return {"service": service, "restarting": True, "strategy": how,
                "generation": daemon.restart_generation(service)}

    @app.post("/v1/services/{service}/restart/settle")
    async def settle_restart(service: str, body: SettleRequest | None = None) -> dict[str, Any]:
        reason = body.reason if body is not None else ""
        return {"service": service, "stopped": daemon.settle_restart(service, reason)}

    @app.post("/v1/services/{service}/signal")
    async def signal_service(service: str, body: SignalRequest) -> dict[str, Any]:
        return {"service": service, "signal": body.signal,
                "replicas": daemon.signal_service(service, body.signal)}

    @app.post("/v1/services/{service}/run")
    async def run(service: str, body: RunRequest) -> StreamingResponse:
        if service not in daemon.store.desired():
            raise KeyError(service)
        return StreamingResponse(_ndjson(run_oneoff(daemon, service, body.argv)),
                                 media_type="application/x-ndjson")

    @app.get("/v1/events")
    async def events(after: int = Query(0, ge=0, le=MAX_ID), service: str | None = None,
                     follow: bool = False,
                     limit: int = Query(1000, ge=1, le=MAX_LIMIT)) -> Response:
        if not follow:
            return JSONResponse([e.as_json() for e in daemon.store.events(after, service, limit)])
        return StreamingResponse(_ndjson(views.follow_events(daemon, after, service),
                                         daemon.stopped),
                                 media_type="application/x-ndjson")

    @app.get("/v1/logs")
    async def logs(service: str | None = None,
                   since: float | None = Query(None, ge=0, le=MAX_TIME),
                   tail: int | None = Query(None, ge=0, le=MAX_LIMIT), follow: bool = False,
                   replica: str | None = None) -> Response:
        if service is not None and service not in daemon.store.desired() \
                and daemon.store.latest_release(service) is None:
            raise KeyError(service)
        if not follow:
            return JSONResponse(daemon.log_store.read(service=service, since=since, tail=tail,
                                                      replica=replica))
        return StreamingResponse(_ndjson(daemon.log_store.follow(service, since, tail),
                                         daemon.stopped),
                                 media_type="application/x-ndjson")

    @app.get("/v1/metrics")
    async def metrics() -> dict[str, Any]:
        return await daemon.proxy.metrics()

    @app.post("/v1/dashboard")
    async def start_dashboard(body: DashboardRequest) -> dict[str, Any]:
        """Serve the web dashboard on 127.0.0.1 (until the daemon stops); its port. The
        login link is `/login?token=` with the app's API token."""
        if dashboard is None:
            raise NotFound("this daemon does not serve a dashboard")
        port = await dashboard(body.port)
        return {"port": port, "url": f"http://127.0.0.1:{port}/"}

    @app.post("/v1/down")
    async def down() -> dict[str, Any]:
        await daemon.down()
        if on_down is not None:
            asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(on_down()))
        return {"stopped": True}

    return app


async def _ndjson(items: AsyncIterator[dict[str, Any]],
                 stop: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    """NDJSON lines of `items`; a follower (`stop` given) ends when the daemon stops, so
    an open `logs -f` never holds up the daemon's exit."""
    if stop is None:
        async for item in items:
            yield (json.dumps(item, default=str) + "\n").encode()
        return
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({following, stopped},
                                         return_when=asyncio.FIRST_COMPLETED)
            if following not in done:
                following.cancel()
                return
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield (json.dumps(item, default=str) + "\n").encode()
    finally:
        stopped.cancel()
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def _first_problem(errors: Any) -> str:
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = str(first.get("msg", "invalid"))
    return f"{where or 'request body'}: {message}"
