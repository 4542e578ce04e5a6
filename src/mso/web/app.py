"""The dashboard's web app: server-rendered pages, Server-Sent Events, POST actions.

Pages are Jinja2 templates rendered from `mso.web.data`, which reads the app through its
`Source` (mso.web.source: the daemon in its own process on the embedded engine, the
engine's API and the rollout controller on Swarm and Kubernetes). Live parts
of a page are template fragments that an SSE stream re-renders once a second and sends
only when they changed; the page's small script (static/dashboard.js) swaps them in,
appends log lines and events, and feeds the rollout's uPlot charts. Without scripts,
every page still renders and every action (a plain HTML form) still works.

SSE is written by hand over a StreamingResponse (`text/event-stream`) rather than with
a library: the format is three lines, and the streams must end when the dashboard stops
(the daemon's `down`, or Ctrl-C of a remote app's dashboard), which a per-tick check of
`closing` does.

Security (see mso.web.auth): every request but `/login` needs the session cookie, else
401 with no page content; actions are POSTs carrying the session's CSRF token, else 403
before anything is touched; an unknown service, release or action is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, \
    StreamingResponse
from fastapi.staticfiles import StaticFiles

from mso import __version__
from mso.errors import MsoError
from mso.web import auth, data
from mso.web.source import Source

HERE = Path(__file__).resolve().parent
TICK = 1.0  # seconds between two updates of a live page
ACTIONS = ("promote", "abort", "pause", "resume")
UNAUTHORIZED = "401 Unauthorized: open the link that `mso dashboard` prints.\n"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.ChainableUndefined)
    env.filters["pct"] = lambda v, d=1: "–" if v is None else f"{float(v) * 100:.{d}f}%"
    env.filters["num"] = lambda v, d=1: "–" if v is None else f"{float(v):.{d}f}"
    env.filters["clock"] = _clock
    return env


def _clock(ts: Any) -> str:
    import datetime as dt
    if ts is None:
        return "–"
    return dt.datetime.fromtimestamp(float(ts)).strftime("%H:%M:%S")


def create_dashboard(src: Source, token: str, sampler: data.Sampler,
                     closing: asyncio.Event) -> FastAPI:
    app = FastAPI(title="mso dashboard", version=__version__, openapi_url=None,
                  docs_url=None, redoc_url=None)
    env = _environment()

    def render(name: str, request: Request | None = None, **ctx: Any) -> str:
        nonce = getattr(request.state, "nonce", "") if request is not None else ctx.pop("nonce")
        return env.get_template(name).render(
            app_name=src.app_name(), csrf=auth.csrf_token(token, nonce),
            services=src.services(), engine=src.engine, **ctx)

    def page(name: str, request: Request, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("message", request.query_params.get("message", ""))
        ctx.setdefault("error", request.query_params.get("error", ""))
        return HTMLResponse(render(name, request, **ctx), status,
                            headers={"Cache-Control": "no-store"})

    @app.middleware("http")
    async def require_session(request: Request, call_next: Any) -> Response:
        if request.url.path == "/login":
            response: Response = await call_next(request)
            return response
        nonce = auth.session_nonce(token, request.cookies.get(auth.COOKIE))
        if nonce is None:
            return PlainTextResponse(UNAUTHORIZED, 401)
        request.state.nonce = nonce
        response = await call_next(request)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(KeyError)
    async def not_found(request: Request, exc: KeyError) -> Response:
        return PlainTextResponse(f"404 Not Found: {exc.args[0]}\n", 404)

    @app.get("/login")
    async def login(request: Request) -> Response:
        if not auth.token_ok(token, request.query_params.get("token")):
            return PlainTextResponse(UNAUTHORIZED, 401)
        response = RedirectResponse("/", 303)
        response.set_cookie(auth.COOKIE, auth.new_session(token), httponly=True,
                            samesite="strict", path="/")
        return response

    # -- pages --------------------------------------------------------------------------
    @app.get("/")
    async def overview(request: Request) -> HTMLResponse:
        return page("overview.html", request, o=await data.overview(src, sampler),
                    stream="/sse/overview")

    @app.get("/services/{name}")
    async def service(request: Request, name: str) -> HTMLResponse:
        return page("service.html", request, s=await data.service(src, name),
                    logs=await data.logs(src, name),
                    stream=f"/sse/services/{urllib.parse.quote(name)}")

    @app.get("/services/{name}/rollout")
    async def rollout(request: Request, name: str) -> HTMLResponse:
        status = await src.rollout_status(name)
        return page("rollout.html", request, r=_rollout(src, name, status),
                    series=sampler.series(name),
                    stream=f"/sse/services/{urllib.parse.quote(name)}/rollout")

    @app.get("/events")
    async def events(request: Request, service: str = "", kind: str = "") -> HTMLResponse:
        store = src.store()
        if service and service not in src.services() \
                and store.latest_release(service) is None:
            raise KeyError(service)
        found = data.events(store, service or None, kind or None)
        query = urllib.parse.urlencode({"service": service, "kind": kind})
        return page("events.html", request, events=list(reversed(found)),
                    kinds=data.event_kinds(store), service=service, kind=kind,
                    stream=f"/sse/events?{query}")

    @app.get("/traces")
    async def traces(request: Request, service: str = "") -> HTMLResponse:
        error = ""
        try:
            recent = await src.traces()
        except Exception as exc:  # the proxy restarting or gone: say so, show nothing
            recent, error = [], f"traces unavailable: {exc}"
        return page("traces.html", request, traces=data.waterfall(recent, service or None),
                    service=service, tracing=src.tracing(),
                    error=error)

    # -- live updates -------------------------------------------------------------------
    @app.get("/sse/overview")
    async def sse_overview(request: Request) -> StreamingResponse:
        nonce = request.state.nonce

        async def frames() -> AsyncIterator[dict[str, Any]]:
            while True:
                yield {"swap": {"overview-body": render(
                    "_overview_body.html", o=await data.overview(src, sampler), nonce=nonce)}}
                await asyncio.sleep(TICK)
        return _sse(frames(), closing)

    @app.get("/sse/services/{name}")
    async def sse_service(request: Request, name: str) -> StreamingResponse:
        await data.service(src, name)  # 404 before the stream starts
        nonce = request.state.nonce
        lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1000)

        async def follow() -> None:
            async for record in src.follow_logs(name):
                with contextlib.suppress(asyncio.QueueFull):
                    lines.put_nowait({k: record.get(k) for k in
                                      ("ts", "replica", "release", "stream", "line")})

        async def frames() -> AsyncIterator[dict[str, Any]]:
            follower = asyncio.ensure_future(follow())
            try:
                while True:
                    s = await data.service(src, name)
                    yield {"swap": {
                        "replicas": render("_replicas.html", s=s, nonce=nonce),
                        "releases": render("_releases.html", s=s, nonce=nonce)}}
                    batch = []
                    while not lines.empty():
                        batch.append(lines.get_nowait())
                    if batch:
                        yield {"log": batch}
                    await asyncio.sleep(TICK)
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
        return _sse(frames(), closing)

    @app.get("/sse/services/{name}/rollout")
    async def sse_rollout(request: Request, name: str) -> StreamingResponse:
        await src.rollout_status(name)  # 404 before the stream starts
        nonce = request.state.nonce
        after = float(request.query_params.get("after", "0") or 0)

        async def frames() -> AsyncIterator[dict[str, Any]]:
            last = after
            while True:
                status = await src.rollout_status(name)
                frame: dict[str, Any] = {"swap": {"rollout-body": render(
                    "_rollout_body.html", r=_rollout(src, name, status), nonce=nonce)}}
                points = sampler.series(name, last)
                newest = max((p["t"] for ps in points.values() for p in ps), default=last)
                if newest > last:
                    frame["points"] = points
                    last = newest
                yield frame
                await asyncio.sleep(TICK)
        return _sse(frames(), closing)

    @app.get("/sse/events")
    async def sse_events(request: Request, service: str = "", kind: str = "",
                         after: int = 0) -> StreamingResponse:
        nonce = request.state.nonce

        async def frames() -> AsyncIterator[dict[str, Any]]:
            store = src.store()
            last = after or max((e.id for e in store.events(0, None, 1)), default=0)
            while True:
                batch = data.events(store, service or None, kind or None, after=last)
                if batch:
                    last = max(int(e["id"]) for e in batch)
                    yield {"events": render("_event_rows.html", events=list(reversed(batch)),
                                            nonce=nonce)}
                else:
                    yield {"ping": {}}
                await asyncio.sleep(TICK)
        return _sse(frames(), closing)

    # -- actions ------------------------------------------------------------------------
    async def checked_form(request: Request) -> dict[str, str] | None:
        """The POSTed form when its CSRF token is the session's, else None."""
        body = (await request.body()).decode("utf-8", "replace")
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(body).items()}
        given = form.get("csrf") or request.headers.get("x-csrf-token")
        return form if auth.csrf_ok(token, request.state.nonce, given) else None

    def forbidden() -> Response:
        return PlainTextResponse("403 Forbidden: missing or wrong CSRF token\n", 403)

    async def act(back: str, do: Callable[[], Awaitable[str]]) -> Response:
        try:
            message = await do()
        except MsoError as exc:
            return RedirectResponse(f"{back}?{urllib.parse.urlencode({'error': str(exc)})}",
                                    303)
        return RedirectResponse(f"{back}?{urllib.parse.urlencode({'message': message})}",
                                303)

    @app.post("/services/{name}/rollout/{action}")
    async def rollout_action(request: Request, name: str, action: str) -> Response:
        form = await checked_form(request)
        if form is None:
            return forbidden()
        if action not in ACTIONS:
            raise KeyError(action)
        await src.rollout_status(name)  # KeyError (404) for an unknown service

        async def do() -> str:
            after = await src.rollout_command(action, name)
            return f"{action}: {name} is now {after.get('phase') or 'without a rollout'}"
        return await act(f"/services/{urllib.parse.quote(name)}/rollout", do)

    @app.post("/services/{name}/rollback")
    async def rollback(request: Request, name: str) -> Response:
        form = await checked_form(request)
        if form is None:
            return forbidden()
        await data.service(src, name)  # KeyError (404) for an unknown service
        to = form.get("to", "")
        if not to.isdigit() or src.store().release(name, int(to)) is None:
            raise KeyError(f"{name} release {to}")

        async def do() -> str:
            number = await src.rollback(name, int(to))
            return f"rolling {name} back to release {to} as release {number}"
        return await act(f"/services/{urllib.parse.quote(name)}", do)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def _rollout(src: Source, name: str, status: dict[str, Any]) -> dict[str, Any]:
    active = src.rollout_active(name, status)
    plan = list(status.get("plan") or [])
    step = status.get("step")
    return {"name": name, "status": status, "active": active,
            "plan": [{"number": i + 1, "text": text,
                      "state": ("current" if active and step == i + 1 else
                                "done" if step is not None and i + 1 < step else "")}
                     for i, text in enumerate(plan)],
            "actions": [a for a in ACTIONS if active and
                        (a not in ("pause", "resume") or
                         (a == "resume") == bool(status.get("paused")))]}


def _sse(frames: AsyncIterator[dict[str, Any]], closing: asyncio.Event) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        sent: dict[str, str] = {}  # the last HTML of each fragment: only changes go out
        try:
            async for frame in frames:
                if "swap" in frame:
                    changed = {k: v for k, v in frame["swap"].items() if sent.get(k) != v}
                    sent.update(changed)
                    frame = {**frame, "swap": changed} if changed else \
                        {k: v for k, v in frame.items() if k != "swap"} or {"ping": {}}
                for event, payload in frame.items():
                    yield f"event: {event}\ndata: {json.dumps(payload, default=str)}\n\n" \
                        .encode()
                if closing.is_set():
                    return
        finally:
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()
    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
