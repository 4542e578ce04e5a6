"""``ReplicaSupervisor``: one asyncio task that keeps one replica process alive.

It spawns (or adopts) the process, runs startup/readiness/liveness probes with Kubernetes
semantics, restarts it with backoff according to the restart policy, and stops it in the
explicit drain order: mark not ready → ``drain()`` → stop signal to the process group →
grace → SIGKILL (group, cgroup and ``MSO_REPLICA`` sweep). Every state change goes through
``_change_state`` which checks the edge and calls ``on_transition``; the lead persists
pid/start time from that callback before anything else relies on the process.

Cancelling the supervisor (``detach()``) never touches the process: replicas outlive the
daemon and are re-adopted with ``adopt(ref)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Awaitable, Callable

from mso.engines.local import container as containers
from mso.engines.local import process as proc
from mso.engines.local.backoff import Backoff, Clock
from mso.engines.local.cgroups import Cgroup, CgroupManager
from mso.engines.local.probes import (ProbeResult, ProbeSpec, ProbeTracker, probe_pause,
                                     resolve_port, run_probe)
from mso.engines.local.process import ProcessRef, SpawnError
from mso.engines.local.replica import LogSink, ReplicaSpec, after_exit, describe_exit
from mso.engines.local.states import (
    ALLOWED, STOPPABLE_STATES, TERMINAL_STATES, ReplicaState, check_transition,
)
from mso.engines.problems import (CRASH_LOOP_EXITS, READY_ALLOWANCE, Problem,
                                  not_listening_message)

S = ReplicaState
log = logging.getLogger(__name__)
#: How long a container's published port must keep a probe's connection open (Docker's
#: proxy accepts it even while nothing listens inside, then closes it at once).
CONTAINER_SETTLE = 0.2

OnTransition = Callable[[str, ReplicaState, ReplicaState, str, "ProcessRef | None"], None]
OnReady = Callable[[str, bool], None]
Drain = Callable[[str], Awaitable[None]]


def _noop_transition(rid: str, old: ReplicaState, new: ReplicaState, reason: str,
                     ref: ProcessRef | None) -> None:
    pass


def _noop_ready(rid: str, ready: bool) -> None:
    pass


class ReplicaSupervisor:
    """Supervises one replica; see the module docstring."""

    def __init__(
        self,
        spec: ReplicaSpec,
        *,
        on_transition: OnTransition = _noop_transition,
        on_ready: OnReady = _noop_ready,
        drain: Drain | None = None,
        clock: Clock = time.monotonic,
        cgroups: CgroupManager | None = None,
        logs: LogSink | None = None,
        drain_timeout: float = 60.0,
        port_poll: float = 0.1,
        ready_allowance: float = READY_ALLOWANCE,
    ) -> None:
        self.spec = spec
        self.state = S.PENDING
        self.ref: ProcessRef | None = None
        self.restarts = 0
        self.last_reason = ""
        self.probe_failures = 0  # failed probe checks of any kind (a Prometheus counter)
        self.cgroup: Cgroup | None = None
        self._on_transition = on_transition
        self._on_ready = on_ready
        self._drain = drain
        self._clock = clock
        self._cgroups = cgroups
        self._logs = logs
        self._drain_timeout = drain_timeout
        self._port_poll = port_poll
        self._backoff = Backoff(*spec.backoff, clock=clock)
        self._task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._exit: asyncio.Future[int | None] | None = None
        self._kill_reason: str | None = None
        self._stopping = False
        self._stop_task: asyncio.Task[None] | None = None
        self._terminal = asyncio.Event()
        self._ready_allowance = ready_allowance
        #: Exits since the replica was last READY (a crash loop at CRASH_LOOP_EXITS).
        self.exits_in_a_row = 0
        self._last_exit = ""
        #: Why the last spawn failed (command not found...), until a spawn succeeds.
        self._spawn_error: str | None = None
        #: When the replica last entered RUNNING without being READY (clock()).
        self._unready_since: float | None = None
        self._readiness_failing = False
        #: The port nothing listens on, once the start-up allowance is over.
        self._silent_port: int | None = None

    # -- public API ---------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the process and supervise it."""
        self._begin(None)

    def adopt(self, ref: ProcessRef) -> None:
        """Supervise an already running process (re-adoption after a daemon restart)."""
        self._begin(ref)

    async def stop(self, reason: str = "stop requested") -> None:
        """Drain, signal, wait the grace period, kill; idempotent and safe to call twice."""
        if self._stop_task is None:
            if self.state in TERMINAL_STATES:
                return
            self._stop_task = asyncio.ensure_future(self._stop(reason))
        await asyncio.shield(self._stop_task)

    async def wait_stopped(self) -> None:
        """Return once the replica reached a terminal state (STOPPED, EXITED, FAILED)."""
        await self._terminal.wait()

    async def detach(self) -> None:
        """Stop supervising but leave the process running (daemon shutdown)."""
        for task in (self._probe_task, self._task):
            if task is not None:
                task.cancel()
        for task in (self._probe_task, self._task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def problem(self) -> Problem | None:
        """What keeps this replica from serving, once it is clear that it will not fix
        itself by waiting (mso.engines.problems has the thresholds); None otherwise."""
        state = self.state
        if state == S.FAILED:
            return Problem("failed", self.last_reason)
        if state in (S.STOPPING, S.STOPPED, S.EXITED, S.READY):
            return None
        if self._spawn_error is not None:
            return Problem("start_failed", self._spawn_error)
        if self.exits_in_a_row >= CRASH_LOOP_EXITS:
            return Problem("crash_loop", f"exited {self.exits_in_a_row} times in a row "
                           f"without becoming ready; last: {self._last_exit}")
        if state != S.RUNNING or self._unready_since is None \
                or self._clock() - self._unready_since < self._ready_allowance:
            return None
        if self._silent_port is not None:
            return Problem("not_listening", not_listening_message(self._silent_port))
        if self._readiness_failing:
            return Problem("not_ready", self.last_reason)
        return None

    # -- state --------------------------------------------------------------------------

    def _change_state(self, new: ReplicaState, reason: str) -> None:
        old = self.state
        check_transition(old, new)
        self.state = new
        self.last_reason = reason
        if new == S.READY:
            self.exits_in_a_row = 0
            self._unready_since = None
            self._readiness_failing = False
            self._silent_port = None
        elif new == S.RUNNING and old != S.RUNNING:
            self._unready_since = self._clock()
        log.info("replica %s: %s -> %s (%s)", self.spec.id, old.value, new.value, reason)
        self._call(self._on_transition, self.spec.id, old, new, reason, self.ref)
        if new == S.READY:
            self._call(self._on_ready, self.spec.id, True)
        elif old == S.READY:
            self._call(self._on_ready, self.spec.id, False)
        if new in TERMINAL_STATES:
            self._terminal.set()

    @staticmethod
    def _call(fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # a broken callback must not kill supervision
            log.exception("replica callback %r failed", fn)

    # -- main loop ----------------------------------------------------------------------

    def _begin(self, adopted: ProcessRef | None) -> None:
        if self._task is not None:
            raise RuntimeError(f"replica {self.spec.id} is already supervised")
        self._task = asyncio.ensure_future(self._run(adopted))

    async def _run(self, adopted: ProcessRef | None) -> None:
        try:
            while not self._stopping:
                status = await self._one_life(adopted)
                adopted = None
                if self._stopping:
                    return
                reason = describe_exit(status)
                if self._kill_reason:
                    reason = f"{self._kill_reason}; {reason}"
                self.exits_in_a_row += 1
                self._last_exit = reason
                self._unready_since = None
                self._readiness_failing = False
                self._silent_port = None
                nxt = after_exit(self.spec.restart, status)
                if nxt != S.BACKOFF:
                    self._change_state(nxt, reason)
                    return
                delay = self._backoff.next_delay()
                self._change_state(S.BACKOFF, f"{reason}; restarting in {delay:g}s")
                await asyncio.sleep(delay)
                self.restarts += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # last resort: report instead of dying silently
            log.exception("supervisor of %s crashed", self.spec.id)
            if not self._stopping and S.FAILED in ALLOWED[self.state]:
                self._change_state(S.FAILED, f"supervisor error: {exc!r}")

    async def _one_life(self, adopted: ProcessRef | None) -> int | None:
        """Spawn or adopt one process, supervise it until it exits; return its status."""
        self._kill_reason = None
        if adopted is not None:
            ref = self._adopt(adopted)
            if ref is None:
                return None  # gone while nobody watched: status unknown
        else:
            ref = self._spawn()
            if ref is None:
                return 127  # like a shell's "command not found"
        loop = asyncio.get_running_loop()
        self._exit = loop.create_future()
        waiter = asyncio.ensure_future(proc.wait_exit(ref))
        self._probe_task = asyncio.ensure_future(self._probe(ref, skip_startup=adopted is not None))
        try:
            status = await asyncio.shield(waiter)
        except asyncio.CancelledError:
            waiter.cancel()
            self._probe_task.cancel()
            raise
        if not self._exit.done():
            self._exit.set_result(status)  # first: a pending stop() waits on this
        self._probe_task.cancel()
        # Bounded: the probe loops also end by themselves once _exit is done.
        await asyncio.wait({self._probe_task}, timeout=5.0)
        self._cleanup_leftovers(ref)
        await self._remove_container()
        self._logs_exited()
        return status

    def _logs_exited(self) -> None:
        """Collect the last output; a disk that refuses it must not fail the replica."""
        if self._logs is not None:
            try:
                self._logs.process_exited(self.spec.id)
            except OSError as exc:
                log.warning("last output of %s not collected: %s", self.spec.id, exc)

    def release_logs(self) -> None:
        """The replica is gone for good (stopped, not restarted): its output is
        collected one last time and no longer tailed."""
        if self._logs is not None:
            try:
                self._logs.detach(self.spec.id)
            except OSError as exc:
                log.warning("last output of %s not collected: %s", self.spec.id, exc)

    def _spawn(self) -> ProcessRef | None:
        spec = self.spec
        if self._cgroups is not None and self.cgroup is None:
            self.cgroup = self._cgroups.create(spec.id, spec.cpu, spec.memory)
        if self._logs is not None:
            self._logs.attach(spec.id, spec.service, spec.release, spec.stdout_path,
                              spec.stderr_path)
        if proc.ENV_SWEEPER.pending:
            proc.ENV_SWEEPER.flush()  # never sweep the process about to start
        try:
            ref = proc.spawn(spec.argv, env=spec.process_env(), cwd=spec.cwd,
                             stdout_path=spec.stdout_path, stderr_path=spec.stderr_path,
                             cgroup=self.cgroup, shell=spec.shell, run_as=spec.run_as)
        except SpawnError as exc:
            self.ref = None
            self._spawn_error = self._spawn_message(exc)
            self._kill_reason = self._spawn_error
            self._log_spawn_error(self._spawn_error)
            return None
        self._spawn_error = None
        self.ref = ref
        self._backoff.record_start()
        self._change_state(S.STARTING, f"spawned pid {ref.pid}" + (
            f" (restart {self.restarts})" if self.restarts else ""))
        return ref

    def _spawn_message(self, exc: SpawnError) -> str:
        program = self.spec.argv[0] if self.spec.argv else "?"
        why = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
        if self.spec.shell:
            return f"cannot start the shell for {program!r}: {why}"
        who = f" as user {self.spec.run_as.name}" if self.spec.run_as is not None else ""
        return f"cannot start {program!r}{who} (cwd {self.spec.cwd}): {why}"

    def _log_spawn_error(self, message: str) -> None:
        """Put a spawn failure where the replica's own output goes, so `mso logs` shows
        it like any error the program would have printed itself."""
        try:
            with open(self.spec.stderr_path, "ab") as f:
                f.write(f"mso: {message}\n".encode())
        except OSError:
            log.warning("cannot write the spawn error of %s to its log", self.spec.id)

    def _adopt(self, ref: ProcessRef) -> ProcessRef | None:
        if not proc.is_alive(ref):
            self._kill_reason = f"adopted pid {ref.pid} is gone"
            return None
        if self._cgroups is not None:
            self.cgroup = self._cgroups.get(self.spec.id)
        if self._logs is not None:
            s = self.spec
            self._logs.attach(s.id, s.service, s.release, s.stdout_path, s.stderr_path)
        self.ref = ref
        self._backoff.record_start()
        self._change_state(S.RUNNING, f"adopted pid {ref.pid}")
        return ref

    def _cleanup_leftovers(self, ref: ProcessRef) -> None:
        """Kill what the exited process left behind (its group, cgroup, env matches)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(ref.pid, signal.SIGKILL)  # group outlives its leader
        if self.cgroup is not None:
            self.cgroup.kill_all(signal.SIGKILL)
        # Processes that left the group (setsid, double fork) are found by environment;
        # batched with the other replicas' sweeps (and run before this replica respawns).
        proc.ENV_SWEEPER.request(self.spec.sweep_match())

    async def _remove_container(self) -> None:
        """A container outlives its client's SIGKILL: remove it (by its unique name), so
        the next start cannot meet it and a stop leaves nothing running."""
        if self.spec.container is not None:
            await containers.remove(self.spec.container, self.spec.runtime)

    # -- probes -------------------------------------------------------------------------

    async def _probe(self, ref: ProcessRef, skip_startup: bool) -> None:
        try:
            await self._probe_phases(ref, skip_startup)
        except asyncio.CancelledError:
            raise
        except Exception:  # probing stops, supervision (exit handling, stop) goes on
            log.exception("probing of %s crashed", self.spec.id)

    async def _probe_phases(self, ref: ProcessRef, skip_startup: bool) -> None:
        spec = self.spec
        if spec.startup is not None and not skip_startup:
            if not await self._startup(ref, spec.startup):
                return
        if self.state == S.STARTING:
            self._change_state(S.RUNNING, "startup probe passed" if spec.startup
                               else "started (no startup probe)")
        tasks = []
        if spec.liveness is not None:
            tasks.append(self._liveness(ref, spec.liveness))
        tasks.append(self._readiness(spec.readiness))
        await asyncio.gather(*tasks)

    async def _check(self, spec: ProbeSpec) -> ProbeResult:
        s = self.spec
        try:
            # Only an exec probe has a process to give the environment to: building it
            # copies the whole environment, per probe (100 replicas: 100 copies a second).
            env = s.process_env() if spec.kind == "exec" else {}
            result = await run_probe(spec, s.host, s.ports, env, s.cwd)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = ProbeResult(False, f"probe error: {exc!r}")
        if not result.ok:
            self.probe_failures += 1
        return result

    def _probing(self) -> bool:
        """Probe loops end on their own when the process exited or a stop began.

        Cancelling the probe task is not enough on Python 3.11: a cancellation that
        lands just as a timed-out operation finishes can be swallowed (CPython
        gh-86296), and a probe loop that kept running would hold up the stop.
        """
        return not self._stopping and self._exit is not None and not self._exit.done()

    async def _startup(self, ref: ProcessRef, spec: ProbeSpec) -> bool:
        tracker = ProbeTracker.for_spec("startup", spec)
        await asyncio.sleep(spec.initial_delay)
        while self._probing():
            tracker.feed(await self._check(spec))
            if tracker.passing:
                return True
            if tracker.exhausted:
                self._kill(ref, f"startup probe failed {tracker.consecutive_failures} times: "
                                f"{tracker.last_detail}")
                return False
            await probe_pause(spec.period)
        return False

    async def _liveness(self, ref: ProcessRef, spec: ProbeSpec) -> None:
        tracker = ProbeTracker.for_spec("liveness", spec)
        await asyncio.sleep(spec.initial_delay)
        while self._probing():
            tracker.feed(await self._check(spec))
            if tracker.exhausted:
                self._kill(ref, f"liveness probe failed {tracker.consecutive_failures} times: "
                                f"{tracker.last_detail}")
                return
            await probe_pause(spec.period)

    async def _readiness(self, spec: ProbeSpec | None) -> None:
        if spec is None:
            await self._wait_port_open()
            if self.state == S.RUNNING and not self._stopping:
                self._change_state(S.READY, "running (no readiness probe)")
            return
        tracker = ProbeTracker.for_spec("readiness", spec)
        reported = ""
        await asyncio.sleep(spec.initial_delay)
        while self._probing():
            result = await self._check(spec)
            changed = tracker.feed(result)
            if not self._stopping and self.state == S.RUNNING:
                self._readiness_failing = not tracker.passing and tracker.exhausted
                self._note_silence(spec, result)
            if self._stopping:
                pass
            elif changed and tracker.passing and self.state == S.RUNNING:
                self._change_state(S.READY, "readiness probe passed")
            elif (changed and not tracker.passing and self.state == S.READY) or (
                    self.state == S.RUNNING and tracker.exhausted
                    and (tracker.consecutive_failures == tracker.failure_threshold
                         or tracker.last_detail != reported)) \
                    and self._silent_port is None:
                # The second case: never ready yet. `mso ps` and the events then say
                # why (once per failing streak, and again when the probe's answer
                # changes: "connection refused" becomes "returned 500" once the server
                # listens) instead of "started" for ever.
                reported = tracker.last_detail
                self._change_state(S.RUNNING, f"readiness probe failed "
                                   f"{tracker.consecutive_failures} times: "
                                   f"{tracker.last_detail}")
            await probe_pause(spec.period)

    async def _wait_port_open(self) -> None:
        if not self.spec.ports:
            return
        tcp = ProbeSpec("tcp", next(iter(self.spec.ports)), timeout=1.0,
                        settle=CONTAINER_SETTLE if self.spec.container else 0.0)
        while self._probing():
            result = await self._check(tcp)
            if result.ok:
                return
            self._note_silence(tcp, result)
            await asyncio.sleep(self._port_poll)

    def _note_silence(self, spec: ProbeSpec, result: ProbeResult) -> None:
        """A port that still refuses connections after the start-up allowance: name it
        (once: a RUNNING -> RUNNING transition) instead of leaving "started" for ever."""
        if result.ok or spec.kind == "exec" or self.state != S.RUNNING \
                or self._unready_since is None \
                or self._clock() - self._unready_since < self._ready_allowance:
            return
        if result.detail != "connection refused":
            self._silent_port = None
            return
        port = resolve_port(spec, self.spec.ports)
        if port is None or port == self._silent_port:
            return
        self._silent_port = port
        self._change_state(S.RUNNING, not_listening_message(port))

    def _kill(self, ref: ProcessRef, reason: str) -> None:
        """Probe-triggered restart: stop signal now, SIGKILL after the grace period."""
        if self._stopping or self._kill_reason is not None:
            return
        self._kill_reason = reason
        log.warning("replica %s: %s; killing", self.spec.id, reason)
        proc.signal_group(ref, self.spec.stop_signal)
        loop = asyncio.get_running_loop()
        loop.call_later(self.spec.stop_grace, proc.signal_group, ref, signal.SIGKILL)

    # -- stop ---------------------------------------------------------------------------

    async def _stop(self, reason: str) -> None:
        if self.state not in STOPPABLE_STATES:
            await self.wait_stopped()
            return
        self._stopping = True
        if self._probe_task is not None:
            self._probe_task.cancel()
        self._change_state(S.STOPPING, reason)  # leaving READY sends on_ready(False)
        ref, exit_future = self.ref, self._exit
        running = ref is not None and exit_future is not None and not exit_future.done()
        if running and ref is not None and (self._task is None or self._task.done()):
            # Detached: nobody else watches the process any more.
            exit_future = asyncio.ensure_future(proc.wait_exit(ref))
        if running and exit_future is not None:
            # A process that is gone has no request left to finish: no drain then, and
            # a drain ends the moment the process exits.
            await self._run_drain(exit_future)
            running = not exit_future.done()
        if running and ref is not None and exit_future is not None:
            await self._terminate(ref, exit_future)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if running and ref is not None:
            # Only right after our own exit: a long-dead leader's pid may be reused.
            self._cleanup_leftovers(ref)
            await self._remove_container()
            self._logs_exited()
        if self.cgroup is not None:
            await self._remove_cgroup(self.cgroup)
        self._change_state(S.STOPPED, reason)

    @staticmethod
    async def _remove_cgroup(group: Cgroup, attempts: int = 50) -> None:
        # Killed members leave the cgroup asynchronously; rmdir fails until they have.
        for _ in range(attempts):
            if group.remove():
                return
            group.kill_all(signal.SIGKILL)
            await asyncio.sleep(0.02)
        log.warning("cgroup %s not removed (still busy); CgroupManager.cleanup() will", group.name)

    async def _run_drain(self, exit_future: asyncio.Future[int | None]) -> None:
        if self._drain is None:
            return
        drain = asyncio.ensure_future(
            asyncio.wait_for(self._drain(self.spec.id), self._drain_timeout))
        try:
            waiters: set[asyncio.Future[object]] = {drain, exit_future}  # type: ignore[arg-type]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            drain.cancel()
            raise
        if not drain.done():
            log.info("replica %s exited while draining; drain ended", self.spec.id)
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await drain
            return
        exc = drain.exception() if not drain.cancelled() else None
        if exc is not None:
            log.error("drain of %s failed; stopping anyway", self.spec.id, exc_info=exc)

    async def _terminate(self, ref: ProcessRef, exit_future: asyncio.Future[int | None]) -> None:
        proc.signal_group(ref, self.spec.stop_signal)
        try:
            await asyncio.wait_for(asyncio.shield(exit_future), self.spec.stop_grace)
            return
        except (asyncio.TimeoutError, TimeoutError):
            log.warning("replica %s ignored signal %d for %gs; SIGKILL", self.spec.id,
                        self.spec.stop_signal, self.spec.stop_grace)
        proc.signal_group(ref, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all(signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(exit_future), 30.0)
