"""Tests for the benchmark's own logic: run with `.venv/bin/pytest bench/local`.

They cover the pure parts (configs, section replacement, event pairing) and the poller and
/proc sampling against real sockets and processes; the benchmark itself is run by run.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import Handler  # noqa: E402
from common import answers_200, cpu_seconds, rss_kib, wait_all_200  # noqa: E402
from killtest import samples_from_events  # noqa: E402
from msoapp import manifest_text, ready_bounds, ready_span  # noqa: E402
from peers import procfile_text, program_names, supervisord_conf  # noqa: E402
from report import SECTION, replace_section  # noqa: E402


@pytest.fixture
def server() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_section_is_appended_when_missing() -> None:
    out = replace_section("# Benchmarks\n\n## Proxy (issue 3)\n\nx\n", SECTION + "\n\nnew\n")
    assert out == "# Benchmarks\n\n## Proxy (issue 3)\n\nx\n\n" + SECTION + "\n\nnew\n"


def test_only_our_section_is_replaced_and_neighbours_survive() -> None:
    text = f"# B\n\n## A\n\na\n\n{SECTION}\n\nold\n\n### sub\n\nold too\n\n## C\n\nc\n"
    out = replace_section(text, f"{SECTION}\n\nnew\n")
    assert out == f"# B\n\n## A\n\na\n\n{SECTION}\n\nnew\n\n## C\n\nc\n"
    assert "old" not in out


def test_peer_configs_name_every_port_once() -> None:
    ports = [20001, 20002, 20003, 20004]
    assert program_names(ports, 2) == ["s01r1", "s01r2", "s02r1", "s02r2"]
    procfile = procfile_text(ports, 2, python="py")
    assert procfile.splitlines()[2].startswith("s02r1: PORT=20003 exec py ")
    conf = supervisord_conf(ports, 2, Path("/tmp/x"), python="py")
    assert conf.count("[program:") == 4 and 'environment=PORT="20004"' in conf


def test_manifest_is_valid_for_mso(tmp_path: Path) -> None:
    from mso.spec import load_manifest
    path = tmp_path / "mso.yaml"
    path.write_text(manifest_text(app="bench-t", services=3, replicas=5, period="200ms",
                                  gateway_port=20999, backoff="{initial: 100ms}"))
    loaded = load_manifest(path)
    services = loaded.manifest.services
    assert sorted(services) == ["s01", "s02", "s03"]
    assert all(s.replicas == 5 for s in services.values())


def test_kill_samples_pair_backoff_and_the_next_ready() -> None:
    def ev(ts: float, replica: str, frm: str, to: str) -> dict[str, object]:
        return {"ts": ts, "type": "replica.state", "replica": replica,
                "data": {"from": frm, "to": to}}
    events = [ev(5.0, "a-1", "RUNNING", "READY"),      # before the kill: ignored
              ev(10.004, "a-2", "READY", "BACKOFF"),  # another replica: ignored
              ev(10.005, "a-1", "READY", "BACKOFF"),
              ev(10.2, "a-1", "BACKOFF", "STARTING"),
              ev(10.3, "a-1", "RUNNING", "READY")]
    [sample] = samples_from_events(events, [("a-1", 10.0)])
    assert sample.removed_event == pytest.approx(0.005)
    assert sample.replaced_ready == pytest.approx(0.3)
    assert sample.proxy_table != sample.proxy_table  # no watcher: nan


def test_ready_span_runs_to_the_last_first_ready() -> None:
    events = [{"ts": 1.0, "type": "daemon.started", "replica": None, "data": {}},
              {"ts": 2.0, "type": "replica.state", "replica": "x-1", "data": {"to": "READY"}},
              {"ts": 3.5, "type": "replica.state", "replica": "x-2", "data": {"to": "READY"}},
              {"ts": 9.0, "type": "replica.state", "replica": "x-1", "data": {"to": "READY"}}]
    assert ready_span(events) == pytest.approx(2.5)
    assert ready_bounds(events) == (1.0, 3.5)


def test_poller_sees_a_live_server_and_times_out_on_a_dead_port(server: int) -> None:
    assert answers_200(server)
    import time
    assert wait_all_200([server], time.monotonic(), timeout=20) < 20
    from common import free_ports
    [dead] = free_ports(1)
    ticks = iter(range(100))
    with pytest.raises(TimeoutError):
        wait_all_200([server, dead], 0.0, timeout=3, clock=lambda: float(next(ticks)))


def test_proc_sampling_sees_cpu_burnt_by_a_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\ninput()"],
                             stdin=subprocess.PIPE)
    try:
        import time
        deadline = time.monotonic() + 30
        while cpu_seconds(child.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpu_seconds(child.pid) >= 0.25
        assert rss_kib(child.pid) > 1000
    finally:
        child.kill()
        child.wait()
    assert rss_kib(os.getpid()) > 0
