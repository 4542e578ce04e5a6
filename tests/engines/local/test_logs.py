"""LogCollector: tailing raw output into structured records."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from mso.engines.local.logs import MAX_LINE, LogCollector, LogStore
from mso.engines.local.replica import ReplicaSpec
from mso.engines.local.states import ReplicaState as S
from mso.engines.local.supervisor import ReplicaSupervisor

from .conftest import until


def setup(tmp_path: Path, truncate_after: int = 8 * 1024 * 1024
          ) -> tuple[LogCollector, LogStore, Path, Path]:
    store = LogStore(tmp_path / "store")
    col = LogCollector(store, truncate_after=truncate_after)
    out, err = tmp_path / "r.out", tmp_path / "r.err"
    col.attach("web-1", "web", 3, out, err)
    return col, store, out, err


def write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, data)
    os.close(fd)


def lines(store: LogStore) -> list[tuple[str, str]]:
    return [(r["stream"], r["line"]) for r in store.read("web")]


def test_complete_lines_become_records_partial_waits(tmp_path: Path) -> None:
    col, store, out, err = setup(tmp_path)
    write(out, b"one\ntw")
    write(err, b"oops\r\n")
    assert col.poll_once() == 2
    assert lines(store) == [("stdout", "one"), ("stderr", "oops")]
    write(out, b"o\n")
    col.poll_once()
    assert lines(store)[-1] == ("stdout", "two")
    rec = store.read("web")[0]
    assert (rec["replica"], rec["release"]) == ("web-1", 3)


def test_partial_last_line_flushed_on_process_exit(tmp_path: Path) -> None:
    col, store, out, _ = setup(tmp_path)
    write(out, b"no newline")
    col.poll_once()
    assert lines(store) == []
    col.process_exited("web-1")
    assert lines(store) == [("stdout", "no newline")]


def test_long_lines_are_split_at_16k(tmp_path: Path) -> None:
    col, store, out, _ = setup(tmp_path)
    write(out, b"a" * (MAX_LINE * 2 + 10) + b"\nshort\n")
    col.poll_once()
    got = [line for _, line in lines(store)]
    assert [len(x) for x in got] == [MAX_LINE, MAX_LINE, 10, 5]


def test_secret_straddling_the_split_point_is_redacted(tmp_path: Path) -> None:
    col, store, out, _ = setup(tmp_path)
    store.redact(["TOPSECRET"])
    write(out, b"a" * (MAX_LINE - 4))
    col.poll_once()
    write(out, b"TOPSECRET" + b"b" * MAX_LINE + b"\n")
    col.poll_once()
    joined = "".join(line for _, line in lines(store))
    assert "TOPSECRET" not in joined and "***" in joined
    raw = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*.jsonl"))
    assert b"SECRET" not in raw and b"TOPSEC" not in raw


def test_raw_file_truncated_after_limit_and_tailing_continues(tmp_path: Path) -> None:
    col, store, out, _ = setup(tmp_path, truncate_after=1000)
    for i in range(50):
        write(out, f"line {i:03d} {'x' * 30}\n".encode())
        col.poll_once()
    assert out.stat().st_size < 1000 + 50
    assert [line[:8] for _, line in lines(store)] == [f"line {i:03d}" for i in range(50)]


def test_offsets_survive_a_collector_restart(tmp_path: Path) -> None:
    col, store, out, _ = setup(tmp_path)
    write(out, b"first\nhalf")
    col.poll_once()
    col2 = LogCollector(store)  # a restarted daemon
    col2.attach("web-1", "web", 3, out, tmp_path / "r.err")
    write(out, b"-done\n")
    col2.poll_once()
    assert lines(store) == [("stdout", "first"), ("stdout", "half-done")]


@pytest.mark.anyio
async def test_replica_output_captured_with_secrets_redacted(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store")
    store.redact(["pa55word"])
    col = LogCollector(store, poll_interval=0.02)
    runner = asyncio.ensure_future(col.run())
    script = tmp_path / "app.py"
    script.write_text("import os, sys\nprint('db password is', os.environ['DB_PASSWORD'])\n"
                      "print('warn', file=sys.stderr)\nsys.stdout.write('tail-no-newline')\n")
    spec = ReplicaSpec(id="job-1", service="job", release=7,
                       argv=[sys.executable, str(script)],
                       env={"PATH": os.environ["PATH"], "DB_PASSWORD": "pa55word"},
                       cwd=str(tmp_path), log_dir=tmp_path / "raw", restart="never")
    sup = ReplicaSupervisor(spec, logs=col)
    sup.start()
    try:
        await asyncio.wait_for(sup.wait_stopped(), 30)
        assert sup.state == S.EXITED
        await until(lambda: len(store.read("job")) == 3, what="3 records")
    finally:
        runner.cancel()
    got = sorted((r["stream"], r["line"]) for r in store.read("job"))
    assert got == [("stderr", "warn"), ("stdout", "db password is ***"),
                   ("stdout", "tail-no-newline")]
    assert all(r["release"] == 7 and r["replica"] == "job-1" for r in store.read("job"))
    raw = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*.jsonl"))
    assert b"pa55word" not in raw


def test_quiet_replicas_are_polled_less_often_and_unchanged_files_not_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 idle replicas must not cost 20,000 open/read/close a second: a quiet
    replica's files are looked at with a doubling interval up to max_idle_interval, a
    file whose size did not change is only stat()ed, and new output resets the pace."""
    now = [100.0]
    store = LogStore(tmp_path / "store")
    col = LogCollector(store, poll_interval=0.1, max_idle_interval=1.0,
                       monotonic=lambda: now[0])
    out, err = tmp_path / "r.out", tmp_path / "r.err"
    write(out, b"hello\n")
    write(err, b"")
    col.attach("web-1", "web", 1, out, err)
    opens: list[str] = []
    real_open = os.open

    def counting_open(path: object, *args: object) -> int:
        opens.append(str(path))
        return real_open(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    polls = []
    for _ in range(40):  # 4 s of 100 ms ticks with nothing new after the first line
        before = len(opens)
        col.poll_due()
        polls.append(len(opens) - before)
        now[0] += 0.1
    assert lines(store) == [("stdout", "hello")]
    assert sum(polls[1:]) == 0  # unchanged files: stat only, never opened
    # Looked at on ticks 0, 1, 3, 7, 15 (doubling), then once a second: 8 looks, not 40.
    assert col._sources["web-1"].quiet_polls >= 4
    looks = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: looks.append(p) or real_stat(p, *a, **k))
    for _ in range(20):  # 2 s more: at most 2 looks (2 files each)
        col.poll_due()
        now[0] += 0.1
    assert len(looks) <= 2 * 2
    write(out, b"again\n")
    now[0] += 1.0  # the next look is at most max_idle_interval away
    col.poll_due()
    assert lines(store)[-1] == ("stdout", "again")
    assert col._sources["web-1"].quiet_polls == 0  # writing again: polled at full pace


def test_detach_collects_the_rest_removes_raw_files_and_stops_polling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica gone for good is no longer tailed (scaling 100 down to 10 kept 100
    replicas' files polled for ever), and a later replica of the same name starts afresh:
    no line is lost and none is read twice."""
    col, store, out, err = setup(tmp_path)
    write(out, b"one\nlast words, no newline")
    col.poll_once()
    col.detach("web-1")
    assert lines(store) == [("stdout", "one"), ("stdout", "last words, no newline")]
    assert not out.exists() and not err.exists()
    looks: list[object] = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: looks.append(p) or real_stat(p, *a, **k))
    col.poll_once()
    assert looks == [] and col._sources == {}
    col.detach("web-1")  # twice (or never attached): nothing to do
    monkeypatch.undo()
    col.attach("web-1", "web", 4, out, err)  # the same name again, new files
    write(out, b"fresh\n")
    col.poll_once()
    assert lines(store)[-1] == ("stdout", "fresh")
    assert [line for _, line in lines(store)].count("one") == 1
    restarted = LogCollector(store)  # offsets saved without the detached files
    restarted.attach("web-1", "web", 4, out, err)
    restarted.poll_once()
    assert [line for _, line in lines(store)].count("fresh") == 1
