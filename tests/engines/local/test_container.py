"""The container replica adapter (mso.engines.local.container) behind its narrow interface:
the command lines it builds, and its removals and sweeps against a fake container CLI
that records what it is asked (no dockerd needed; tests/e2e/test_containers.py runs the
real one)."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path

import pytest

from mso.engines.local import container as c
from mso.engines.local.replica import ReplicaSpec
from mso.engines.local.states import ReplicaState as S
from mso.engines.local.supervisor import ReplicaSupervisor

from .conftest import until

SPEC = c.ContainerSpec(
    name="mso-abc-web-1", image="mso/shop-web:0123", publish={20001: 8000},
    labels={"io.mso.replica": "web-1", "io.mso.app": "shop"},
    env_names=("PORT", "API_KEY"), mounts=(c.Mount("/s/web-1", c.SECRETS_DIR),
                                           c.Mount("/d", c.DATA_DIR, read_only=False)),
    stop_signal=signal.SIGINT, stop_grace=7.4, cpu=0.5, memory=128 * 1024 * 1024)

#: A fake container CLI: records its arguments, answers `ps` from $FAKE_PS, and for `run`
#: behaves like an attached client (prints, waits for a signal, exits with its status).
FAKE = r'''#!{python}
import os, signal, sys, time
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
cmd = sys.argv[1]
if cmd == "ps":
    print(os.environ.get("FAKE_PS", ""), end="")
elif cmd == "rm" and os.environ.get("FAKE_GONE"):
    print("Error: No such container: x", file=sys.stderr)
    sys.exit(1)
elif cmd == "run":
    print("container started", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    while True:
        time.sleep(1)
'''


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    binary = tmp_path / "docker"
    binary.write_text(FAKE.replace("{python}", sys.executable))
    binary.chmod(0o755)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return str(binary), log


def test_run_argv_carries_names_never_values() -> None:
    argv = c.run_argv(SPEC, "docker")
    assert argv[:5] == ["docker", "run", "--rm", "--name", "mso-abc-web-1"]
    assert argv[-1] == "mso/shop-web:0123"  # no command: the image's own
    text = " ".join(argv)
    assert "--stop-signal SIGINT --stop-timeout 7" in text
    assert "--publish 127.0.0.1:20001:8000" in text
    assert "--env PORT --env API_KEY" in text and "=" not in text.split("--env", 1)[1].split(
        "--volume")[0]
    assert "--volume /s/web-1:/run/secrets:ro" in text
    assert "--volume /d:/var/lib/mso/data " in text
    assert "--cpus 0.5 --memory 134217728" in text
    assert "--label io.mso.app=shop --label io.mso.replica=web-1" in text
    assert "--user" not in argv
    assert "--user 999:998" in " ".join(c.run_argv(dataclasses.replace(SPEC, user="999:998")))


def test_exec_probe_runs_inside_the_container() -> None:
    assert c.exec_argv("mso-abc-web-1", ["pg_isready"], "podman") == [
        "podman", "exec", "mso-abc-web-1", "pg_isready"]


def test_names_are_unique_per_instance_and_replica_and_valid() -> None:
    assert c.container_name("abc", "web-canary-1") == "mso-abc-web-canary-1"
    assert c.container_name("a/b", "x y") == "mso-a-b-x-y"


def test_runtime_prefers_docker_then_podman(tmp_path: Path) -> None:
    for name in ("podman", "docker"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
        assert Path(c.runtime(str(tmp_path))).name == name
    with pytest.raises(c.RuntimeMissing, match="neither docker nor podman"):
        c.runtime(str(tmp_path / "empty"))


@pytest.mark.anyio
async def test_remove_forces_and_treats_a_gone_container_as_removed(
        fake: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    binary, log = fake
    assert await c.remove("mso-abc-web-1", binary)
    monkeypatch.setenv("FAKE_GONE", "1")
    assert await c.remove("mso-abc-web-2", binary)
    assert log.read_text().splitlines() == ["rm --force --volumes mso-abc-web-1",
                                            "rm --force --volumes mso-abc-web-2"]


def test_sweep_removes_by_label_what_is_not_kept(fake: tuple[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    binary, log = fake
    monkeypatch.setenv("FAKE_PS", "mso-i-web-1\tweb-1\nmso-i-web-9\tweb-9\nmso-i-db-1\tdb-1\n")
    removed = c.remove_labelled({"io.mso.instance": "i"}, {"web-1"}, binary)
    assert removed == ["mso-i-db-1", "mso-i-web-9"]
    calls = log.read_text().splitlines()
    assert "--filter label=io.mso.instance=i" in calls[0]
    assert calls[1] == "rm --force --volumes mso-i-db-1 mso-i-web-9"


@pytest.mark.anyio
async def test_supervisor_removes_the_container_after_a_stop(
        fake: tuple[str, Path], tmp_path: Path) -> None:
    """The replica's process is the container's client: the supervisor signals it like
    any process, then removes the container by name (a client killed by SIGKILL would
    leave it running)."""
    binary, log = fake
    spec = ReplicaSpec(id="web-1", service="web", release=1,
                       argv=c.run_argv(SPEC, binary), env={"FAKE_LOG": str(log)},
                       cwd=str(tmp_path), log_dir=tmp_path, stop_grace=5.0,
                       container=SPEC.name, runtime=binary)
    sup = ReplicaSupervisor(spec)
    sup.start()
    await until(lambda: sup.state == S.READY, what="READY (no ports, no probe)")
    await until(lambda: "container started" in spec.stdout_path.read_text(errors="replace"),
                what="the client's output in the replica's log")
    await sup.stop()
    assert sup.state == S.STOPPED
    calls = log.read_text().splitlines()
    assert calls[0].startswith("run --rm --name mso-abc-web-1")
    assert calls[-1] == "rm --force --volumes mso-abc-web-1"


@pytest.mark.anyio
async def test_tcp_probe_with_settle_sees_through_dockers_proxy() -> None:
    """Docker's proxy accepts a published port's connection even when nothing listens in
    the container, then closes it: with `settle` that is a failure, not "accepted"."""
    import asyncio

    from mso.engines.local.probes import ProbeSpec, run_probe

    async def closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def stays(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the probe hangs up
        writer.close()

    for handler, ok in ((closes, False), (stays, True)):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            plain = await run_probe(ProbeSpec("tcp", "p"), "127.0.0.1", {"p": port}, {}, ".")
            settled = await run_probe(ProbeSpec("tcp", "p", settle=0.1), "127.0.0.1",
                                      {"p": port}, {}, ".")
        assert plain.ok  # accepted is all a plain tcp probe asks
        assert settled.ok is ok, settled
        if not ok:
            assert "closed at once" in settled.detail
