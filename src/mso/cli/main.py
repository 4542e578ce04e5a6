"""The `mso` command line: every command but validate/schema goes through the API.

Exit codes: 0 ok, 1 failed, 2 bad usage or invalid manifest. Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mso.cli import output
from mso.cli.client import ApiClient, CliError
from mso.cli.lifecycle import (down_app, follow_foreground, last_event_id, start_daemon,
                                wait_ready)
from mso.engines.remote import (DeployFailed, EngineOptions, RemoteEngine,
                                RemoteEngineError, engine_events, remote_engine)
from mso.paths import StatePaths
from mso.spec.errors import ManifestError
from mso.spec.load import LoadedManifest, load_manifest

F = TypeVar("F", bound=Callable[..., Any])


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
    raw = Path(positional or file or "mso.yaml")
    if raw.is_dir():
        raw = raw / "mso.yaml"
    return raw.resolve()


def load(file: str | None, positional: str | None = None) -> LoadedManifest:
    return load_manifest(manifest_path(file, positional), dict(os.environ))


def engine_name(file: str | None, engine: str | None,
                loaded: LoadedManifest | None = None) -> str:
    """--engine, else the manifest's `engine:`, else local."""
    if engine:
        return engine
    if loaded is not None:
        return loaded.manifest.engine
    try:
        return load_manifest(manifest_path(file), dict(os.environ),
                             check_files=False).manifest.engine
    except ManifestError:
        return "local"  # e.g. `mso ps` beside no manifest: the local state decides


def remote(name: str, opts: dict[str, Any]) -> RemoteEngine:
    options = EngineOptions(kubeconfig=opts.get("kubeconfig"), context=opts.get("context"),
                            namespace=opts.get("namespace"), version=opts.get("version"))
    try:
        return remote_engine(name, options)
    except RemoteEngineError as exc:
        raise CliError(str(exc)) from exc


def on_remote(file: str | None, opts: dict[str, Any]) -> tuple[RemoteEngine, LoadedManifest] | None:
    """The remote engine and manifest when the command targets Swarm or Kubernetes."""
    name = engine_name(file, opts.get("engine"))
    if name == "local":
        return None
    loaded = load(file)
    return remote(name, opts), loaded


def client_for(file: str | None) -> ApiClient:
    return ApiClient(StatePaths.for_manifest(manifest_path(file)))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mso")
def cli() -> None:
    """mso: one manifest for your micro-services, with progressive delivery."""


@cli.command()
@click.argument("path", required=False)
@manifest_options
@click.option("-d", "--detach", is_flag=True, help="Return once everything is READY.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait with -d.")
@click.option("--api-port", type=int, help="Also serve the API on 127.0.0.1:PORT (bearer token).")
def up(path: str | None, file: str | None, engine: str | None, detach: bool,
       timeout: float, api_port: int | None, **opts: Any) -> None:
    """Start the daemon and the app (PATH: a manifest or its folder)."""
    loaded = load(file, path)
    name = engine_name(file, engine, loaded)
    if name != "local":
        output.emit_json(remote(name, dict(opts, engine=name)).deploy(loaded))
        return
    paths = StatePaths.for_manifest(loaded.path)
    client = ApiClient(paths)
    history = last_event_id(paths, client)
    if client.alive():
        changes = client.post("/v1/apply", {"manifest": str(loaded.path),
                                             "environ": dict(os.environ)})["changes"]
        output.changes(changes)
    else:
        start_daemon(paths, loaded.path, api_port)
    if detach:
        wait_ready(client, timeout, history)
        output.ps_table(client.get("/v1/ps"))
        gateway = loaded.manifest.gateway
        click.echo(f"gateway: http://{gateway.bind}:{gateway.port}/")
    else:
        follow_foreground(client)


@cli.command()
@manifest_options
def down(file: str | None, engine: str | None, **opts: Any) -> None:
    """Stop everything, leaving no process behind (remote engines: remove what mso made)."""
    target = on_remote(file, dict(opts, engine=engine))
    if target is not None:
        target[0].down(target[1])
        click.echo("removed")
        return
    down_app(StatePaths.for_manifest(manifest_path(file)))


@cli.command()
@manifest_options
@output_option("json")
def deploy(file: str | None, engine: str | None, fmt: str, **opts: Any) -> None:
    """Apply a changed manifest as new releases, with each service's rollout strategy."""
    loaded = load(file)
    name = engine_name(file, engine, loaded)
    if name != "local":
        result = remote(name, dict(opts, engine=name)).deploy(loaded)
        output.emit_json(result) if fmt == "json" else output.changes(result.get("changes", []))
        return
    client = ApiClient(StatePaths.for_manifest(loaded.path))
    result = client.post("/v1/apply", {"manifest": str(loaded.path),
                                        "environ": dict(os.environ)})
    if fmt == "json":
        output.emit_json(result)
    else:
        output.changes(result["changes"])


@cli.command()
@manifest_options
@output_option("json")
def ps(file: str | None, engine: str | None, fmt: str, **opts: Any) -> None:
    """Replicas and their state."""
    target = on_remote(file, dict(opts, engine=engine))
    data = target[0].ps(target[1]) if target else client_for(file).get("/v1/ps")
    output.emit_json(data) if fmt == "json" else output.ps_table(data)


@cli.command()
@manifest_options
@output_option("json")
def endpoints(file: str | None, engine: str | None, fmt: str, **opts: Any) -> None:
    """Stable addresses, the gateway, and where each service routes."""
    target = on_remote(file, dict(opts, engine=engine))
    data = target[0].endpoints(target[1]) if target else client_for(file).get("/v1/endpoints")
    output.emit_json(data) if fmt == "json" else output.endpoints_table(data)


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
    target = on_remote(file, dict(opts, engine=engine))
    if target is not None:
        records = target[0].logs(target[1], service, follow, output.since_epoch(since), tail)
        output.print_records(records, fmt)
        return
    output.logs(client_for(file), service, follow, since, tail, fmt)


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
    name = engine_name(file, engine)
    if name != "local":
        records = engine_events(remote(name, dict(opts, engine=name)), name, load(file),
                                service, follow, tail)
        output.print_events(records, follow, fmt)
        return
    output.events(client_for(file), service, follow, tail, fmt)


@cli.command()
@click.argument("assignment", metavar="SERVICE=N")
@manifest_options
def scale(assignment: str, file: str | None, engine: str | None, **opts: Any) -> None:
    """Scale a service to N replicas."""
    name, sep, count = assignment.partition("=")
    if not sep or not count.isdigit():
        raise CliError(f"expected SERVICE=N, got {assignment!r}", 2)
    target = on_remote(file, dict(opts, engine=engine))
    if target is not None:
        target[0].scale(target[1], name, int(count))
        click.echo(f"{name}: scaling to {count}")
        return
    result = client_for(file).post(f"/v1/services/{name}/scale", {"replicas": int(count)})
    click.echo(f"{result['service']}: scaling to {result['replicas']}")


@cli.command()
@click.argument("service")
@manifest_options
def restart(service: str, file: str | None, engine: str | None, **opts: Any) -> None:
    """Restart a service's replicas one by one, without downtime (stop first, then start,
    for a service whose rollout strategy is `recreate`)."""
    result = client_for(file).post(f"/v1/services/{service}/restart")
    click.echo(f"{service}: {result.get('strategy', 'rolling')} restart started")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("service")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@manifest_options
def run(service: str, command: tuple[str, ...], file: str | None, engine: str | None, **opts: Any) -> None:
    """Run a one-off command with SERVICE's environment: mso run SERVICE -- CMD..."""
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
@output_option("json")
def releases(service: str, file: str | None, engine: str | None, fmt: str,
             **opts: Any) -> None:
    """Release history of a service."""
    target = on_remote(file, dict(opts, engine=engine))
    data = target[0].releases(target[1], service) if target else \
        client_for(file).get(f"/v1/services/{service}/releases")
    output.emit_json(data) if fmt == "json" else output.releases_table(service, data)


@cli.command()
@click.argument("service")
@manifest_options
@click.option("--to", "to", type=int, help="Release number (default: the previous one).")
def rollback(service: str, file: str | None, engine: str | None, to: int | None,
             **opts: Any) -> None:
    """Roll a service back to an earlier release (as a new release)."""
    target = on_remote(file, dict(opts, engine=engine))
    if target is not None:
        number = target[0].rollback(target[1], service, to)
    else:
        number = client_for(file).post(f"/v1/services/{service}/rollback",
                                       {"to": to})["release"]
    click.echo(f"{service}: rolling back as release {number}")


@cli.command()
@click.argument("action", type=click.Choice(["status", "promote", "abort", "pause", "resume"]))
@click.argument("service")
@manifest_options
@output_option("json")
def rollout(action: str, service: str, file: str | None, engine: str | None, fmt: str,
            **opts: Any) -> None:
    """Show or control a service's rollout: status|promote|abort|pause|resume."""
    target = on_remote(file, dict(opts, engine=engine))
    if target is not None:
        data = target[0].rollout(target[1], action, service)
        output.emit_json(data) if fmt == "json" else output.rollout_status(data)
        return
    client = client_for(file)
    if action == "status":
        data = client.get(f"/v1/services/{service}/rollout")
    else:
        data = client.post(f"/v1/services/{service}/rollout/{action}")
    output.emit_json(data) if fmt == "json" else output.rollout_status(data)


@cli.command()
@click.argument("path", required=False)
@manifest_options
@output_option("json")
def validate(path: str | None, file: str | None, engine: str | None, fmt: str, **opts: Any) -> None:
    """Check a manifest without running anything."""
    try:
        loaded = load(file, path)
    except ManifestError as exc:
        if fmt == "json":
            # Scripts and editors get the problems as data too; stderr and exit 2 as ever.
            output.emit_json({"valid": False, "file": str(manifest_path(file, path)),
                              "errors": [{"file": e.file, "line": e.line, "field": e.field,
                                          "message": e.message} for e in exc.errors]})
        raise
    m = loaded.manifest
    summary = {"valid": True, "file": str(loaded.path), "app": m.app,
               "services": sorted(m.services), "jobs": sorted(m.jobs)}
    if fmt == "json":
        output.emit_json(summary)
    else:
        click.echo(f"{loaded.path}: valid ({len(m.services)} services, {len(m.jobs)} jobs)")


@cli.command()
@click.argument("path", required=False)
@manifest_options
@click.option("-o", "--output-dir", "out_dir", type=click.Path(file_okay=False),
              help="Write one file per object here (default: print to stdout).")
@click.option("--version", "version", help="Kubernetes: the target version, e.g. 1.29.")
def render(path: str | None, file: str | None, engine: str | None, out_dir: str | None,
           version: str | None, **opts: Any) -> None:
    """Write the engine's manifests (Kubernetes YAML or a Swarm stack file)."""
    loaded = load(file, path)
    name = engine_name(file, engine, loaded)
    if name == "local":
        raise CliError("render needs --engine kubernetes or --engine swarm", 2)
    result = remote(name, dict(opts, engine=name, version=version)).render(
        loaded, Path(out_dir) if out_dir else None)
    if isinstance(result, str):
        click.echo(result, nl=False)
    else:
        for written in result:
            click.echo(str(written))


@cli.command()
def schema() -> None:
    """Print the manifest's JSON Schema (for editor autocompletion)."""
    from mso.spec.schema import json_schema
    click.echo(json.dumps(json_schema(), indent=2))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except ManifestError as exc:
        click.echo(f"mso: {exc}", err=True)
        sys.exit(2)
    except CliError as exc:
        click.echo(f"mso: {exc}", err=True)
        sys.exit(exc.exit_code)
    except DeployFailed as exc:
        output.failure_report(exc.failing)
        sys.exit(1)
    except RemoteEngineError as exc:
        click.echo(f"mso: {exc}", err=True)
        sys.exit(1)
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
