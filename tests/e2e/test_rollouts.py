"""Progressive delivery end to end: real replicas, real traffic through mso's proxy."""

from __future__ import annotations

import http.client
import os
import signal
import time
from typing import Any

import pytest

from tests.e2e.harness import MsoApp, wait_for
from tests.e2e.load import Load

pytestmark = pytest.mark.e2e

BASE = """
app: ro
gateway: {port: GATEWAY_PORT}
routes:
  - {path: /, service: echo}
services:
  echo:
    run: [PYTHON, ECHO_APP]
    replicas: 3
    ports: {http: 8000}
    env: {GREETING: "@VERSION@", ERROR_RATE: "@ERRORS@", DELAY_MS: "@DELAY@"}
    health:
      readiness: {http: /ready, period: 200ms, timeout: 3s, failure_threshold: 2}
    stop: {grace: 5s}
    rollout:
STRATEGY
"""

CANARY = """      strategy: canary
      progress_deadline: 60s
      steps:
        - set_weight: 20
        - analysis: {duration: 4s}
        - set_weight: 50
        - analysis: {duration: 4s}
      analysis: {interval: 500ms, min_samples: 40, max_error_rate_increase: 0.01}
"""

ROLLING = """      strategy: rolling
      max_surge: 1
      max_unavailable: 0
"""

BLUE_GREEN = """      strategy: blue_green
      preview_port: PREVIEW_PORT
      keep_previous: 3s
"""


def write(app: MsoApp, strategy: str, version: str = "v1", errors: str = "0",
          delay: str = "0", preview: int = 0) -> None:
    text = BASE.replace("STRATEGY", strategy.replace("PREVIEW_PORT", str(preview)))
    app.write(text.replace("@VERSION@", version).replace("@ERRORS@", errors)
              .replace("@DELAY@", delay))


def versions(app: MsoApp) -> set[int]:
    return {r["release"] for r in app.ps()}


def status(app: MsoApp) -> dict:  # type: ignore[type-arg]
    return app.json("rollout", "status", "echo")  # type: ignore[no-any-return]


def test_rolling_update_under_load_loses_no_request(app: MsoApp) -> None:
    write(app, ROLLING)
    app.up()
    with Load(app.gateway_port, rate=300, threads=6) as load:
        wait_for(lambda: load.result.ok > 200, message="traffic")
        write(app, ROLLING, version="v2")
        app.cli("deploy")
        wait_for(lambda: versions(app) == {2} and app.all_ready(3), timeout=60,
                 message="all replicas on release 2")
        seen = load.result.ok
        wait_for(lambda: load.result.ok > seen + 200, message="traffic after update")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    assert status(app)["phase"] == "Promoted"
    assert [r["outcome"] for r in app.json("releases", "echo")] == ["superseded", "promoted"]


def test_healthy_canary_is_promoted_automatically(app: MsoApp) -> None:
    write(app, CANARY)
    app.up()
    with Load(app.gateway_port, rate=200, threads=4) as load:
        write(app, CANARY, version="v2")
        app.cli("deploy")
        # `rollout status -w` follows the rollout to its end: exit 0 once promoted.
        watch = app.cli("rollout", "status", "-w", "echo", "--timeout", "90", check=False)
        assert watch.returncode == 0, (watch.stdout, watch.stderr)
        lines = watch.stdout.splitlines()
        assert lines[-1] == "echo: release 2 promoted", lines
        assert " canary Promoted step 4/4 weight 100%: " in lines[-2], lines
        assert any("step 4/4" in line for line in lines), lines
        assert status(app)["phase"] == "Promoted"
        wait_for(lambda: versions(app) == {2} and app.all_ready(3), timeout=60,
                 message="stable on release 2")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    trail = [e for e in app.events() if e["service"] == "echo"]
    passed = [e for e in trail if "analysis passed" in e["message"]]
    assert len(passed) == 2, [e["message"] for e in trail]
    assert passed[0]["data"]["analysis"]["canary"]["requests"] >= 40


def test_bad_canary_is_rolled_back_automatically(app: MsoApp) -> None:
    write(app, CANARY)
    app.up()
    with Load(app.gateway_port, rate=200, threads=4) as load:
        write(app, CANARY, version="v2", errors="0.3")
        app.cli("deploy")
        wait_for(lambda: status(app)["phase"] == "RolledBack", timeout=60,
                 message="canary rolled back")
        wait_for(lambda: versions(app) == {1} and app.all_ready(3), timeout=60,
                 message="canary replicas removed")
    st = status(app)
    assert st["weight"] == 0 and "analysis failed" in st["reason"]
    assert st["analysis"]["canary"]["errors"] > 0
    assert st["analysis"]["stable"]["errors"] == 0
    outcomes = {r["number"]: r["outcome"] for r in app.json("releases", "echo")}
    assert outcomes[2] == "rolled back"
    trail = [e["type"] for e in app.events() if e["service"] == "echo"]
    assert "rollout.started" in trail and "analysis.fail" in trail and "rollout.rolledback" in trail
    # Applying the same manifest again does not roll the bad release out a second time.
    app.cli("deploy")
    assert versions(app) == {1}
    assert load.result.ok > 100


def test_slow_canary_is_rolled_back(app: MsoApp) -> None:
    write(app, CANARY)
    app.up()
    with Load(app.gateway_port, rate=200, threads=8):
        write(app, CANARY, version="v2", delay="200")
        app.cli("deploy")
        wait_for(lambda: status(app)["phase"] == "RolledBack", timeout=90,
                 message="slow canary rolled back")
    st = status(app)
    assert st["analysis"]["canary"]["p99_ms"] > st["analysis"]["stable"]["p99_ms"] + 100


def pinned_to_canary(app: MsoApp, count: int) -> None:
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", app.gateway_port, timeout=5)
        try:
            conn.request("GET", "/", headers={"x-mso-route": "canary"})
            response = conn.getresponse()
            assert response.status == 200 and " 2 " in f" {response.read().decode()} "
        finally:
            conn.close()


NEEDS = "canary has {} of 40 requests needed, stable {} of 40"


def test_canary_without_traffic_holds_and_says_what_it_needs(app: MsoApp) -> None:
    write(app, CANARY)
    app.up()
    write(app, CANARY, version="v2")
    app.cli("deploy")
    wait_for(lambda: status(app)["phase"] == "Inconclusive", timeout=60,
             message="inconclusive without traffic")
    st = status(app)
    # Steps are numbered as events number them: "step 1: weight set to 20%", then the
    # analysis is step 2 of 4.
    assert (st["step"], st["steps"], st["weight"]) == (2, 4, 20)
    assert st["reason"] == "analysis inconclusive: " + NEEDS.format(0, 0)
    assert "step 2: analysis inconclusive, holding: " + NEEDS.format(0, 0) in \
        [e["message"] for e in app.events()]
    assert st["deadline_at"] is not None
    assert versions(app) == {1, 2}
    assert {r["release"] for r in app.ps() if r["subset"] == "stable"} == {1}
    table = app.cli("rollout", "status", "echo").stdout
    for expected in ("step 2/4: analysis 4s (done; held: inconclusive)  weight 20%",
                     "analysis inconclusive: " + NEEDS.format(0, 0),
                     "x-mso-route: canary", "`mso rollout promote echo` skips the analysis",
                     "`mso rollout abort echo` rolls back to release 1",
                     "otherwise the progress deadline (1m) fails the rollout"):
        assert expected in table, table
    assert "thresholds:" in table
    # The reason follows the numbers as they change (it was set once, then stale).
    pinned_to_canary(app, 3)
    wait_for(lambda: NEEDS.format(3, 0) in status(app)["reason"], timeout=20,
             message="the held reason with the canary's 3 requests")
    app.cli("rollout", "abort", "echo")
    wait_for(lambda: versions(app) == {1}, message="canary removed after abort")
    # Nothing left to wait for: -w answers at once with the last outcome.
    watch = app.cli("rollout", "status", "-w", "echo", check=False)
    assert watch.returncode == 1, (watch.stdout, watch.stderr)
    assert watch.stderr.strip() == "mso: echo: release 2 rolled back: aborted by user"


def test_canary_without_traffic_fails_at_its_progress_deadline(app: MsoApp) -> None:
    deadline = CANARY.replace("progress_deadline: 60s", "progress_deadline: 10s") \
        .replace("analysis: {duration: 4s}\n        - set_weight: 50",
                 "analysis: {duration: 2s}\n        - set_weight: 50")
    write(app, deadline)
    app.up()
    write(app, deadline, version="v2")
    app.cli("deploy")
    watch = app.cli("rollout", "status", "-w", "echo", "--timeout", "90", check=False)
    reason = ("analysis inconclusive for 10s past its duration (progress_deadline): "
              + NEEDS.format(0, 0))
    assert watch.returncode == 1, (watch.stdout, watch.stderr)
    assert watch.stderr.splitlines() == [f"mso: echo: release 2 failed: {reason}"]
    lines = watch.stdout.splitlines()
    assert any(line.endswith("canary Inconclusive step 2/4 weight 20%: analysis "
                             "inconclusive: " + NEEDS.format(0, 0)) for line in lines), lines
    assert lines[-1].endswith(f"canary Failed step 2/4 weight 0%: {reason}"), lines
    st = status(app)
    assert (st["phase"], st["reason"], st["next"]) == ("Failed", reason, [])
    wait_for(lambda: versions(app) == {1} and app.all_ready(3), timeout=60,
             message="canary removed after the deadline")
    assert [r["outcome"] for r in app.json("releases", "echo")] == ["promoted", "failed"]
    trail = {e["message"].split(":")[0]: e["ts"] for e in app.events()
             if e["service"] == "echo" and e["type"].startswith("rollout.")}
    held_for = trail["Failed"] - trail["step 2"]
    assert held_for >= 9.5, trail  # the deadline counts from the end of the analysis


def test_pause_stops_the_analysis_clock(app: MsoApp) -> None:
    one_analysis = CANARY.replace("        - set_weight: 50\n        - analysis: {duration: 4s}\n",
                                  "").replace("duration: 4s", "duration: 8s")
    assert "duration: 8s" in one_analysis and "set_weight: 50" not in one_analysis
    write(app, one_analysis)
    app.up()
    with Load(app.gateway_port, rate=200, threads=4) as load:
        write(app, one_analysis, version="v2")
        app.cli("deploy")
        wait_for(lambda: (s := status(app))["step"] == 2 and s["step_left"] < 7.5,
                 timeout=60, message="the analysis under way")
        app.cli("rollout", "pause", "echo")
        paused = status(app)
        left = paused["step_left"]
        assert paused["phase"] == "Paused" and paused["step"] == 2 and 0 < left < 7.5
        # Let more than the whole analysis go by while paused: on a running clock it
        # would be over (and the canary promoted at the first tick after resume).
        until = time.time() + 8.5
        wait_for(lambda: time.time() > until, timeout=20, message="the pause to outlast "
                 "the analysis")
        still: dict[str, Any] = status(app)
        assert (still["phase"], still["step"], still["step_left"]) == ("Paused", 2, left)
        assert "`mso rollout resume echo` continues" in still["next"][0]
        app.cli("rollout", "resume", "echo")
        watch = app.cli("rollout", "status", "-w", "echo", "--timeout", "90", check=False)
        assert watch.returncode == 0, (watch.stdout, watch.stderr)
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    trail = [e for e in app.events() if e["service"] == "echo"]
    resumed = next(e["ts"] for e in trail if e["message"].startswith("resumed by user"))
    passed = next(e["ts"] for e in trail if e["message"].startswith("step 2: analysis passed"))
    assert passed - resumed >= left - 1.0, (left, passed - resumed)


def test_rollback_to_an_older_release_and_identical_spec_is_refused(app: MsoApp) -> None:
    write(app, ROLLING)
    app.up()
    for version in ("v2", "v3"):
        write(app, ROLLING, version=version)
        app.cli("deploy")
        wait_for(lambda: status(app)["phase"] == "Promoted", message=f"{version} deployed")
    app.cli("rollback", "echo", "--to", "1")
    wait_for(lambda: versions(app) == {4} and app.all_ready(3) and
             status(app)["phase"] == "Promoted", message="rollback deployed")
    body = app.get("/")[1]
    assert body.split(" ")[1:3] == ["4", "v1"]
    refused = app.cli("rollback", "echo", "--to", "1", check=False)
    assert refused.returncode == 1 and "identical" in refused.stderr
    releases = app.json("releases", "echo")
    assert [r["number"] for r in releases] == [1, 2, 3, 4]
    assert "rollback to release 1" in releases[-1]["change"]


def test_control_plane_crash_mid_canary_resumes_from_its_step(app: MsoApp) -> None:
    write(app, CANARY.replace("duration: 4s}\n        - set_weight: 50",
                              "duration: 4s}\n        - pause: {}\n        - set_weight: 50"))
    app.up()
    with Load(app.gateway_port, rate=150, threads=4) as load:
        write(app, CANARY.replace("duration: 4s}\n        - set_weight: 50",
                                  "duration: 4s}\n        - pause: {}\n        - set_weight: 50"),
              version="v2")
        app.cli("deploy")
        wait_for(lambda: status(app)["phase"] == "Paused", timeout=60, message="paused step")
        before = status(app)
        os.kill(app.status()["pid"], signal.SIGKILL)
        app.cli("up", "-d", "--timeout", "60")
        after = status(app)
        assert (after["step"], after["weight"], after["phase"]) == \
            (before["step"], before["weight"], "Paused")
        assert len([r for r in app.ps() if r["subset"] == "canary"]) == 1
        app.cli("rollout", "promote", "echo")
        wait_for(lambda: status(app)["phase"] == "Promoted", timeout=90, message="promoted")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    assert any(e["type"] == "rollout.resumed" for e in app.events())


def test_a_deploy_while_the_previous_release_is_kept_starts_from_the_promoted_one(
        app: MsoApp) -> None:
    from tests.e2e.harness import free_port
    preview = free_port()
    keep = BLUE_GREEN.replace("keep_previous: 3s", "keep_previous: 10m")
    write(app, keep, preview=preview)
    app.up()
    write(app, keep, version="v2", preview=preview)
    app.cli("deploy")
    wait_for(lambda: status(app)["phase"] == "Paused", timeout=60, message="preview ready")
    app.cli("rollout", "promote", "echo")
    wait_for(lambda: app.get("/")[1].split(" ")[1] == "2", message="traffic switched")
    with Load(app.gateway_port, rate=100) as load:
        write(app, keep, version="v3", preview=preview)
        app.cli("deploy")
        wait_for(lambda: status(app)["phase"] == "Paused", timeout=60,
                 message="v3 preview ready")
        assert app.get("/", port=preview)[1].split(" ")[1] == "3"
        wait_for(lambda: versions(app) == {2, 3}, message="release 1 retired")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    releases = {body.split(" ")[1] for body in result.bodies}
    assert releases == {"2"}, result.bodies  # never release 1 again, nor 3
    outcomes = [r["outcome"] for r in app.json("releases", "echo")]
    assert outcomes == ["superseded", "promoted", "progressing"], outcomes


def test_blue_green_promote_then_roll_back(app: MsoApp) -> None:
    from tests.e2e.harness import free_port
    preview = free_port()
    write(app, BLUE_GREEN, preview=preview)
    app.up()
    write(app, BLUE_GREEN, version="v2", preview=preview)
    app.cli("deploy")
    wait_for(lambda: status(app)["phase"] == "Paused", timeout=60, message="preview ready")
    assert app.get("/", port=preview)[1].split(" ")[1] == "2"
    assert app.get("/")[1].split(" ")[1] == "1"
    with Load(app.gateway_port, rate=100) as load:
        app.cli("rollout", "promote", "echo")
        wait_for(lambda: app.get("/")[1].split(" ")[1] == "2", message="traffic switched")
        app.cli("rollout", "abort", "echo")
        wait_for(lambda: app.get("/")[1].split(" ")[1] == "1", message="switched back")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    assert status(app)["phase"] == "RolledBack"
    wait_for(lambda: versions(app) == {1} and app.all_ready(3), message="green removed")
