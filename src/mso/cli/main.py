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
from mso.cli.lifecycle import down_app, follow_foreground, start_daemon, wait_ready
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


def require_local(engine: str | None, loaded: LoadedManifest | None = None) -> None:
    chosen = engine or (loaded.manifest.engine if loaded else "local")
    if chosen != "local":
        raise CliError(f"the {chosen} engine is not available in this version of mso; "
                       "use --engine local", 1)


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
       timeout: float, api_port: int | None) -> None:
    """Start the daemon and the app (PATH: a manifest or its folder)."""
    loaded = load(file, path)
    require_local(engine, loaded)
    paths = StatePaths.for_manifest(loaded.path)
    client = ApiClient(paths)
    if client.alive():
        changes = client.post("/v1/apply", {"manifest": str(loaded.path),
                                             "environ": dict(os.environ)})["changes"]
        output.changes(changes)
    else:
        start_daemon(paths, loaded.path, api_port)
    if detach:
        wait_ready(client, timeout)
        output.ps_table(client.get("/v1/ps"))
        gateway = loaded.manifest.gateway
        click.echo(f"gateway: http://{gateway.bind}:{gateway.port}/")
    else:
        follow_foreground(client)


@cli.command()
@manifest_options
def down(file: str | None, engine: str | None) -> None:
    """Stop everything, leaving no process behind."""
    require_local(engine)
    down_app(StatePaths.for_manifest(manifest_path(file)))


@cli.command()
@manifest_options
@output_option("json")
def deploy(file: str | None, engine: str | None, fmt: str) -> None:
    """Apply a changed manifest as new releases, with each service's rollout strategy."""
    loaded = load(file)
    require_local(engine, loaded)
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
def ps(file: str | None, engine: str | None, fmt: str) -> None:
    """Replicas and their state."""
    data = client_for(file).get("/v1/ps")
    output.emit_json(data) if fmt == "json" else output.ps_table(data)


@cli.command()
@manifest_options
@output_option("json")
def endpoints(file: str | None, engine: str | None, fmt: str) -> None:
    """Stable addresses, the gateway, and where each service routes."""
    data = client_for(file).get("/v1/endpoints")
    output.emit_json(data) if fmt == "json" else output.endpoints_table(data)


@cli.command()
@click.argument("service", required=False)
@streaming_manifest_options
@click.option("-f", "--follow", "follow", is_flag=True, help="Keep streaming new lines.")
@click.option("--since", help="Only lines newer than this (e.g. 10m, 1h).")
@click.option("--tail", type=int, help="Only the last N lines.")
@output_option("json", "ndjson")
def logs(service: str | None, file: str | None, engine: str | None, follow: bool,
         since: str | None, tail: int | None, fmt: str) -> None:
    """Logs of the app or of one service."""
    output.logs(client_for(file), service, follow, since, tail, fmt)


@cli.command()
@streaming_manifest_options
@click.option("-f", "--follow", "follow", is_flag=True, help="Keep streaming new events.")
@click.option("--service", help="Only this service's events.")
@click.option("--tail", type=int, default=200, show_default=True)
@output_option("json", "ndjson")
def events(file: str | None, engine: str | None, follow: bool, service: str | None,
           tail: int, fmt: str) -> None:
    """The event log: state changes, releases, jobs, drains."""
    output.events(client_for(file), service, follow, tail, fmt)


@cli.command()
@click.argument("assignment", metavar="SERVICE=N")
@manifest_options
def scale(assignment: str, file: str | None, engine: str | None) -> None:
    """Scale a service to N replicas."""
    name, sep, count = assignment.partition("=")
    if not sep or not count.isdigit():
        raise CliError(f"expected SERVICE=N, got {assignment!r}", 2)
    result = client_for(file).post(f"/v1/services/{name}/scale", {"replicas": int(count)})
    click.echo(f"{result['service']}: scaling to {result['replicas']}")


@cli.command()
@click.argument("service")
@manifest_options
def restart(service: str, file: str | None, engine: str | None) -> None:
    """Restart a service's replicas one by one, without downtime."""
    client_for(file).post(f"/v1/services/{service}/restart")
    click.echo(f"{service}: rolling restart started")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("service")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@manifest_options
def run(service: str, command: tuple[str, ...], file: str | None, engine: str | None) -> None:
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
def releases(service: str, file: str | None, engine: str | None, fmt: str) -> None:
    """Release history of a service."""
    data = client_for(file).get(f"/v1/services/{service}/releases")
    output.emit_json(data) if fmt == "json" else output.releases_table(service, data)


@cli.command()
@click.argument("service")
@manifest_options
@click.option("--to", "to", type=int, help="Release number (default: the previous one).")
def rollback(service: str, file: str | None, engine: str | None, to: int | None) -> None:
    """Roll a service back to an earlier release (as a new release)."""
    result = client_for(file).post(f"/v1/services/{service}/rollback", {"to": to})
    click.echo(f"{service}: rolling back as release {result['release']}")


@cli.command()
@click.argument("action", type=click.Choice(["status", "promote", "abort", "pause", "resume"]))
@click.argument("service")
@manifest_options
@output_option("json")
def rollout(action: str, service: str, file: str | None, engine: str | None, fmt: str) -> None:
    """Show or control a service's rollout: status|promote|abort|pause|resume."""
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
def validate(path: str | None, file: str | None, engine: str | None, fmt: str) -> None:
    """Check a manifest without running anything."""
    loaded = load(file, path)
    m = loaded.manifest
    summary = {"valid": True, "file": str(loaded.path), "app": m.app,
               "services": sorted(m.services), "jobs": sorted(m.jobs)}
    if fmt == "json":
        output.emit_json(summary)
    else:
        click.echo(f"{loaded.path}: valid ({len(m.services)} services, {len(m.jobs)} jobs)")


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
    except click.exceptions.Abort:
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
