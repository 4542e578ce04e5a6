"""Tests for the rollout benchmark's own logic: run with `.venv/bin/pytest bench/rollouts`.

The pure parts (body parsing, trial figures, the judge floor, rendering, section
replacement) and the load generator against a real local HTTP server; the benchmark
itself is run by run.py.
"""

from __future__ import annotations

import math
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import clears_margin, judge_floor, peer_estimates  # noqa: E402
from driver import manifest  # noqa: E402
from loadgen import Load, Sample, parse_body  # noqa: E402
from measure import canary_trial, rolling_update, spread  # noqa: E402
from rollout_report import SECTION, Floor, Results, render, replace_section  # noqa: E402


def test_parse_body_reads_replica_and_release_from_ok_and_error_answers() -> None:
    assert parse_body(200, "echo-c1 7 bad1") == ("echo-c1", 7)
    assert parse_body(500, "error from echo-c1") == ("echo-c1", None)
    assert parse_body(502, "bad gateway") == ("", None)


def _events() -> list[dict[str, object]]:
    return [
        {"type": "rollout.started", "ts": 99.0, "message": "canary rollout 1 -> 2", "data": {}},
        {"type": "rollout.progressing", "ts": 100.0, "message": "step 1: weight set to 10%",
         "data": {}},
        {"type": "analysis.fail", "ts": 112.0, "message": "x",
         "data": {"canary": {"requests": 240}}},
        {"type": "rollout.rolledback", "ts": 112.5, "message": "RolledBack: analysis failed",
         "data": {}},
    ]


def test_canary_trial_attributes_errors_to_canary_replicas_by_name() -> None:
    samples = [Sample(100.0, 200, "echo-1", 1), Sample(101.0, 200, "echo-c1", 2),
               Sample(105.0, 500, "echo-c1", None, "HTTP 500"), Sample(106.0, 200, "echo-2", 1),
               Sample(111.0, 500, "echo-c1", None, "HTTP 500"), Sample(113.0, 200, "echo-1", 1)]
    trial = canary_trial(samples, _events(), release=2)
    assert (trial.first_canary, trial.last_canary) == (101.0, 111.0)
    assert trial.client_seconds == 10.0
    assert trial.event_seconds == 12.5
    assert (trial.failed, trial.total, trial.canary_answers) == (2, 6, 3)
    assert trial.judge_canary_requests == 240
    assert trial.canary_share == pytest.approx(3 / 4)


def test_canary_trial_without_canary_answers_or_rollback_is_nan_not_a_crash() -> None:
    trial = canary_trial([Sample(1.0, 200, "echo-1", 1)], [], release=2)
    assert math.isnan(trial.client_seconds) and math.isnan(trial.event_seconds)
    assert math.isnan(trial.rate)


def test_spread_ignores_missing_values() -> None:
    sp = spread([3.0, float("nan"), 1.0, 2.0])
    assert (sp.median, sp.max, sp.values) == (2.0, 3.0, (3.0, 1.0, 2.0))
    assert math.isnan(spread([]).median)


def test_judge_floor_grows_with_the_margin_and_is_the_first_clearing_count() -> None:
    loose = judge_floor(0.05, 0.1, 0.99, 0.005)
    strict = judge_floor(0.05, 0.1, 0.99, 0.01)
    assert loose is not None and strict is not None and loose < strict
    assert clears_margin(strict, 0.05, 0.1, 0.99, 0.01)
    assert not clears_margin(strict - 5, 0.05, 0.1, 0.99, 0.01)
    # A canary as bad as the margin itself can never clear it.
    assert judge_floor(0.01, 0.1, 0.99, 0.01, limit=2000) is None


def test_manifest_is_valid_for_mso(tmp_path: Path) -> None:
    from mso.spec import load_manifest
    path = tmp_path / "mso.yaml"
    path.write_text(manifest(gateway_port=18080, rollout="strategy: rolling",
                             greeting="v1", error_rate=0.05))
    load_manifest(path)


def _results(failed: int, seconds: float) -> Results:
    samples = [Sample(100.0, 200, "echo-c1", 2), Sample(100.0 + seconds, 500, "echo-c1", None)]
    samples += [Sample(101.0, 500, "x", None)] * (failed - 1)
    trial = canary_trial(samples, _events(), release=2)
    return Results(canary=[trial], rolling=[rolling_update([Sample(1.0, 200, "a", 1)], 3.0)],
                   rolling_rate=300.0, healthy=[70.0], peers=peer_estimates(),
                   floors=[Floor(0.99, 0.01, 310)], command="cmd", minutes=1.0, machine="m")


def test_render_reports_a_missed_goal_honestly() -> None:
    text = render(_results(failed=25, seconds=21.0))
    assert text.startswith(SECTION)
    assert "**NOT met** — worst run 21.0 s and 25 failed requests" in text
    assert "failed/total requests: **0/1** (goal 0: **met**)" in text
    assert "| 0.99 | 0.01 | 310 | 15.5 s | 16 |" in text


def test_render_says_met_when_both_goals_hold() -> None:
    assert "**met** — worst run 4.0 s" in render(_results(failed=3, seconds=4.0))


def test_replace_section_keeps_the_other_sections() -> None:
    doc = "# Benchmarks\n\n## Canary analysis statistics (issue 4)\n\nstats\n"
    once = replace_section(doc, f"{SECTION}\n\nold\n")
    assert once.startswith(doc.rstrip("\n")) and once.endswith("old\n")
    middle = once + "\n## Later\n\nlater\n"
    twice = replace_section(middle, f"{SECTION}\n\nnew\n")
    assert "old" not in twice and "new" in twice
    assert "stats" in twice and twice.endswith("## Later\n\nlater\n")


class _Flaky(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0

    def do_GET(self) -> None:
        type(self).count += 1
        status, body = (500, b"error from s-2") if self.count % 4 == 0 else (200, b"s-1 3 hi")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def test_load_records_every_answer_and_counts_5xx_as_failures(server: int) -> None:
    with Load(server, rate=200, threads=2) as load:
        deadline = threading.Event()
        while load.count() < 40 and not deadline.wait(0.05):
            pass
    samples = load.stop()
    assert len(samples) >= 40
    bad = [s for s in samples if not s.ok]
    assert bad and all(s.status == 500 and s.replica == "s-2" for s in bad)
    assert {s.release for s in samples if s.ok} == {3}


def test_load_counts_connection_errors_as_failures() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # bound but never listening: connections are refused
        with Load(port, rate=100, threads=1) as load:
            while load.count() < 5:
                threading.Event().wait(0.02)
    samples = load.stop()
    assert samples and all(x.status == 0 and "Error" in x.error for x in samples)


def test_a_promoted_bad_canary_misses_the_goal_and_has_no_rollback_time() -> None:
    samples = [Sample(100.0, 200, "echo-c1", 2), Sample(103.0, 500, "echo-c1", None)]
    promoted = canary_trial(samples, _events()[:2], release=2, outcome="Promoted")
    res = _results(failed=2, seconds=3.0)
    text = render(Results(**{**res.__dict__, "canary": [res.canary[0], promoted]}))
    assert "| outcome | RolledBack, Promoted | | |" in text
    assert "**NOT met**" in text and "1 of 2 bad canaries were not rolled back" in text
    assert "| 3.0 s, n/a | 3.0 s | 3.0 s |" in text
