"""The web dashboard over HTTP, end to end: a real `mso up -d` app, `mso dashboard`, and
requests as a browser makes them (login link, cookie, pages, SSE, form POSTs)."""

from __future__ import annotations

import http.client
import re
import socket

import httpx
import pytest

from tests.e2e.dashboard import (SECRET, SECRET_2, base_of, csrf_of, dashboard_url,
                                 logged_in, sse_events, write)
from tests.e2e.harness import MsoApp, free_port, wait_for
from tests.e2e.load import Load

pytestmark = pytest.mark.e2e


def phase(app: MsoApp) -> str | None:
    return app.json("rollout", "status", "echo")["phase"]  # type: ignore[no-any-return]


def test_no_daemon_no_dashboard(app: MsoApp) -> None:
    write(app)
    out = app.cli("dashboard", "--no-open", check=False)
    assert out.returncode == 1
    assert "no mso daemon is running" in out.stderr and "mso up" in out.stderr
    assert out.stdout == ""


def test_token_cookie_pages_404s_and_no_secret(app: MsoApp) -> None:
    write(app)
    app.up()
    url = dashboard_url(app)
    base = base_of(url)
    # The same dashboard, on the same port, however often it is asked for.
    assert dashboard_url(app) == url
    taken = app.cli("dashboard", "--no-open", "--port", str(free_port()), check=False)
    assert taken.returncode == 1 and "already runs on" in taken.stderr

    # Nothing without the token: 401 and no page content, whatever is asked for.
    anonymous = httpx.Client(base_url=base, timeout=10.0)
    forged = httpx.Client(base_url=base, timeout=10.0, cookies={"mso_session": "abc.def"})
    for client in (anonymous, forged):
        for path in ("/", "/services/echo", "/services/echo/rollout", "/events",
                     "/sse/overview", "/static/dashboard.js", "/static/vendor/uPlot.iife.min.js",
                     "/login?token=wrong", "/login"):
            response = client.get(path)
            assert response.status_code == 401, (path, response.status_code)
            assert "echo" not in response.text and "<" not in response.text
            assert "set-cookie" not in response.headers
        response = client.post("/services/echo/rollout/promote", data={"csrf": "x"})
        assert response.status_code == 401

    # The login link sets the session cookie and sends the browser to the overview.
    response = anonymous.get(url.replace(base, ""))
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/", "samesite=strict"} <= flags, cookie
    client = logged_in(url)

    overview = client.get("/")
    assert overview.status_code == 200
    assert 'data-service="echo"' in overview.text and "2 READY" in overview.text
    assert "stable 100%" in overview.text and "Gateway 127.0.0.1:" in overview.text
    service = client.get("/services/echo")
    assert service.status_code == 200
    assert all(f'data-replica="echo-{i}"' in service.text for i in (1, 2))
    assert "listening on" in service.text  # the replicas' own log lines
    assert client.get("/services/echo/rollout").status_code == 200
    events = client.get("/events", params={"service": "echo", "kind": "release"})
    assert events.status_code == 200 and 'data-kind="release.created"' in events.text
    kinds = re.findall(r'data-kind="([^"]+)"', events.text)
    assert kinds and all(k.startswith("release") for k in kinds), kinds

    # Unknown things are 404s, and change nothing.
    csrf = csrf_of(overview.text)
    for path in ("/services/nope", "/services/nope/rollout", "/sse/services/nope"):
        assert client.get(path).status_code == 404, path
    assert client.get("/events", params={"service": "nope"}).status_code == 404
    assert client.post("/services/nope/rollout/promote", data={"csrf": csrf}).status_code == 404
    assert client.post("/services/echo/rollout/explode", data={"csrf": csrf}).status_code == 404
    assert client.post("/services/echo/rollback", data={"csrf": csrf, "to": "99"}) \
        .status_code == 404
    assert [r["number"] for r in app.json("releases", "echo")] == [1]

    # A new release that changes the secret: the diff says "changed", never the value.
    write(app, "v2", secret=SECRET_2)
    app.cli("deploy")
    service = client.get("/services/echo")
    assert "<code>secrets.token</code>: changed" in service.text
    assert "<code>env.GREETING</code>: <del>v1</del> → <ins>v2</ins>" in service.text
    pages = [client.get(p).text for p in ("/", "/services/echo", "/services/echo/rollout",
                                          "/events", "/events?kind=release")]
    streamed = []
    for path in ("/sse/overview", "/sse/services/echo", "/sse/services/echo/rollout",
                 "/sse/events?after=0"):
        for event, data in sse_events(client, path):
            streamed.append(repr(data))
            if event != "ping":
                break
    for text in pages + streamed:
        assert SECRET not in text and SECRET_2 not in text


def paused_canary(app: MsoApp) -> tuple[str, httpx.Client]:
    """Release 1 up, release 2 deployed and held at its pause step; the dashboard's URL and
    a logged-in client."""
    write(app)
    app.up()
    url = dashboard_url(app)
    client = logged_in(url)
    write(app, "v2")
    app.cli("deploy")
    wait_for(lambda: phase(app) == "Paused", timeout=60, message="canary paused")
    return url, client


def test_sse_charts_forged_post_and_promote(app: MsoApp) -> None:
    url, client = paused_canary(app)
    page = client.get("/services/echo/rollout")
    assert 'id="action-promote"' in page.text and 'data-phase="Paused"' in page.text
    csrf = csrf_of(page.text)

    with Load(app.gateway_port, rate=60):
        # The stream carries one point a second per subset: wait for canary traffic.
        canary_points = []
        for event, data in sse_events(client, "/sse/services/echo/rollout", timeout=60):
            if event == "points":
                canary_points += [p for p in data.get("canary", []) if p["requests"] > 0]
            if len(canary_points) >= 3:
                break
        assert all(p["rate"] > 0 and p["p99_ms"] is not None for p in canary_points)

        # Forged POSTs: no token, a wrong one, another session's. 403 and nothing moves.
        other = logged_in(url)
        other_csrf = csrf_of(other.get("/").text)
        assert other_csrf != csrf
        for body in ({}, {"csrf": "0" * 64}, {"csrf": other_csrf}):
            response = client.post("/services/echo/rollout/promote", data=body)
            assert response.status_code == 403, body
            assert "echo" not in response.text
        response = client.post("/services/echo/rollout/abort",
                               headers={"X-CSRF-Token": "nope"})
        assert response.status_code == 403
        assert phase(app) == "Paused"

        response = client.post("/services/echo/rollout/promote", data={"csrf": csrf})
        assert response.status_code == 303
        assert response.headers["location"].startswith("/services/echo/rollout?message=")
        wait_for(lambda: phase(app) == "Promoted", timeout=60, message="promoted")
    assert 'data-phase="Promoted"' in client.get("/services/echo/rollout").text


def test_rollback_from_the_dashboard_and_stopped_by_down(app: MsoApp) -> None:
    url, client = paused_canary(app)
    csrf = csrf_of(client.get("/").text)
    client.post("/services/echo/rollout/promote", data={"csrf": csrf})
    wait_for(lambda: phase(app) == "Promoted", timeout=60, message="promoted")
    response = client.post("/services/echo/rollback", data={"csrf": csrf, "to": "1"})
    assert response.status_code == 303 and "message=" in response.headers["location"]
    releases = app.json("releases", "echo")
    assert releases[-1]["number"] == 3 and "rollback to release 1" in releases[-1]["change"]
    wait_for(lambda: {r["release"] for r in app.ps()} == {3}, timeout=60,
             message="release 3 (release 1's spec) running")
    assert ">v1</ins>" in client.get("/services/echo").text

    port = int(base_of(url).rsplit(":", 1)[1])
    app.cli("down")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_the_traces_page_shows_sampled_requests_as_a_waterfall(app: MsoApp) -> None:
    write(app)
    app.manifest.write_text(app.manifest.read_text() + "tracing: {sample: 0%}\n")
    app.up()
    client = logged_in(dashboard_url(app))
    before = client.get("/traces")
    assert before.status_code == 200 and "No sampled request yet" in before.text
    assert "not exported (no <code>endpoint</code>)" in before.text
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
    conn = http.client.HTTPConnection("127.0.0.1", app.gateway_port, timeout=10)
    conn.request("GET", "/hello", headers={
        "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert conn.getresponse().status == 200
    conn.close()
    assert app.get("/unsampled")[0] == 200  # sample 0%: not traced

    def page() -> str | None:
        text = client.get("/traces?service=echo").text
        return text if trace_id in text else None
    html = wait_for(page, timeout=30)
    assert "GET /hello" in html and "try 1 → echo-" in html
    assert "continues span 00f067aa0ba902b7" in html and "/unsampled" not in html
    assert 'class="bar" style="left: 0.0%; width: 100.0%"' in html
    assert SECRET not in html
    assert trace_id not in client.get("/traces?service=other").text
