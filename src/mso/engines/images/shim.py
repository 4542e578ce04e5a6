"""The in-container entrypoint of images mso generates: PID 1 and replica supervisor.

mso copies this file into its base image as /opt/mso/shim.py, beside the two modules of
the local engine it shares (mso/engines/local/probes.py and backoff.py, standard library
only, under /opt/mso/mso/...). It is PID 1 of every Swarm task and Kubernetes pod of a
`run:` service and does there what the local engine's supervisor does around a replica:

- `run [flags] -- ARGV...`: start ARGV (in its own process group) and supervise it:
  - `--probe ROLE=JSON` (startup, readiness, liveness; see `probe_args`): run the probes
    with the local engine's code and semantics (period, timeout, initial_delay,
    thresholds; the startup probe holds the other two). A failed liveness or startup
    probe kills the process (stop signal, SIGKILL after the grace), which counts as an
    exit. Readiness is kept in the status file (`--status`, see `Status`) that the
    engine's own check reads (`probe status FILE`).
  - `--restart always|on-failure|never` and `--backoff INITIAL,MAX,RESET_AFTER`: after an
    exit, start ARGV again in the same container with mso's backoff (the delay doubles
    from INITIAL up to MAX and resets after a run of RESET_AFTER), or exit with its code.
    Without `--restart` the shim exits with the process (`never`).
  - `--stop-signal SIG --stop-grace SECONDS`: SIGTERM (what Docker and the kubelet send)
    or SIG stops the replica: SIG goes to the process group, SIGKILL after the grace.
    Other signals (SIGINT, SIGQUIT, SIGHUP) are passed on as they are.
  - `--ports 8000,8001 [--forward no]`: apps written for the local engine bind
    127.0.0.1:$PORT, which other containers cannot reach, so once the app listens there
    the shim forwards the container's own (non-loopback) addresses on the same port to
    it (an app that binds 0.0.0.0 owns those addresses already; the shim then does
    nothing). The first port is what "ready" waits for without a readiness probe.
    `--forward no`: a sidecar does the forwarding (Kubernetes).
  - `--secret-env VAR=name`: secrets with `as_env` are read from their files here, so
    their values never appear in the Swarm service spec.
  Each restart and probe failure is one `mso: ...` line on stderr (`mso logs` shows it).
- `probe status FILE`: the engines' check. Exit 0 once the replica has been ready in
  this container (Swarm then counts the task as running, and never replaces it for a
  failed check: restarting is the shim's job; the kubelet's startupProbe passes), and
  print `ready` or `not ready: why` (`not ready: crash loop: ...` after CRASH_LOOP_EXITS
  exits without becoming ready), which the engines read: the Swarm controller to take
  the task out of the gateway's rotation, both to report a crash loop.
- `probe http PORT PATH TIMEOUT` / `probe tcp PORT TIMEOUT`: a one-shot check that
  needs no curl in the image; exit 0 when healthy.
"""

from __future__ import annotations

import sys

STATUS_FILE = "/tmp/mso-shim.status"


def read_status(path: str) -> dict[str, str] | None:
    """The status file's `key=value` lines (see `Status`); None when there is none yet.
    Plain lines, not JSON: a check reads it every period, and `json` imports `re`."""
    try:
        with open(path, encoding="utf-8") as f:
            return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    except OSError:
        return None


def probe_status(path: str) -> int:
    """`probe status FILE` (see the module docstring): read the shim's status."""
    data = read_status(path)
    if data is None:
        print("not ready: the replica's supervisor has written no status yet")
        return 1
    print("ready" if data.get("ready") == "1" else f"not ready: {data.get('detail')}")
    return 0 if data.get("ever_ready") == "1" else 1


# The engines' checks (`probe status`, every period in every container) stop
# here, before the imports that the supervisor needs and a check does not (asyncio alone
# is 60 ms of CPU each time).
if __name__ == "__main__" and sys.argv[1:3] == ["probe", "status"]:
    sys.exit(probe_status(sys.argv[3] if len(sys.argv) > 3 else STATUS_FILE))

import asyncio  # noqa: E402
import json  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from mso.engines.local.probes import ProbeResult, ProbeSpec

SECRETS_DIR = "/run/secrets"


def local_addresses() -> list[str]:
    """The container's IPv4 addresses other than loopback (from /proc, no ioctls)."""
    found: list[str] = []
    try:
        with open("/proc/net/fib_trie", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for i, line in enumerate(lines):
        if "/32 host LOCAL" in line and i > 0:
            addr = lines[i - 1].split()[-1]
            if not addr.startswith("127.") and addr not in found:
                found.append(addr)
    return found


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


def _forwarder(port: int) -> object:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    return handle


async def _forward(ports: list[int], stop: threading.Event) -> None:
    pending = list(ports)
    servers = []
    while pending and not stop.is_set():
        for port in list(pending):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pass
            except OSError:
                continue  # not listening yet
            pending.remove(port)
            for addr in local_addresses():
                try:
                    servers.append(await asyncio.start_server(
                        _forwarder(port), addr, port, reuse_address=True))  # type: ignore[arg-type]
                except OSError:
                    pass  # the app bound 0.0.0.0: it is reachable already
        await asyncio.sleep(0.1)
    while not stop.is_set():
        await asyncio.sleep(0.5)


def _secret_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        var, _, name = pair.partition("=")
        try:
            with open(os.path.join(SECRETS_DIR, name), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        env[var] = text[:-1] if text.endswith("\n") else text
    return env


#: Exits in a row without becoming ready in between that make a crash loop (as
#: mso.engines.problems.CRASH_LOOP_EXITS; the status then starts with CRASH_LOOP).
CRASH_LOOP_EXITS = 3
CRASH_LOOP = "crash loop: "
ROLES = ("startup", "readiness", "liveness")
POLICIES = ("always", "on-failure", "never")


def probe_args(spec: dict[str, Any], port: int | None) -> str:
    """The JSON of one `--probe ROLE=JSON` flag: a dumped probe model (see
    mso.engines.local.model_map) with its port resolved to a number."""
    if spec.get("http") is not None:
        kind, target = "http", spec["http"]
    elif spec.get("tcp") is not None:
        kind, target = "tcp", str(port)
    else:
        kind, target = "exec", [str(a) for a in spec["exec"]]
    return json.dumps({"kind": kind, "target": target, "port": port,
                       "period": float(spec["period"]), "timeout": float(spec["timeout"]),
                       "failure_threshold": int(spec["failure_threshold"]),
                       "success_threshold": int(spec["success_threshold"]),
                       "initial_delay": float(spec.get("initial_delay") or 0.0)},
                      separators=(",", ":"))


def _signal_number(name: str) -> int:
    upper = name.strip().upper()
    return int(getattr(signal, upper if upper.startswith("SIG") else "SIG" + upper))


@dataclass
class Options:
    """What `run` was asked to do (from its flags)."""

    argv: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    forward: bool = True
    secret_pairs: list[str] = field(default_factory=list)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    restart: str = "never"
    backoff: tuple[float, float, float] = (0.5, 30.0, 60.0)
    stop_signal: int = signal.SIGTERM
    stop_grace: float = 10.0
    status: str = STATUS_FILE


class ShimFlagError(Exception):
    """A flag `run` does not understand (the engine rendered something this shim
    predates)."""


def parse_run(args: list[str]) -> Options:
    opts = Options()
    while args and args[0] != "--":
        if len(args) < 2:
            raise ShimFlagError(f"{args[0]} needs a value")
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--ports":
            opts.ports = [int(p) for p in value.split(",") if p]
        elif flag == "--forward":
            opts.forward = value != "no"
        elif flag == "--secret-env":
            opts.secret_pairs.append(value)
        elif flag == "--probe":
            role, _, text = value.partition("=")
            if role not in ROLES:
                raise ShimFlagError(f"unknown probe role {role!r}")
            opts.probes[role] = json.loads(text)
        elif flag == "--restart":
            if value not in POLICIES:
                raise ShimFlagError(f"unknown restart policy {value!r}")
            opts.restart = value
        elif flag == "--backoff":
            initial, top, reset = (float(v) for v in value.split(","))
            opts.backoff = (initial, top, reset)
        elif flag == "--stop-signal":
            opts.stop_signal = _signal_number(value)
        elif flag == "--stop-grace":
            opts.stop_grace = float(value)
        elif flag == "--status":
            opts.status = value
        else:
            raise ShimFlagError(f"unknown flag {flag}")
    opts.argv = args[1:]
    return opts


def describe_exit(code: int) -> str:
    """`exited with status 1`, `was killed by signal 9 (SIGKILL)` (asyncio's negative
    return codes are signals)."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"was killed by signal {-code}"


def restarts(policy: str, code: int) -> bool:
    """Whether an exit with `code` is followed by a new start (local engine's rule)."""
    return policy == "always" or (policy == "on-failure" and code != 0)


class Status:
    """The replica's state as the engine's checks read it: a few `key=value` lines,
    rewritten (atomically) only when something in it changes. `started`: the startup probe passed
    (once is enough: it is never probed again in this container); `ever_ready`: ready at
    least once in this container; `ready` and `detail`: now."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {"started": False, "ever_ready": False, "ready": False,
                                     "detail": "starting", "exits": 0}
        self._write()

    @property
    def ready(self) -> bool:
        return bool(self.data["ready"])

    def update(self, **changes: Any) -> None:
        if changes.get("ready"):
            changes["ever_ready"] = True
            changes["exits"] = 0  # exits in a row without becoming ready in between
        new = {**self.data, **changes}
        if new != self.data:
            self.data = new
            self._write()

    def _write(self) -> None:
        tmp = f"{self.path}.{os.getpid()}"
        text = "".join(f"{key}={int(value) if isinstance(value, bool) else value}"
                       .replace("\n", " ") + "\n" for key, value in self.data.items())
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError as exc:
            _say(f"cannot write the status file {self.path}: {exc.strerror}")


def _say(message: str) -> None:
    print(f"mso: {message}", file=sys.stderr, flush=True)


class Supervisor:
    """One replica in its container: start, probe, restart with backoff, stop."""

    def __init__(self, opts: Options, env: dict[str, str]) -> None:
        from mso.engines.local.backoff import Backoff
        from mso.engines.local.probes import ProbeSpec
        self.opts = opts
        self.env = env
        self.backoff = Backoff(*opts.backoff)
        self.status = Status(opts.status)
        self.specs: dict[str, ProbeSpec] = {}
        for role, raw in opts.probes.items():
            port = raw.get("port")
            self.specs[role] = ProbeSpec(
                kind=raw["kind"], target=raw["target"],
                port_name=None if port is None else str(port),
                period=float(raw["period"]), timeout=float(raw["timeout"]),
                failure_threshold=int(raw["failure_threshold"]),
                success_threshold=int(raw["success_threshold"]),
                initial_delay=float(raw.get("initial_delay") or 0.0))
        self.child: asyncio.subprocess.Process | None = None
        self.kill_reason: str | None = None
        self.spawn_code = 0
        self._timer: asyncio.TimerHandle | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def main(self) -> int:
        """Supervise until the replica is stopped or ends for good; the shim's exit code."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                    self.opts.stop_signal}:
            loop.add_signal_handler(sig, self._on_signal, sig)
        while True:
            code = await self._life()
            if code is None:
                return self.spawn_code
            if self.stopping:
                return code if code >= 0 else 128 - code
            reason = describe_exit(code)
            said = f"the process {reason}"
            if self.kill_reason:
                said = f"{self.kill_reason}; {said}"
            if not restarts(self.opts.restart, code):
                if self.opts.probes or self.opts.restart != "never" or code != 0:
                    _say(f"{said}; not restarted (restart: {self.opts.restart})")
                return code if code >= 0 else 128 - code
            delay = self.backoff.next_delay()
            _say(f"{said}; restarting in {delay:g}s")
            exits = int(self.status.data["exits"]) + 1
            looping = CRASH_LOOP if exits >= CRASH_LOOP_EXITS else ""
            self.status.update(ready=False, exits=exits,
                               detail=f"{looping}{reason}, {exits} times in a row without "
                                      f"becoming ready; restarting in {delay:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
                return 0  # stopped while waiting to restart

    def _on_signal(self, sig: int) -> None:
        if sig in (signal.SIGTERM, self.opts.stop_signal):
            if self._stopping is not None and not self._stopping.is_set():
                self._stopping.set()
                self.status.update(ready=False, detail="stopping")
                self._signal_child(self.opts.stop_signal, kill_after=True)
        else:
            self._signal_child(sig)

    def _signal_child(self, sig: int, kill_after: bool = False) -> None:
        child = self.child
        if child is None or child.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)
        if kill_after and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.opts.stop_grace, self._signal_child, signal.SIGKILL)

    def _kill(self, reason: str) -> None:
        """Probe-triggered restart: the stop signal now, SIGKILL after the grace."""
        if self.stopping or self.kill_reason is not None:
            return
        self.kill_reason = reason
        _say(f"{reason}; restarting the process")
        self.status.update(ready=False, detail=reason)
        self._signal_child(self.opts.stop_signal, kill_after=True)

    async def _life(self) -> int | None:
        """Start the process, probe it until it exits; its return code (None: it could
        not be started)."""
        self.kill_reason = None
        argv = self.opts.argv
        try:
            self.child = await asyncio.create_subprocess_exec(
                *argv, env=self.env, start_new_session=True)
        except OSError as exc:
            # What a shell says and exits with: 127 not found, 126 found but not
            # runnable. The line is the replica's last log line; the code tells mso
            # it never started.
            _say(f"cannot start {argv[0] if argv else '(nothing)'}: {exc.strerror}")
            self.spawn_code = 127 if isinstance(exc, FileNotFoundError) else 126
            return None
        self.backoff.record_start()
        self.status.update(ready=False, detail="started")
        probing = asyncio.ensure_future(self._probe())
        try:
            return await self.child.wait()
        finally:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing
            if self._timer is not None and not self.stopping:
                self._timer.cancel()
                self._timer = None

    async def _check(self, spec: ProbeSpec) -> ProbeResult:
        from mso.engines.local.probes import run_probe
        ports = {spec.port_name: int(spec.port_name)} if spec.port_name else {}
        return await run_probe(spec, "127.0.0.1", ports, self.env, os.getcwd())

    async def _probe(self) -> None:
        startup = self.specs.get("startup")
        if startup is not None and not await self._startup(startup):
            return
        self.status.update(started=True)
        liveness = self.specs.get("liveness")
        await asyncio.gather(self._readiness(self.specs.get("readiness")),
                             *([self._liveness(liveness)] if liveness else []))

    async def _startup(self, spec: ProbeSpec) -> bool:
        from mso.engines.local.probes import ProbeTracker, probe_pause
        tracker = ProbeTracker.for_spec("startup", spec)
        await asyncio.sleep(spec.initial_delay)
        while True:
            tracker.feed(await self._check(spec))
            if tracker.passing:
                return True
            if tracker.exhausted:
                self._kill(f"startup probe failed {tracker.consecutive_failures} times: "
                           f"{tracker.last_detail}")
                return False
            self.status.update(detail=f"startup probe: {tracker.last_detail}")
            await probe_pause(spec.period)

    async def _liveness(self, spec: ProbeSpec) -> None:
        from mso.engines.local.probes import ProbeTracker, probe_pause
        tracker = ProbeTracker.for_spec("liveness", spec)
        await asyncio.sleep(spec.initial_delay)
        while True:
            result = await self._check(spec)
            tracker.feed(result)
            if tracker.exhausted:
                self._kill(f"liveness probe failed {tracker.consecutive_failures} times: "
                           f"{tracker.last_detail}")
                return
            if not result.ok:
                _say(f"liveness probe failed ({tracker.consecutive_failures} of "
                     f"{tracker.failure_threshold}): {result.detail}")
            await probe_pause(spec.period)

    async def _readiness(self, spec: ProbeSpec | None) -> None:
        from mso.engines.local.probes import ProbeTracker, probe_pause
        if spec is None:
            await self._port_open()
            self.status.update(ready=True, detail="running (no readiness probe)")
            return
        tracker = ProbeTracker.for_spec("readiness", spec)
        await asyncio.sleep(spec.initial_delay)
        while True:
            changed = tracker.feed(await self._check(spec))
            if tracker.passing:
                self.status.update(ready=True, detail="readiness probe passed")
            elif tracker.exhausted:
                why = (f"readiness probe failed {tracker.consecutive_failures} times: "
                       f"{tracker.last_detail}")
                if changed:
                    _say(f"{why}; not ready")
                self.status.update(ready=False, detail=f"readiness probe failed: "
                                                       f"{tracker.last_detail}")
            await probe_pause(spec.period)

    async def _port_open(self) -> None:
        if not self.opts.ports:
            return
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.opts.ports[0])
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)


def run(args: list[str]) -> int:
    try:
        opts = parse_run(args)
    except (ShimFlagError, ValueError) as exc:
        _say(f"bad arguments for the shim: {exc}")
        return 2
    env = dict(os.environ)
    env.update(_secret_env(opts.secret_pairs))
    stop = threading.Event()
    if opts.ports and opts.forward:
        threading.Thread(target=lambda: asyncio.run(_forward(opts.ports, stop)),
                         daemon=True).start()
    try:
        return asyncio.run(Supervisor(opts, env).main())
    finally:
        stop.set()


def probe(args: list[str]) -> int:
    """Exit 0 when healthy; otherwise print why (Docker keeps it as the check's output,
    which `mso ps` shows as the reason)."""
    if args and args[0] == "status":
        return probe_status(args[1] if len(args) > 1 else STATUS_FILE)
    kind, port = args[0], int(args[1])
    try:
        if kind == "http":
            path, timeout = args[2], float(args[3])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                            timeout=timeout) as r:
                    status = r.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            if 200 <= status < 400:
                return 0
            print(f"HTTP GET {path} returned {status}")
            return 1
        with socket.create_connection(("127.0.0.1", port), timeout=float(args[2])):
            return 0
    except Exception as exc:
        reason = getattr(exc, "reason", None) or exc
        what = f"HTTP GET {args[2]}" if kind == "http" else "TCP connect"
        print(f"{what} on port {port} failed: {reason}")
        return 1


def main(argv: list[str]) -> int:
    if argv and argv[0] == "run":
        return run(argv[1:])
    if argv and argv[0] == "probe":
        return probe(argv[1:])
    print("usage: shim.py run|probe ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
