"""The `mso` command line: every command but validate/schema goes through the API.

Exit codes: 0 ok, 1 failed, 2 bad usage or invalid manifest. Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

if TYPE_CHECKING:
    from mso.spec.load import LoadedManifest
from mso.cli import output, waiting
from mso.cli.engines import Engine, LocalEngine, RemoteApp
from mso.cli.client import ApiClient, CliError, StartupFailed
from mso.engines.remote import (DeployFailed, EngineOptions, RemoteEngine,
                                RemoteEngineError, remote_engine)
from mso.errors import MsoError
from mso.paths import StatePaths
from mso.spec.errors import ManifestError

F = TypeVar("F", bound=Callable[..., Any])
UP_TIMEOUT = 120.0
DEPLOY_TIMEOUT = 600.0


def manifest_options(fn: F, *, short: bool = True) -> F:
    names = ("-f", "--file") if short else ("--file",)
    fn = click.option(*names, "file", type=click.Path(dir_okay=True),
                      help="The manifest (default: ./mso.yaml); a folder means FOLDER/mso.yaml.")(fn)
    fn = click.option("--engine", type=click.Choice(["local", "swarm", "kubernetes"]),
                      help="Override the manifest's `engine:`.")(fn)
    fn = click.option("--kubeconfig", hidden=True, help="Kubernetes: kubeconfig file.")(fn)
    fn = click.option("--context", hidden=True, help="Kubernetes: kubeconfig context.")(fn)
    fn = click.option("--namespace", hidden=True, help="Kubernetes: namespace.")(fn)
    return fn


def streaming_manifest_options(fn: F) -> F:
    """For logs/events, `-f` means follow (as in docker and kubectl); the file is --file."""
    return manifest_options(fn, short=False)


def output_option(*choices: str) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        return click.option("-o", "--output", "fmt", default="table",
                            type=click.Choice(["table", *choices]),
                            help="Output format.")(fn)
    return wrap


def manifest_path(file: str | None, positional: str | None = None) -> Path:
    """-f FILE or PATH (a folder means FOLDER/mso.yaml); else mso.yaml here or in the
    nearest folder above that has one, as git finds its repository."""
    given = positional or file
    if given:
        raw = Path(given)
        return (_in_folder(raw) if raw.is_dir() else raw).resolve()
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "mso.yaml").is_file():
            return (folder / "mso.yaml").resolve()
    return (here / "mso.yaml").resolve()


_IMPORTABLE = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml",
               "Procfile")


def _in_folder(folder: Path) -> Path:
    """FOLDER/mso.yaml; without one, the folder's compose file or Procfile (imported)."""
    if not (folder / "mso.yaml").exists():
        for name in _IMPORTABLE:
            if (folder / name).is_file():
                return folder / name
    return folder / "mso.yaml"


def no_app_here(path: Path) -> CliError:
    if path.exists():
        return CliError(f"nothing has run for {path} yet: start it with `mso up`")
    return CliError(f"no mso.yaml found in {Path.cwd()} or any folder above it; run mso "
                    "in your app's folder or pass -f FILE", 2)


def load(file: str | None, positional: str | None = None, *,
         check_files: bool = True, report: bool = False, refuse: bool = True,
         engine: str | None = None) -> LoadedManifest:
    """The manifest. `check_files=False` for commands that need only its names (`down`):
    they must work without the secrets, env files and configs that starting needs.
    A compose file or Procfile is imported in memory (`report`: say on stderr what
    became of each of its keys, and refuse services that cannot be imported yet), fitted
    to `engine` (--engine) as `mso import --engine` does: a compose file says nothing of
    engines, so a key Swarm or Kubernetes would refuse is left out with a report line
    (`docker stack deploy` of the same file runs too), not a refusal of the whole file."""
    # Imported here: the models cost ~0.1 s to import, which `mso ps` does not pay.
    from mso.importers import import_file, is_importable, load_app, load_imported
    path = manifest_path(file, positional)
    if not (positional or file) and not path.exists():
        raise no_app_here(path)
    if not report or not is_importable(path):
        return load_app(path, dict(os.environ), check_files=check_files)
    imported = import_file(path, dict(os.environ))
    if engine is not None and engine != "local":
        from mso.importers import tailor
        tailor(imported, engine, dict(os.environ))
    for line in imported.report.lines():
        click.echo(f"mso import: {line}", err=True)
    if imported.local_blockers and not refuse:
        for blocker in imported.local_blockers:
            click.echo(f"mso: warning: not imported: {blocker}", err=True)
    elif imported.local_blockers:
        raise CliError("cannot run " + imported.display + " yet: "
                       + "; ".join(imported.local_blockers)
                       + ". Give those services a `command:` that runs here, or leave them "
                       "out with a profile (`profiles: [containers]`)", 2)
    return load_imported(imported, dict(os.environ), check_files=check_files)


def refuse_flags(engine: str, **given: Any) -> None:
    """A flag that would mean nothing on this engine is refused (exit 2), never ignored.
    `given` maps each flag as the user types it to whether it was given."""
    for flag, used in given.items():
        if used:
            raise CliError(f"{flag}: not supported on {engine}: {_NOT_ON_REMOTE[flag]}", 2)


_NOT_ON_REMOTE = {
    "--watch": "watching files is for development on the local engine (`mso up --watch`)",
    "--api-port": "there is no mso daemon there (the engine's own API is used)",
    "--keep-on-failure": "a failed deploy leaves what the engine runs as it is",
    "--timeout": "the engine's deploy waits for its own rollout deadlines "
                 "(`rollout.progress_deadline`)",
}


def check_support(loaded: LoadedManifest, engine: str, dev: bool = False) -> None:
    """Refuse (exit 2, file:line) keys the engine would accept and then ignore
    (mso.spec.support): `mso validate --engine`, `up`, `deploy` and `render` alike. With
    `dev`, development keys (`watch:`) are left out instead, with a one-line note each."""
    from mso.spec import support, users
    support.check(loaded, cast(support.EngineName, engine), dev=dev,
                  note=lambda line: click.echo(f"mso: {line}", err=True))
    if engine == "local":
        users.check_local(loaded)  # `user:` needs root (or is mso's own), and must exist


def warn_commands(loaded: LoadedManifest, engine: str) -> None:
    """Say (on stderr, without failing) which commands will not start as written."""
    for warning in loaded.command_warnings(containers=engine != "local"):
        click.echo(f"mso: {warning}", err=True)


def engine_name(file: str | None, engine: str | None,
                loaded: LoadedManifest | None = None) -> str:
    """--engine, else the manifest's `engine:`, else local."""
    if engine:
        return engine
    if loaded is not None:
        return loaded.manifest.engine
    return declared_engine(manifest_path(file))


_ENGINE_LINE = re.compile(r"^engine:\s*[\"']?(local|swarm|kubernetes)[\"']?\s*(#.*)?$", re.M)


def declared_engine(path: Path) -> str:
    """The manifest's top-level `engine:`, read without loading the manifest (commands
    such as `mso ps` must answer fast, and even when the manifest has since been broken).
    Anything but a plain `engine: NAME` line means local, as no `engine:` does."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "local"  # e.g. `mso ps` beside no manifest: the local state decides
    found = _ENGINE_LINE.search(text)
    return found.group(1) if found else "local"


def remote(name: str, opts: dict[str, Any]) -> RemoteEngine:
    options = EngineOptions(kubeconfig=opts.get("kubeconfig"), context=opts.get("context"),
                            namespace=opts.get("namespace"), version=opts.get("version"))
    try:
        return remote_engine(name, options)
    except RemoteEngineError as exc:
        raise CliError(str(exc)) from exc


def on_remote(file: str | None, opts: dict[str, Any], *, check_files: bool = True
              ) -> tuple[RemoteEngine, LoadedManifest] | None:
    """The remote engine and manifest when the command targets Swarm or Kubernetes."""
    name = engine_name(file, opts.get("engine"))
    if name == "local":
        return None
    loaded = load(file, check_files=check_files)
    return remote(name, opts), loaded


def engine_for(file: str | None, opts: dict[str, Any]) -> Engine:
    """The engine that runs the app, behind the one protocol the commands use."""
    name = engine_name(file, opts.get("engine"))
    if name == "local":
        return LocalEngine(manifest_path(file), no_app_here,
                           lambda line: click.echo(line, err=True))
    loaded = load(file)
    return RemoteApp(name, remote(name, opts), loaded)


def local_only(command: str, file: str | None, engine: str | None, instead: str) -> None:
    """Refuse (exit 2) a command the Swarm and Kubernetes engines do not carry out yet,
    instead of sending it to a local daemon that is not there."""
    name = engine_name(file, engine)
    if name != "local":
        raise CliError(f"mso {command}: not supported on {name} yet; {instead}", 2)


def client_for(file: str | None) -> ApiClient:
    """The daemon's API, for commands that need it running."""
    path = manifest_path(file)
    paths = StatePaths.for_manifest(path)
    if not path.exists() and not paths.db.exists():
        raise no_app_here(path)
    return ApiClient(paths)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mso")
def cli() -> None:
    """mso: one manifest for your micro-services, with progressive delivery."""


@cli.command()
@click.argument("path", required=False)
@manifest_options
@click.option("-d", "--detach", is_flag=True, help="Return once everything is READY.")
@click.option("--timeout", default=UP_TIMEOUT, show_default=True,
              help="Seconds to wait with -d (local engine).")
@click.option("--keep-on-failure", is_flag=True,
              help="With -d: leave what started running when the start-up fails.")
@click.option("--api-port", type=int, help="Also serve the API on 127.0.0.1:PORT (bearer token).")
@click.option("--profile", "profiles", multiple=True,
              help="A compose file: also start the services of this profile (repeatable; "
                   "as COMPOSE_PROFILES).")
@click.option("--watch", "watch", is_flag=True,
              help="Restart (or signal) a service when the files its `watch:` names change, "
                   "readiness-gated, without a failed request (foreground only).")
@click.option("--dev", is_flag=True,
              help="Swarm/Kubernetes: deploy without the development keys (`watch:`), "
                   "with a note for each, instead of refusing them.")
def up(path: str | None, file: str | None, engine: str | None, detach: bool,
       timeout: float, keep_on_failure: bool, api_port: int | None,
       profiles: tuple[str, ...], watch: bool, dev: bool, **opts: Any) -> None:
    """Start the daemon and the app (PATH: a manifest or its folder; a compose file or a
    Procfile is imported in memory, with its report on stderr, see `mso import`).

    With -d, waits until every replica is READY and every job succeeded, and fails as soon
    as a replica crash-loops, cannot start, does not listen on its $PORT or keeps failing
    its readiness probe, printing why and its last log lines. A failed start-up stops
    everything it started (unless --keep-on-failure)."""
    from mso.cli.lifecycle import (down_app, follow_foreground, last_event_id,
                                    preflight_ports, running_summary, start_daemon,
                                    wait_ready)
    if profiles:
        # The daemon reads the compose file again (restarts, `mso deploy`): it inherits this.
        os.environ["COMPOSE_PROFILES"] = ",".join(profiles)
    loaded = load(file, path, report=True, engine=engine)
    name = engine_name(file, engine, loaded)
    check_support(loaded, name, dev=dev)
    warn_commands(loaded, name)
    if watch and detach:
        raise CliError("--watch: not with -d: the watcher runs in the foreground `mso up` "
                       "(its output shows each restart and why one failed); run `mso up "
                       "--watch` in a terminal of its own", 2)
    if name != "local":
        # `up` on Swarm/Kubernetes deploys and waits (with or without -d: there is no
        # foreground daemon to follow there).
        refuse_flags(name, **{"--api-port": api_port is not None,
                              "--keep-on-failure": keep_on_failure,
                              "--timeout": timeout != UP_TIMEOUT, "--watch": watch})
        output.emit_json(remote(name, dict(opts, engine=name)).deploy(loaded))
        return
    paths = StatePaths.for_manifest(loaded.path)
    client = ApiClient(paths)
    history = last_event_id(paths, client)
    began = time.time()
    started = False
    if client.alive():
        applied = client.post("/v1/apply", {"manifest": str(loaded.path),
                                             "environ": dict(os.environ)})
        output.changes(applied["changes"])
        if applied.get("proxy_error"):
            raise CliError(f"{applied['proxy_error']}; the proxy keeps the previous routes")
    else:
        preflight_ports(loaded, paths)
        start_daemon(paths, loaded.path, api_port)
        started = True
        status = client.get("/v1/status")
        if status.get("apply_error"):
            # Started on a disk that refuses writes: it serves what its store had.
            if not status["desired_replicas"] and not status["jobs"]:
                down_app(paths, quiet=True)
                raise CliError(f"{status['apply_error']}; nothing was started")
            click.echo(f"mso: warning: {status['apply_error']}; serving what the store "
                       "had (run `mso up` again once the disk has room)", err=True)
    gateway = loaded.manifest.gateway
    url = f"http://{gateway.bind}:{gateway.port}/"
    if not detach:
        click.echo(f"mso: starting {loaded.manifest.app}; gateway {url}; Ctrl-C stops it",
                   err=True)
        watcher = None
        if watch:
            from mso.cli.watch import start_watching
            watcher = start_watching(loaded, client)
        stop_watching = watcher.stop if watcher is not None else (lambda: None)
        try:
            follow_foreground(client, url, history, before_down=stop_watching)
        finally:
            stop_watching()  # idempotent
        return
    try:
        wait_ready(client, timeout, history, since=began)
    except StartupFailed as exc:
        report_failure(exc)  # first: the reason must not wait for the clean-up
        if started and not keep_on_failure:
            down_app(paths, quiet=True)
            click.echo("mso: stopped everything this `mso up` started; `mso logs SERVICE`, "
                       "`mso events` and `mso ps` still show what happened "
                       "(--keep-on-failure leaves it running)", err=True)
        else:
            click.echo(f"mso: {running_summary(client)}", err=True)
        sys.exit(exc.exit_code)
    output.ps_table(client.get("/v1/ps"))
    click.echo(f"gateway: {url}")


@cli.command()
@manifest_options
def down(file: str | None, engine: str | None, **opts: Any) -> None:
    """Stop everything, leaving no process behind (remote engines: remove what mso made)."""
    from mso.cli.lifecycle import down_app
    # A secret's variable or file may be gone by the time the app is taken down.
    target = on_remote(file, dict(opts, engine=engine), check_files=False)
    if target is not None:
        target[0].down(target[1])
        click.echo("removed")
        return
    down_app(StatePaths.for_manifest(manifest_path(file)))


@cli.command()
@manifest_options
@output_option("json")
@click.option("--wait", is_flag=True,
              help="Follow the rollouts to their end: exit 0 when promoted, 1 when rolled "
                   "back or failed; ends early when a new replica fails (local engine; "
                   "Swarm and Kubernetes always wait).")
@click.option("--timeout", default=DEPLOY_TIMEOUT, show_default=True,
              help="Seconds to wait with --wait (local engine).")
@click.option("--force", is_flag=True,
              help="Roll out a manifest identical to a release that was rolled back, "
                   "failed or was undone by `mso rollback`.")
@click.option("--dev", is_flag=True,
              help="Swarm/Kubernetes: deploy without the development keys (`watch:`), "
                   "with a note for each, instead of refusing them.")
def deploy(file: str | None, engine: str | None, fmt: str, wait: bool, timeout: float,
           force: bool, dev: bool, **opts: Any) -> None:
    """Apply a changed manifest as new releases, with each service's rollout strategy."""
    from mso.cli.lifecycle import last_event_id, wait_deployed
    loaded = load(file, report=True, engine=engine)
    name = engine_name(file, engine, loaded)
    check_support(loaded, name, dev=dev)
    warn_commands(loaded, name)
    if name != "local":
        # Swarm and Kubernetes deploys always wait: --wait is what they do anyway.
        refuse_flags(name, **{"--timeout": timeout != DEPLOY_TIMEOUT})
        result = remote(name, dict(opts, engine=name)).deploy(loaded, force=force)
        output.emit_json(result) if fmt == "json" else output.changes(result.get("changes", []))
        return
    paths = StatePaths.for_manifest(loaded.path)
    client = ApiClient(paths)
    history = last_event_id(paths, client)
    began = time.time()
    result = client.post("/v1/apply", {"manifest": str(loaded.path),
                                        "environ": dict(os.environ), "force": force})
    if fmt == "json":
        output.emit_json(result)
    else:
        output.changes(result["changes"])
    if result.get("proxy_error"):
        raise CliError(f"{result['proxy_error']}; the proxy keeps the previous routes")
    changed = {c["service"]: c["release"] for c in result["changes"]
               if c["created"] and c["service"] in loaded.manifest.services}
    if not wait:
        if fmt != "json":
            output.rollouts_started(client, changed)
        return
    say = (lambda line: None) if fmt == "json" else click.echo
    try:
        phases = wait_deployed(client, changed, timeout, history, since=began, say=say)
    except StartupFailed as exc:
        report_failure(exc)
        sys.exit(exc.exit_code)
    if fmt != "json":
        done = ", ".join(f"{s} release {changed[s]} {p.lower() or 'running'}"
                         for s, p in phases.items())
        click.echo(f"deployed: {done}" if done else "deployed: every replica is READY")


@cli.command()
@manifest_options
@output_option("json", "yaml")
@click.option("-w", "--watch", is_flag=True,
              help="Keep watching: redraw on a terminal, print each change when piped "
                   "(one JSON document per line with -o json). Ctrl-C ends it.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between looks with --watch.")
def ps(file: str | None, engine: str | None, fmt: str, watch: bool, interval: float,
       **opts: Any) -> None:
    """Replicas and their state (the last known state when mso is not running)."""
    target = engine_for(file, dict(opts, engine=engine))
    if watch:
        _watch_ps(target, fmt, interval)
        return
    data = target.ps()
    output.ps_table(data) if fmt == "table" else output.emit(data, fmt)


def _watch_ps(target: Engine, fmt: str, interval: float) -> None:
    """`mso ps -w`, like `kubectl get -w` and `watch mso ps` in one."""
    output.exit_when_output_closes()
    redraw = fmt == "table" and sys.stdout.isatty()
    last = None
    while True:
        data = target.ps()
        key = json.dumps(data, sort_keys=True, default=str)
        if key != last:
            last = key
            if redraw:
                click.echo("\x1b[H\x1b[2J", nl=False)  # home, clear: a full-screen view
                click.echo(f"every {interval:g}s: mso ps  {time.strftime('%H:%M:%S')}")
                output.ps_table(data)
            elif fmt == "table":
                click.echo(time.strftime("%H:%M:%S"))
                output.ps_table(data)
                click.echo("")
            else:
                click.echo(json.dumps(data, default=str))
            sys.stdout.flush()
        time.sleep(interval)


@cli.command()
@manifest_options
@output_option("json", "yaml")
def endpoints(file: str | None, engine: str | None, fmt: str, **opts: Any) -> None:
    """Stable addresses, the gateway, and where each service routes."""
    data = engine_for(file, dict(opts, engine=engine)).endpoints()
    output.endpoints_table(data) if fmt == "table" else output.emit(data, fmt)


@cli.command()
@click.argument("service", required=False)
@streaming_manifest_options
@click.option("-f", "--follow", "follow", is_flag=True, help="Keep streaming new lines.")
@click.option("--since", help="Only lines newer than this (e.g. 10m, 1h).")
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N lines.")
@output_option("json", "ndjson")
def logs(service: str | None, file: str | None, engine: str | None, follow: bool,
         since: str | None, tail: int | None, fmt: str, **opts: Any) -> None:
    """Logs of the app or of one service."""
    if follow:
        output.exit_when_output_closes()
    records = engine_for(file, dict(opts, engine=engine)).logs(
        service, follow, output.since_epoch(since), tail)
    output.print_records(records, "ndjson" if follow and fmt == "json" else fmt)


@cli.command()
@streaming_manifest_options
@click.option("-f", "--follow", "follow", is_flag=True, help="Keep streaming new events.")
@click.option("--service", help="Only this service's events.")
@click.option("--tail", type=click.IntRange(min=0), default=200, show_default=True,
              help="Only the last N events.")
@output_option("json", "ndjson")
def events(file: str | None, engine: str | None, follow: bool, service: str | None,
           tail: int, fmt: str, **opts: Any) -> None:
    """The event log: state changes, releases, jobs, drains."""
    if follow:
        output.exit_when_output_closes()
    records = engine_for(file, dict(opts, engine=engine)).events(service, follow, tail)
    output.print_events(records, follow, fmt)


@cli.command()
@click.argument("assignment", metavar="SERVICE=N")
@manifest_options
def scale(assignment: str, file: str | None, engine: str | None, **opts: Any) -> None:
    """Scale a service to N replicas."""
    name, sep, count = assignment.partition("=")
    if not sep or not count.isdigit():
        raise CliError(f"expected SERVICE=N, got {assignment!r}", 2)
    replicas = engine_for(file, dict(opts, engine=engine)).scale(name, int(count))
    click.echo(f"{name}: scaling to {replicas}")


@cli.command()
@click.argument("service")
@manifest_options
def restart(service: str, file: str | None, engine: str | None, **opts: Any) -> None:
    """Restart a service's replicas one by one, without downtime (stop first, then start,
    for a service whose rollout strategy is `recreate`)."""
    how = engine_for(file, dict(opts, engine=engine)).restart(service)
    click.echo(f"{service}: {how} restart started")


@cli.group()
def secrets() -> None:
    """The secret values mso keeps for rollback (encrypted at rest, docs/manifest.md)."""


@secrets.command("rotate-key")
@manifest_options
def rotate_key(file: str | None, engine: str | None, **opts: Any) -> None:
    """Encrypt every kept secret value with a new key (the key file outside .mso/)."""
    local_only("secrets rotate-key", file, engine,
               "the Swarm and Kubernetes controllers keep their secrets with their engine")
    client = client_for(file)
    if client.alive():
        done = client.post("/v1/secrets/rotate-key", {})
    else:
        from mso.store.db import Store
        store = Store(client.paths.db)
        try:
            store.open_secrets()
            done = {"releases": store.rotate_secrets_key()}
        finally:
            store.close()
    click.echo(f"secrets key rotated: {done['releases']} release(s) re-encrypted")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("service")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@manifest_options
def run(service: str, command: tuple[str, ...], file: str | None, engine: str | None, **opts: Any) -> None:
    """Run a one-off command with SERVICE's environment: mso run SERVICE -- CMD..."""
    local_only("run", file, engine, "add a job to the manifest (jobs:) and deploy it")
    code = 0
    for item in client_for(file).stream("POST", f"/v1/services/{service}/run",
                                        {"argv": list(command)}):
        if "exit_code" in item:
            code = int(item["exit_code"])
        else:
            click.echo(item["line"])
    sys.exit(code)


@cli.command()
@click.argument("service")
@manifest_options
@output_option("json", "yaml")
def releases(service: str, file: str | None, engine: str | None, fmt: str,
             **opts: Any) -> None:
    """Release history of a service."""
    data = engine_for(file, dict(opts, engine=engine)).releases(service)
    output.releases_table(service, data) if fmt == "table" else output.emit(data, fmt)


@cli.command()
@click.argument("service")
@manifest_options
@click.option("--to", "to", type=int, help="Release number (default: the previous one).")
def rollback(service: str, file: str | None, engine: str | None, to: int | None,
             **opts: Any) -> None:
    """Roll a service back to an earlier release (as a new release)."""
    number = engine_for(file, dict(opts, engine=engine)).rollback(service, to)
    click.echo(f"{service}: rolling back as release {number}")


@cli.command()
@click.argument("action", type=click.Choice(["status", "promote", "abort", "pause", "resume"]))
@click.argument("service")
@manifest_options
@output_option("json", "yaml")
@click.option("-w", "--watch", is_flag=True,
              help="status: follow the rollout to its end, one line per change; exit 0 "
                   "when promoted, 1 when rolled back or failed.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="With --watch: give up after this many seconds (exit 1).")
def rollout(action: str, service: str, file: str | None, engine: str | None, fmt: str,
            watch: bool, timeout: float | None, **opts: Any) -> None:
    """Show or control a service's rollout: status|promote|abort|pause|resume."""
    if watch and action != "status":
        raise CliError("--watch goes with `rollout status` only", 2)
    if timeout is not None and not watch:
        raise CliError("--timeout goes with --watch", 2)
    target = engine_for(file, dict(opts, engine=engine))
    if not watch:
        data = target.rollout(action, service)
        output.rollout_status(data) if fmt == "table" else output.emit(data, fmt)
        return
    _watch_rollout(lambda: target.rollout("status", service), fmt, timeout)


@cli.command()
@manifest_options
@click.option("--port", type=click.IntRange(0, 65535),
              help="Serve it on 127.0.0.1:PORT (default: a free port). Once started, the "
                   "dashboard keeps its port until `mso down`.")
@click.option("--no-open", "no_open", is_flag=True,
              help="Only print the login URL (for scripts); do not open a browser.")
def dashboard(file: str | None, engine: str | None, port: int | None, no_open: bool,
              **opts: Any) -> None:
    """Serve the live web dashboard on 127.0.0.1, print its login URL and open it in a
    browser. On the embedded engine the daemon serves it (until `mso down`); for an app
    on Swarm or Kubernetes it is served from here, in the foreground, until Ctrl-C."""
    name = engine_name(file, engine)
    if name != "local":
        _remote_dashboard(name, file, port, no_open, opts)
        return
    client = client_for(file)
    try:
        served = client.post("/v1/dashboard", {"port": port})
        token = client.paths.api_token.read_text().strip()
    finally:
        client.close()
    url = f"http://127.0.0.1:{served['port']}/login?token={token}"
    click.echo(url)
    if not no_open:
        import webbrowser
        if not webbrowser.open(url):
            click.echo("mso: no browser could be opened here; open the URL above", err=True)


def _remote_dashboard(name: str, file: str | None, port: int | None, no_open: bool,
                      opts: dict[str, Any]) -> None:
    """`python -m mso.web` in this process's place (mso.web.__main__): the CLI cannot
    import the dashboard (the two are sibling layers), and exec keeps Ctrl-C and the
    output going straight to it."""
    argv = [sys.executable, "-m", "mso.web", "--file", str(manifest_path(file)),
            "--engine", name]
    if port:
        argv += ["--port", str(port)]
    if no_open:
        argv.append("--no-open")
    for key in ("kubeconfig", "context", "namespace"):
        if opts.get(key):
            argv += [f"--{key}", str(opts[key])]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def _watch_rollout(get_status: Callable[[], dict[str, Any]], fmt: str,
                   timeout: float | None) -> None:
    """`rollout status -w`: a line (or, with -o json, a JSON object) per change; the
    outcome's line on stdout when promoted, on stderr with exit 1 otherwise."""
    output.exit_when_output_closes()

    def show(status: dict[str, Any]) -> None:
        click.echo(json.dumps(status, default=str) if fmt == "json"
                   else waiting.change_line(status))
        sys.stdout.flush()

    outcome = waiting.wait_rollout(get_status, on_change=show, timeout=timeout)
    if outcome.code != 0:
        raise CliError(outcome.message, outcome.code)
    if fmt != "json":
        click.echo(outcome.message)


@cli.command()
@click.argument("path", required=False)
@manifest_options
@output_option("json")
@click.option("--dev", is_flag=True,
              help="Swarm/Kubernetes: deploy without the development keys (`watch:`), "
                   "with a note for each, instead of refusing them.")
def validate(path: str | None, file: str | None, engine: str | None, fmt: str, dev: bool,
             **opts: Any) -> None:
    """Check a manifest (or a compose file or Procfile, imported) without running anything."""
    try:
        loaded = load(file, path, report=True, refuse=False, engine=engine)
    except ManifestError as exc:
        if fmt == "json":
            # Scripts and editors get the problems as data too; stderr and exit 2 as ever.
            output.emit_json({"valid": False, "file": str(manifest_path(file, path)),
                              "errors": [{"file": e.file, "line": e.line, "field": e.field,
                                          "message": e.message} for e in exc.errors]})
        raise
    m = loaded.manifest
    target = engine_name(file, engine, loaded)
    try:
        check_support(loaded, target, dev=dev)
    except ManifestError as exc:
        if fmt == "json":
            output.emit_json({"valid": False, "file": str(loaded.path), "engine": target,
                              "errors": [{"file": e.file, "line": e.line, "field": e.field,
                                          "message": e.message} for e in exc.errors]})
        raise
    warnings = loaded.command_warnings(containers=target != "local")
    summary = {"valid": True, "file": str(loaded.path), "app": m.app, "engine": target,
               "services": sorted(m.services), "jobs": sorted(m.jobs),
               "warnings": [{"file": w.file, "line": w.line, "field": w.field,
                             "message": w.message} for w in warnings]}
    if fmt == "json":
        output.emit_json(summary)
    else:
        click.echo(f"{loaded.path}: valid for {target} ({output.count(len(m.services), 'service')}, "
                   f"{output.count(len(m.jobs), 'job')})")
    for warning in warnings:
        click.echo(f"mso: {warning}", err=True)


@cli.command()
@click.argument("path", required=False)
@manifest_options
@click.option("-o", "--output-dir", "out_dir", type=click.Path(file_okay=False),
              help="Write one file per object here (default: print to stdout).")
@click.option("--version", "version", help="Kubernetes: the target version, e.g. 1.29.")
@click.option("--dev", is_flag=True,
              help="Render without the development keys (`watch:`), with a note for each, "
                   "instead of refusing them.")
def render(path: str | None, file: str | None, engine: str | None, out_dir: str | None,
           version: str | None, dev: bool, **opts: Any) -> None:
    """Write the engine's manifests (Kubernetes YAML or a Swarm stack file)."""
    loaded = load(file, path)
    name = engine_name(file, engine, loaded)
    if name == "local":
        raise CliError("render needs --engine kubernetes or --engine swarm", 2)
    check_support(loaded, name, dev=dev)
    result = remote(name, dict(opts, engine=name, version=version)).render(
        loaded, Path(out_dir) if out_dir else None)
    if isinstance(result, str):
        click.echo(result, nl=False)
    else:
        for written in result:
            click.echo(str(written))


@cli.command(name="import")
@click.argument("source", type=click.Path(dir_okay=True))
@click.option("-o", "--output", "output_to", default=None, metavar="FILE|json",
              help="Write the manifest to FILE (paths in it are relative to FILE's folder), or "
                   "`json`: print {manifest, report} as JSON. Default: the manifest on stdout.")
@click.option("--profile", "profiles", multiple=True,
              help="Also import the services of this compose profile (repeatable; `*` for all).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option("--engine", type=click.Choice(["local", "swarm", "kubernetes"]),
              help="Fit the manifest to this engine: leave out (and report) the keys it would "
                   "refuse, and write `engine:`.")
def import_(source: str, output_to: str | None, profiles: tuple[str, ...], force: bool,
            engine: str | None) -> None:
    """Translate a Compose file or a Procfile (SOURCE; a folder means its compose.yaml or
    Procfile) into an mso.yaml. The report, on stderr, says for every key whether it was
    kept, translated (to what) or dropped (and why), with its line."""
    from mso.importers import import_file
    path = Path(source)
    if path.is_dir():
        found = next((path / n for n in _IMPORTABLE if (path / n).is_file()), None)
        if found is None:
            raise CliError(f"{source}: no compose.yaml, docker-compose.yml or Procfile in this "
                           "folder", 2)
        path = found
    target = Path(output_to) if output_to not in (None, "json", "-") else None
    if target is not None and target.is_dir():
        target = target / "mso.yaml"
    if target is not None and target.exists() and not force:
        raise CliError(f"{target} exists; pass --force to overwrite it", 2)
    out_dir = target.resolve().parent if target is not None else None
    imported = import_file(path, dict(os.environ), out_dir=out_dir, profiles=profiles)
    if engine is not None:
        from mso.importers import tailor
        tailor(imported, engine, dict(os.environ))
    if output_to == "json":
        output.emit_json({"source": imported.display, "kind": imported.kind,
                          "manifest": imported.manifest_data(),
                          "report": imported.report.to_json(),
                          "counts": imported.report.counts(),
                          "not_runnable_locally": imported.local_blockers})
    else:
        for line in imported.report.lines():
            click.echo(line, err=True)
    if target is not None:
        target.write_text(imported.yaml_text())
        counts = imported.report.counts()
        click.echo(f"mso: wrote {target} ({counts['kept']} kept, {counts['translated']} "
                   f"translated, {counts['dropped']} dropped; check it with "
                   f"`mso validate {target}`)", err=True)
    elif output_to != "json":
        click.echo(imported.yaml_text(), nl=False)
    for blocker in imported.local_blockers:
        click.echo(f"mso: not imported: {blocker}", err=True)


@cli.command()
@click.argument("folder", required=False, default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing mso.yaml.")
def init(folder: str, force: bool) -> None:
    """Write a starting mso.yaml for the app in FOLDER (default: here) from its compose
    file or Procfile (imported, as `mso import`), or guessed from its pyproject.toml or
    package.json. What it read and guessed goes to stderr, one line per key."""
    from mso.importers import init_folder, load_imported
    where = Path(folder)
    if not where.is_dir():
        raise CliError(f"{folder}: no such folder", 2)
    target = where / "mso.yaml"
    if target.exists() and not force:
        raise CliError(f"{target} exists; pass --force to overwrite it", 2)
    imported = init_folder(where.resolve(), dict(os.environ))
    load_imported(imported, dict(os.environ), check_files=False)  # what is written validates
    for line in imported.report.lines():
        click.echo(f"mso init: {line}", err=True)
    for blocker in imported.local_blockers:
        click.echo(f"mso init: not imported: {blocker}", err=True)
    target.write_text(imported.yaml_text("init"))
    click.echo(f"mso: wrote {target} from {imported.display}; check it with `mso validate`, "
               "then `mso up`", err=True)


@cli.group()
def new() -> None:
    """Create something from a template (`mso new service`)."""


@new.command(name="service")
@click.argument("name")
@click.option("-t", "--template", "template", default="python-http", show_default=True,
              metavar="python-http|node-http|worker|PATH",
              help="A built-in template, or a folder of your own (docs/templates.md).")
@click.option("-f", "--file", "file", type=click.Path(dir_okay=True),
              help="The manifest to add the service to (default: ./mso.yaml, made if missing).")
@click.option("--port", type=click.IntRange(1, 65535), help="The service's http port.")
@click.option("--route", help="The gateway's path prefix for it (default: / if free, else /NAME).")
@click.option("--no-route", is_flag=True, help="Do not route gateway traffic to it.")
def new_service(name: str, template: str, file: str | None, port: int | None,
                route: str | None, no_route: bool) -> None:
    """Create the service NAME from a template: its folder beside mso.yaml (code, test,
    Dockerfile, README) and its entry in mso.yaml (health probes, canary rollout), keeping
    the manifest's comments and formatting."""
    from mso.cli.scaffold import new_service as scaffold
    if file:
        manifest = Path(file)
        manifest = (manifest / "mso.yaml") if manifest.is_dir() else manifest
    else:
        found = manifest_path(None)
        manifest = found if found.exists() else Path.cwd() / "mso.yaml"
    created = not manifest.exists()
    written, description, path = scaffold(manifest.resolve(), name, template, port, route,
                                          no_route, dict(os.environ))
    folder = manifest.resolve().parent / name
    click.echo(f"mso: created {name}/ ({description}): "
               + ", ".join(sorted(p.relative_to(folder).as_posix() for p in written)))
    click.echo(f"mso: {'wrote' if created else 'added services.' + name + ' to'} {manifest}"
               + (f", with the gateway route {path}" if path else ""))
    click.echo(f"next: `cd {name}` and run its test (see {name}/README.md), then `mso up` "
               f"(or `mso deploy` if the app runs)")


@cli.command()
@click.argument("hosts", nargs=-1)
@click.option("-f", "--file", "file", type=click.Path(dir_okay=True),
              help="The manifest whose route hosts get certified (default: ./mso.yaml).")
@click.option("--out", "out", type=click.Path(file_okay=False),
              help="Folder for NAME.pem and NAME-key.pem (default: certs/ beside the manifest).")
@click.option("--name", default="gateway", show_default=True, help="File name stem.")
def certs(hosts: tuple[str, ...], file: str | None, out: str | None, name: str) -> None:
    """Make a development CA (once) and a certificate for HOSTS (default: the manifest's
    route hosts), localhost, 127.0.0.1 and ::1, for `gateway.tls`."""
    from mso.cli import certs as dev_ca
    found = manifest_path(file) if (file or not hosts) else None
    wanted = list(hosts)
    base = Path.cwd()
    if found is not None and found.is_file():
        from mso.spec.load import load_manifest
        loaded = load_manifest(found, check_files=False)
        base = loaded.base_dir
        if not wanted:
            wanted = sorted({r.host for r in loaded.manifest.routes if r.host})
    issued = dev_ca.issue(wanted, Path(out) if out else base / "certs", name)
    if issued.ca_created:
        click.echo(f"created the development CA in {issued.ca_cert.parent}")
    click.echo(f"certificate for {', '.join(issued.names)}:\n  {issued.cert}\n  {issued.key}")
    cert, key = (os.path.relpath(p, base) for p in (issued.cert, issued.key))
    click.echo(f"in mso.yaml:\n  gateway:\n    tls: {{cert: {cert}, key: {key}}}")
    click.echo(dev_ca.trust_hint(issued.ca_cert))


@cli.command()
def schema() -> None:
    """Print the manifest's JSON Schema (for editor autocompletion)."""
    from mso.spec.schema import json_schema
    click.echo(json.dumps(json_schema(), indent=2))


def report_failure(exc: StartupFailed) -> None:
    output.failure_report(exc.failing, header=str(exc))


def main() -> None:
    """Run the CLI; translate every error at this boundary (mso.errors): one line on
    stderr (plus the evidence of a failed start-up or deploy) and the kind's exit code."""
    try:
        cli.main(standalone_mode=False)
    except StartupFailed as exc:
        report_failure(exc)
        sys.exit(exc.exit_code)
    except DeployFailed as exc:
        output.failure_report(exc.failing)
        sys.exit(exc.exit_code)
    except MsoError as exc:
        click.echo(f"mso: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        # Ctrl-C is how one ends `logs -f` and `events -f`: not an error, no message.
        if isinstance(exc.__cause__, KeyboardInterrupt):
            sys.exit(130)
        click.echo("mso: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"mso: {exc.format_message()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        click.echo(f"mso: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
