"""`mso run SERVICE -- CMD` through the real CLI against a running app.

The one-off process gets the service's environment (its name, its dependencies' stable
addresses, its secret files), its output is streamed while it runs, and its exit code
becomes the CLI's.
"""

from __future__ import annotations

import pytest

from tests.cli.conftest import SECRET
from tests.cli.lines import StreamingCli
from tests.e2e.harness import MsoApp

pytestmark = pytest.mark.e2e


def test_run_gets_the_service_environment_and_its_exit_code(running: MsoApp) -> None:
    script = ('echo "service=$MSO_SERVICE app=$MSO_APP db=$DB_URL greeting=$GREETING"; '
              'test -f "$MSO_SECRETS/token" && echo "secret-file=yes"; '
              'cat "$MSO_SECRETS/token"; echo; exit 3')
    proc = running.cli("run", "echo", "--", "sh", "-c", script, check=False)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    db = running.json("endpoints")["services"]["db"]["address"]
    lines = proc.stdout.splitlines()
    assert f"service=echo app=clitest db=http://{db} greeting=hi" in lines
    assert "secret-file=yes" in lines
    # The secret is readable by the process, but its value is redacted on the way out.
    assert SECRET not in proc.stdout and "***" in lines


def test_run_passes_options_after_the_double_dash_to_the_command(running: MsoApp) -> None:
    proc = running.cli("run", "echo", "--", "sh", "-c", 'echo "$@"', "sh", "-o", "json",
                       "--tail", check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["-o json --tail"]


@pytest.mark.parametrize("script,code", [("exit 0", 0), ("exit 1", 1), ("exit 42", 42),
                                         ("kill -9 $$", 137)])
def test_run_propagates_the_exit_code(running: MsoApp, script: str, code: int) -> None:
    assert running.cli("run", "db", "--", "sh", "-c", script, check=False).returncode == code


def test_run_of_a_missing_program_fails_with_127(running: MsoApp) -> None:
    proc = running.cli("run", "db", "--", "no-such-program-xyz", check=False)
    assert proc.returncode == 127
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "no-such-program-xyz" in proc.stdout + proc.stderr


def test_run_streams_output_while_the_command_still_runs(running: MsoApp) -> None:
    gate = running.folder / "control" / "run-gate"
    script = (f'echo first; while [ ! -e "{gate}" ]; do sleep 0.05; done; '
              'echo second; exit 5')
    cli = StreamingCli(running.folder, "run", "echo", "--", "sh", "-c", script)
    try:
        cli.wait_line(lambda line: line == "first")
        # Streamed, not buffered until the end: the command is still blocked on the gate.
        assert cli.proc.poll() is None
        gate.touch()
        code, lines, err = cli.finish()
    finally:
        cli.stop()
        gate.unlink(missing_ok=True)
    assert code == 5, err
    assert lines == ["first", "second"]


def test_ctrl_c_on_run_stops_the_one_off_command(running: MsoApp) -> None:
    import os
    import signal

    from tests.e2e.harness import wait_for

    pidfile = running.folder / "control" / "oneoff.pid"
    pidfile.unlink(missing_ok=True)
    cli = StreamingCli(running.folder, "run", "echo", "--", "sh", "-c",
                       f'echo $$ > "{pidfile}"; echo started; exec sleep 600')
    try:
        cli.wait_line(lambda line: line == "started")
        pid = int(pidfile.read_text())
        cli.proc.send_signal(signal.SIGINT)
        cli.finish()
    finally:
        cli.stop()

    def gone() -> bool:  # killed and reaped: not even a zombie is left
        return not os.path.exists(f"/proc/{pid}")

    wait_for(gone, timeout=20, message=f"one-off pid {pid} stopped after Ctrl-C")
    secrets = running.folder / ".mso" / "secrets"
    assert not [p for p in secrets.glob("echo-run-*")], "the one-off's secret files are left"
