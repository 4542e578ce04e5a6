"""`mso logs` and `mso events`, one-shot and followed, through the real CLI.

The shared app's ticker service logs whatever a test drops into its control folder, so a
test can make a new, unique line appear after a follower started.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from typing import Any

import pytest

from tests.cli.conftest import clean_env, mso_argv, say
from tests.cli.lines import StreamingCli
from tests.e2e.harness import MsoApp, wait_for

pytestmark = pytest.mark.e2e

RECORD_FIELDS = {"ts", "service", "replica", "stream", "line"}


def records(app: MsoApp, *args: str) -> list[dict[str, Any]]:
    data = json.loads(app.cli("logs", *args, "-o", "json").stdout)
    assert isinstance(data, list)
    return data


def said(app: MsoApp) -> str:
    """Make the ticker log a unique line and wait until `mso logs` shows it."""
    marker = f"marker-{uuid.uuid4().hex[:10]}"
    say(app, marker)
    wait_for(lambda: marker in app.cli("logs", "ticker").stdout, message=marker)
    return marker


def test_logs_of_one_service_only(running: MsoApp) -> None:
    lines = running.cli("logs", "echo").stdout.splitlines()
    assert any("echo-1 listening on" in line for line in lines), lines
    assert any("echo-2 listening on" in line for line in lines), lines
    assert not any("db-1" in line for line in lines)
    everything = running.cli("logs").stdout
    assert "db-1 listening on" in everything and "echo-1 listening on" in everything


def test_logs_json_and_ndjson_carry_the_same_records(running: MsoApp) -> None:
    said(running)
    as_json = records(running, "ticker")
    assert as_json and all(RECORD_FIELDS <= set(r) for r in as_json)
    assert {r["service"] for r in as_json} == {"ticker"}
    ndjson = running.cli("logs", "ticker", "-o", "ndjson").stdout.splitlines()
    assert [json.loads(line) for line in ndjson] == as_json


def test_logs_tail_keeps_the_newest_lines(running: MsoApp) -> None:
    said(running)
    newest = said(running)
    everything = records(running, "ticker")
    assert len(everything) >= 2
    last = records(running, "ticker", "--tail", "1")
    assert len(last) == 1 and last[0]["line"] == newest
    assert records(running, "ticker", "--tail", "2") == everything[-2:]


def test_logs_since_filters_by_age(running: MsoApp) -> None:
    recent = records(running, "db", "--since", "1h")
    assert any("db-1 listening on" in r["line"] for r in recent)
    assert recent == records(running, "db")
    # db logged only at start-up, which is longer ago than a millisecond.
    assert records(running, "db", "--since", "1ms") == []
    bad = running.cli("logs", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_logs_follow_streams_a_line_written_after_it_started(running: MsoApp) -> None:
    before = said(running)
    follower = StreamingCli(running.folder, "logs", "-f", "ticker", "--tail", "1",
                            "-o", "ndjson")
    try:
        # Seeing the backlog line proves the follower is connected before the new line.
        follower.wait_line(lambda line: before in line)
        after = f"after-{uuid.uuid4().hex[:10]}"
        say(running, after)
        record = json.loads(follower.wait_line(lambda line: after in line))
        assert record["service"] == "ticker" and record["line"] == after
        assert follower.proc.poll() is None  # still following
    finally:
        follower.stop()


def test_logs_follow_in_table_format(running: MsoApp) -> None:
    before = said(running)
    follower = StreamingCli(running.folder, "logs", "-f", "ticker", "--tail", "1")
    try:
        follower.wait_line(lambda line: before in line)
        after = f"table-{uuid.uuid4().hex[:10]}"
        say(running, after)
        line = follower.wait_line(lambda line: after in line)
        assert "ticker-1" in line
    finally:
        follower.stop()


def test_events_follow_streams_a_new_event(running: MsoApp) -> None:
    follower = StreamingCli(running.folder, "events", "-f", "--tail", "1", "-o", "ndjson")
    try:
        first = json.loads(follower.wait_line(lambda line: line.startswith("{")))
        running.cli("run", "db", "--", "true")
        line = follower.wait_line(lambda line: '"run.finished"' in line)
        event = json.loads(line)
        assert event["id"] > first["id"] and event["service"] == "db"
        assert follower.proc.poll() is None
    finally:
        follower.stop()


def test_ctrl_c_ends_a_follower_quietly_with_130(running: MsoApp) -> None:
    follower = StreamingCli(running.folder, "events", "-f", "--tail", "1")
    try:
        follower.wait_line(lambda line: bool(line.strip()))
        follower.proc.send_signal(signal.SIGINT)
        code, _, err = follower.finish()
    finally:
        follower.stop()
    assert code == 130
    assert err.strip() == "", err  # ending a follow is not an error: no message


@pytest.mark.parametrize("command", [["logs", "-f", "ticker", "--tail", "1"],
                                     ["events", "-f", "--tail", "1"]])
def test_a_follower_ends_when_the_reader_of_its_pipe_goes_away(
        running: MsoApp, command: list[str]) -> None:
    """`mso logs -f | head -1` ends with head, not at the next line (none comes here)."""
    said(running)
    follower = subprocess.Popen(mso_argv(*command), cwd=running.folder, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline()  # following now
        follower.stdout.close()  # what `head -1` does after its line
        code = follower.wait(timeout=30)
        assert code == 0, follower.stderr.read() if follower.stderr else code
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
