"""One-off admin tasks (`jobs:`), such as migrations, run before the services they gate.

A job runs once per release: its outcome is recorded against its spec hash, so a daemon
restart does not re-run a migration that already succeeded, and a changed job runs again.
A job interrupted by a daemon crash is killed and run again from the start.

A job with `image:`/`build:` and no `run:` runs as a container of its image (its own
command: the image's CMD), exactly as `mso run` runs a one-off of a container service
(mso.daemon.oneoff): `docker run --rm` in the foreground is the job's process, so the
timeout, the exit code and the logs go through the process path, and a killed client's
container is removed by name (and by label after a daemon crash). Its outcome is recorded
against the spec hash *and* the image: a rebuilt image is new code, so it runs again.
"""

from __future__ import annotations

import asyncio
import os
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mso.daemon import containers
from mso.daemon.replica_env import remove_secret_files
from mso.engines.local import container as container_cli
from mso.engines.local.process import (ProcessRef, SpawnError, kill_env_processes, signal_group,
                                       spawn, wait_exit)
from mso.engines.local.replica import describe_exit
from mso.store.records import Desired, Release, ReplicaRecord

if TYPE_CHECKING:
    from mso.daemon.core import Daemon

log = logging.getLogger("mso.daemon.jobs")


class JobRunner:
    """Runs the app's jobs and answers whether they completed."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._refs: dict[str, ProcessRef] = {}
        self._containers: dict[str, tuple[str, str]] = {}  # job -> container name, CLI

    def _key(self, name: str, release: Release) -> str:
        """What a job's outcome is recorded against: its spec hash, and for a container
        job also the image of its release (a rebuilt image runs the job again)."""
        image = containers.image_of(self.daemon.store, name, release.number)
        return release.spec_hash if image is None else f"{release.spec_hash}@{image}"

    # -- queries ------------------------------------------------------------------------
    def is_job(self, name: str) -> bool:
        want = self.daemon.store.desired().get(name)
        return want is not None and want.kind == "job"

    def _state(self, name: str) -> str | None:
        want = self.daemon.store.desired().get(name)
        if want is None:
            return None
        release = self.daemon.store.release(name, want.release)
        if release is None:
            return None
        found = self.daemon.store.job_state(name, self._key(name, release))
        return None if found is None else found[0]

    def succeeded(self, name: str) -> bool:
        return self._state(name) == "succeeded"

    def started(self, name: str) -> bool:
        return self._state(name) in ("running", "succeeded", "failed")

    def jobs_before(self, service: str) -> list[str]:
        names = []
        for name, want in self.daemon.store.desired().items():
            if want.kind != "job":
                continue
            release = self.daemon.store.release(name, want.release)
            if release and service in (release.spec["model"].get("before") or []):
                names.append(name)
        return names

    def summary(self) -> dict[str, str]:
        return {name: self._state(name) or "pending"
                for name, want in self.daemon.store.desired().items() if want.kind == "job"}

    # -- actions ------------------------------------------------------------------------
    def recover(self) -> None:
        """Jobs that were running when the daemon died are killed and will run again."""
        store = self.daemon.store
        for name, want in store.desired().items():
            if want.kind != "job":
                continue
            release = store.release(name, want.release)
            if release is None:
                continue
            key = self._key(name, release)
            found = store.job_state(name, key)
            if found is not None and found[0] == "running":
                # (a container job's container goes with the daemon's sweep by label)
                kill_env_processes({"MSO_INSTANCE": self.daemon.instance_id,
                                    "MSO_REPLICA": f"{name}-job"})
                store.set_job_state(name, key, "interrupted")

    def retry_failed(self) -> None:
        """A new `up`/`deploy` gives failed jobs another run."""
        store = self.daemon.store
        for name, want in store.desired().items():
            release = store.release(name, want.release) if want.kind == "job" else None
            if release is None:
                continue
            key = self._key(name, release)
            found = store.job_state(name, key)
            if found is not None and found[0] == "failed":
                store.set_job_state(name, key, "retry")

    def reconcile(self, jobs: dict[str, Desired]) -> None:
        for name, want in jobs.items():
            if name in self._tasks and not self._tasks[name].done():
                continue
            release = self.daemon.store.release(name, want.release)
            if release is None:
                continue
            key = self._key(name, release)
            found = self.daemon.store.job_state(name, key)
            if not self.daemon.dependencies_met(name, want.release):
                continue
            if found is None or found[0] in ("interrupted", "running", "retry"):
                self._tasks[name] = asyncio.get_running_loop().create_task(
                    self._run(name, want.release, key, release))

    async def _run(self, name: str, number: int, spec_hash: str,
                   release: Release) -> None:
        d = self.daemon
        store = d.store
        spec = release.spec
        run_id = f"{name}-job"
        store.set_job_state(name, spec_hash, "running")
        store.add_event("job.started", f"job started (release {number})", name, run_id)
        env, secrets = d.oneoff_environment(name, number, run_id, spec)
        d.log_store.redact([v for v in secrets.values() if v])
        model = spec["model"]
        out = d.paths.run_dir / f"{run_id}.stdout.log"
        err = d.paths.run_dir / f"{run_id}.stderr.log"
        argv = model.get("run")
        if containers.is_container(model):
            argv, env = self._container(name, run_id, release, env, secrets)
        d.collector.attach(run_id, name, number, out, err)
        try:
            ref = spawn(argv, env=env, cwd=spec["cwd"], stdout_path=out, stderr_path=err,
                        shell=bool(model.get("shell")))
        except SpawnError as exc:
            why = f"cannot start {argv[0] if isinstance(argv, list) else argv!r} " \
                  f"(cwd {spec['cwd']}): {(os.strerror(exc.errno) if exc.errno else str(exc)).lower()}"
            with open(err, "ab") as f:  # where the job's own errors go: `mso logs` shows it
                f.write(f"mso: {why}\n".encode())
            d.collector.detach(run_id)
            remove_secret_files(d.paths, run_id)
            self._finish(name, spec_hash, None, why)
            return
        self._refs[name] = ref
        timeout = float(model.get("timeout") or 300.0)
        status: int | None = None
        try:
            status = await asyncio.wait_for(wait_exit(ref), timeout)
            reason = describe_exit(status)
        except asyncio.TimeoutError:
            signal_group(ref, signal.SIGKILL)
            status, reason = None, f"timed out after {timeout:g}s"
        finally:
            d.collector.detach(run_id)
            self._refs.pop(name, None)
            remove_secret_files(d.paths, run_id)
            container = self._containers.pop(name, None)
            if container is not None and status is None:  # killed: its container runs on
                await container_cli.remove(*container)
        self._finish(name, spec_hash, status, reason)

    def _container(self, name: str, run_id: str, release: Release, env: dict[str, str],
                   secrets: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """The job's container: the client's argv and environment (values by name)."""
        d = self.daemon
        record = ReplicaRecord(id=run_id, service=name, ordinal=0, release=release.number,
                               subset="job", state="RUNNING", pid=None, start_time=None,
                               ports={}, spec_hash=release.spec_hash)
        stop = release.spec["model"].get("stop") or {}
        cspec, inside, binary = d.book.container_launch(
            record, release.spec, secrets, d.paths.secrets_dir / run_id,
            Path(env["MSO_CONFIG_DIR"]), Path(env["MSO_DATA_DIR"]), ports={},
            stop_grace=float(stop.get("grace", 10.0)))
        self._containers[name] = (cspec.name, binary)
        return container_cli.run_argv(cspec, binary), {**d.book.base_env, **inside,
                                                       "MSO_INSTANCE": env["MSO_INSTANCE"],
                                                       "MSO_REPLICA": run_id}

    def _finish(self, name: str, spec_hash: str, status: int | None, reason: str) -> None:
        store = self.daemon.store
        ok = status == 0
        store.set_job_state(name, spec_hash, "succeeded" if ok else "failed", status)
        store.add_event("job.succeeded" if ok else "job.failed", reason, name, f"{name}-job",
                        {"exit_code": status})
        self.daemon.wake()

    async def stop_all(self) -> None:
        for ref in list(self._refs.values()):
            signal_group(ref, signal.SIGKILL)
        for container in list(self._containers.values()):
            await container_cli.remove(*container)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
