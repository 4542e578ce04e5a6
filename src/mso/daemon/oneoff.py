"""`mso run SERVICE -- CMD`: a one-off process with the service's environment.

For a container service (`image:`/`build:` without `run:`) the command runs in a new
container of the release's image (`docker run --rm`, its mounts and environment), as
`docker compose run` does; the container is removed when it ends or is killed.

The daemon starts it (so secrets never travel through the API to the CLI) and streams its
output back line by line, ending with its exit code. Output is redacted like logs are.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mso.daemon import containers
from mso.daemon.replica_env import remove_secret_files
from mso.engines.local import container as container_cli
from mso.engines.local.users import UserUnavailable
from mso.engines.local.process import SpawnError, signal_group, spawn, wait_exit
from mso.store.records import ReplicaRecord

if TYPE_CHECKING:
    from mso.daemon.core import Daemon


_reaping: set[asyncio.Future[Any]] = set()  # waiters of killed one-offs, kept referenced


async def run_oneoff(daemon: Daemon, service: str,
                     argv: list[str]) -> AsyncIterator[dict[str, Any]]:
    want = daemon.store.desired()[service]
    release = daemon.store.release(service, want.release)
    assert release is not None
    run_id = f"{service}-run-{uuid.uuid4().hex[:6]}"
    env, secrets = daemon.oneoff_environment(service, want.release, run_id, release.spec)
    out = daemon.paths.run_dir / f"{run_id}.out"
    redact = [v for v in secrets.values() if v]
    container: tuple[str, str] | None = None  # name, CLI
    if containers.is_container(release.spec["model"]):
        record = ReplicaRecord(id=run_id, service=service, ordinal=0, release=want.release,
                               subset="run", state="RUNNING", pid=None, start_time=None,
                               ports={}, spec_hash=release.spec_hash)
        cspec, inside, binary = daemon.book.container_launch(
            record, release.spec, secrets, Path(env["MSO_SECRETS"]),
            Path(env["MSO_CONFIG_DIR"]), Path(env["MSO_DATA_DIR"]), ports={})
        argv = [*container_cli.run_argv(cspec, binary), *argv]
        env = {**daemon.book.base_env, **inside}
        container = (cspec.name, binary)
    try:
        who = None if container is not None else \
            daemon.book.run_as(service, release.spec["model"].get("user"))
        ref = spawn(argv, env=env, cwd=release.spec["cwd"], stdout_path=out, stderr_path=out,
                    run_as=who)
    except (SpawnError, UserUnavailable) as exc:
        remove_secret_files(daemon.paths, run_id)
        yield {"stream": "stderr", "line": f"mso: {exc}"}
        yield {"exit_code": 127}
        return
    daemon.store.add_event("run.started", f"one-off: {argv[0]}" if container is None else
                           f"one-off container {container[0]}", service, run_id)
    exit_task = asyncio.ensure_future(wait_exit(ref))
    try:
        async for line in _tail(out, exit_task):
            for value in redact:
                line = line.replace(value, "***")
            yield {"stream": "stdout", "line": line}
        status = exit_task.result()
    finally:
        if not exit_task.done():
            # The client went away (Ctrl-C): kill the command, and let the waiter run on
            # so the daemon reaps it (cancelled, it left a zombie until `mso down`).
            signal_group(ref, 9)
            _reaping.add(exit_task)
            exit_task.add_done_callback(_reaping.discard)
            if container is not None:  # the client's SIGKILL leaves the container running
                removal = asyncio.ensure_future(container_cli.remove(*container))
                _reaping.add(removal)
                removal.add_done_callback(_reaping.discard)
        remove_secret_files(daemon.paths, run_id)
        out.unlink(missing_ok=True)
    code = 128 - status if status is not None and status < 0 else (status or 0)
    daemon.store.add_event("run.finished", f"one-off exited with {code}", service, run_id)
    yield {"exit_code": code}


async def _tail(path: Path, done: asyncio.Future[Any]) -> AsyncIterator[str]:
    pending = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
                continue
            if done.done():
                if pending:
                    yield pending.decode("utf-8", "replace")
                return
            await asyncio.sleep(0.05)
