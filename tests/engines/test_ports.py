"""`port_holder`: who listens on a port, named for an error message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mso.ports import port_holder


def test_nothing_listening_is_none() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: nobody holds it for a server
        port = s.getsockname()[1]
        assert port_holder(port) is None


def test_names_this_process_and_its_command_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        holder = port_holder(s.getsockname()[1])
    assert holder is not None and holder.startswith(f"pid {os.getpid()} (")
    assert "pytest" in holder or "python" in holder


def test_names_another_process_on_ipv6_too() -> None:
    code = ("import socket,sys,time; s=socket.socket(socket.AF_INET6); s.bind(('::1',0)); "
            "s.listen(); print(s.getsockname()[1], flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, "--marker"], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        holder = port_holder(port)
        assert holder is not None and holder.startswith(f"pid {child.pid} (")
        assert "-c import socket" in holder  # the command line, cut at 160 characters
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 5
    while port_holder(port) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert port_holder(port) is None


def _fake_proc(root: Path, inode: str, pids: dict[str, bytes]) -> None:
    (root / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    listen = f"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0 100 0 0 10 0\n"
    other = "   1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 20 4 30 10 -1\n"
    (root / "net" / "tcp").write_text(header + listen + other)
    (root / "net" / "tcp6").write_text(header)
    for pid, cmdline in pids.items():
        fd = root / pid / "fd"
        fd.mkdir(parents=True)
        (root / pid / "cmdline").write_bytes(cmdline)
        os.symlink(f"socket:[{inode}]", fd / "3")
        os.symlink("/dev/null", fd / "0")


def test_reads_the_listener_and_its_holders_from_proc(tmp_path: Path) -> None:
    _fake_proc(tmp_path, "4242", {"300": b"gunicorn: worker\0", "12": b"gunicorn\0-b\0:8080\0"})
    assert port_holder(8080, tmp_path) == "pid 12 (gunicorn -b :8080) and 1 more"
    assert port_holder(8081, tmp_path) is None  # an established connection, not a listener


def test_a_listener_nobody_visible_holds_is_said_so(tmp_path: Path) -> None:
    _fake_proc(tmp_path, "4242", {})
    holder = port_holder(8080, tmp_path)
    assert holder is not None and "cannot see" in holder
