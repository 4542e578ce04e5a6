"""How the CLI shows things: tables for people (mso.cli.term), JSON and NDJSON for scripts."""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import stat
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import click
from mso.cli.term import Console, Table, escape

from mso.cli.client import ApiClient, CliError
from mso.spec.models import RateLimit

# Piped output is never squeezed into 80 columns: scripts and logs want whole lines.
console = Console()

STATE_STYLES = {"READY": "green", "RUNNING": "yellow", "STARTING": "yellow",
                "BACKOFF": "red", "FAILED": "bold red", "STOPPING": "magenta",
                "STOPPED": "dim", "EXITED": "dim", "PENDING": "dim"}


def exit_when_output_closes() -> None:
    """End a follower as soon as the reader of its piped output goes away.

    `mso logs -f | head -1` would otherwise run until the next line arrives and its write
    fails, which for a quiet service may be never (GNU `tail -f` watches its output the
    same way). A pipe's write end reports POLLERR once it has no reader; a watcher thread
    waits for that and ends the process: a follower has nothing left to write or save.
    """
    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):  # no real stdout (tests, embedding)
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, 0)  # no events asked: POLLERR and POLLHUP always wake it
        while True:
            for _fd, events in poller.poll():
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    os._exit(0)  # the exit status a failed write gives (BrokenPipeError)

    threading.Thread(target=watch, name="output-watch", daemon=True).start()


def count(n: int, noun: str) -> str:
    """"1 job", "2 jobs"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def emit(data: Any, fmt: str) -> None:
    """Structured output: `-o json` or `-o yaml` (the same document either way)."""
    if fmt == "yaml":
        import yaml  # only for -o yaml
        click.echo(yaml.safe_dump(json.loads(json.dumps(data, default=str)),
                                  sort_keys=False, allow_unicode=True), nl=False)
    else:
        emit_json(data)


def _table(*columns: str) -> Table:
    return Table(*columns)


def ps_table(data: dict[str, Any]) -> None:
    table = _table("SERVICE", "REPLICA", "RELEASE", "SUBSET", "STATE", "PID", "ADDRESS",
                   "RESTARTS", "REASON")
    # The reason is the one column people read to the end: never cut, folded (term.Table).
    if not data["replicas"] and data.get("offline"):
        console.print(f"[dim]{escape(data['offline'])}[/]")
        return
    for r in data["replicas"]:
        style = STATE_STYLES.get(r["state"], "")
        table.add_row(r["service"], r["replica"], str(r["release"]), r["subset"],
                      f"[{style}]{r['state']}[/]" if style else r["state"],
                      str(r["pid"] or "-"), r["address"] or "-", str(r["restarts"]),
                      escape(_reason(r)))
    console.print(table)
    for name, state in (data.get("jobs") or {}).items():
        console.print(f"job {name}: {state}")
    for name, why in (data.get("waiting") or {}).items():
        console.print(f"{name}: no replica yet, {why}")
    for name, scale in (data.get("autoscale") or {}).items():
        last = scale.get("last") or {}
        console.print(f"{name}: autoscaled {scale['min']}-{scale['max']}, "
                      f"{scale.get('replicas')} replica(s)"
                      + (f": {escape(str(last['reason']))}" if last.get("reason") else ""))
    drift(data.get("drift") or [])
    store = data.get("store") or {}
    if store and not store.get("writable", True):
        waiting = f"; {store['waiting_for']}" if store.get("waiting_for") else ""
        console.print(f"[red]state store not writable since "
                      f"{time.strftime('%H:%M:%S', time.localtime(store.get('since') or 0))}: "
                      f"{escape(str(store.get('error')))}{escape(waiting)}[/] (replicas keep "
                      f"running; events are held and written once the disk has room)")
    if data.get("offline"):
        console.print(f"[dim]{escape(data['offline'])}[/]")


def _reason(row: dict[str, Any]) -> str:
    problem = row.get("problem") or {}
    reason = str(row.get("reason") or "")
    if problem and problem.get("message") and problem["message"] not in reason:
        return f"{problem['kind']}: {problem['message']}"
    if problem:
        return f"{problem['kind']}: {reason}"
    return reason


def _hints(failing: list[dict[str, Any]]) -> list[str]:
    """What the usual cause of what was seen is, when the output makes it plain."""
    text = "\n".join(str(r.get("line", "")) for item in failing for r in item.get("logs") or [])
    text += "\n".join(str(item.get("reason", "")) for item in failing)
    hints = []
    lowered = text.lower()
    if "address already in use" in lowered or "eaddrinuse" in lowered:
        hints.append("'address already in use': does the service listen on a fixed port? "
                     "mso gives every replica its own port in $PORT (and PORT_<NAME> per "
                     "named port); listen on that")
    if "no such file or directory" in lowered and any(
            (item.get("problem") or {}).get("kind") == "start_failed" for item in failing):
        hints.append("the command is looked up on PATH and relative to the service's `cwd` "
                     "(default: the manifest's folder); `mso validate` warns about it")
    return hints


def endpoints_table(data: dict[str, Any]) -> None:
    conns = data.get("max_connections_per_client")
    console.print(f"gateway  http://{data['gateway']}/"
                  + (f"  (at most {conns} connections per client)" if conns else ""))
    console.print(f"metrics  {data['metrics']}")
    routes = data.get("routes") or []
    if routes:
        rtable = _table("ROUTE", "SERVICE", "LIMITS")
        for r in routes:
            rtable.add_row((r.get("host") or "") + (r.get("path") or "/"), r["service"],
                           escape(route_limits_text(r)) or "-")
        console.print(rtable)
    table = _table("SERVICE", "ADDRESS", "REPLICA", "ENDPOINT", "SUBSET", "WEIGHT", "READY")
    for name, svc in sorted(data["services"].items()):
        eps = svc["endpoints"] or [None]
        for i, ep in enumerate(eps):
            first = i == 0
            table.add_row(name if first else "", (svc["address"] or "-") if first else "",
                          ep["replica"] if ep else "-", ep["address"] if ep else "-",
                          ep["subset"] if ep else "-", str(ep["weight"]) if ep else "-",
                          ("[green]yes[/]" if ep["ready"] else "[red]no[/]") if ep else "-")
    console.print(table)


def releases_table(service: str, data: list[dict[str, Any]]) -> None:
    table = _table("RELEASE", "CREATED", "AUTHOR", "SPEC HASH", "OUTCOME", "CHANGE")
    for r in data:
        marker = " *" if r.get("current") else ""
        table.add_row(f"{r['number']}{marker}", r["created"], r["author"],
                      r["spec_hash"][:12], r["outcome"], r["change"])
    console.print(table)


def changes(items: list[dict[str, Any]]) -> None:
    for c in items:
        if c["created"]:
            console.print(f"{c['service']}: release {c['release']} ({c['change']})")
        elif c["change"] != "unchanged":
            console.print(f"{c['service']}: {c['change']}")
    if not any(c["created"] or c["change"] != "unchanged" for c in items):
        console.print("no changes")


def rollouts_started(client: ApiClient, changed: dict[str, int]) -> None:
    """After a deploy: which rollouts began, and how to follow them."""
    for service, release in changed.items():
        try:
            status = client.get(f"/v1/services/{service}/rollout")
        except CliError:
            continue
        if status.get("to_release") != release or status.get("phase") in (
                None, "Promoted", "RolledBack", "Failed"):
            continue
        console.print(f"{service}: {status['strategy']} rollout {status['from_release']} -> "
                      f"{release} started; `mso rollout status -w {service}` follows it")


def drift(items: list[dict[str, Any]]) -> None:
    for d in items:
        console.print(f"[yellow]{d['service']}: the manifest differs from running release "
                      f"{d['running']} ({escape(', '.join(d['changed']))}); "
                      f"{escape(d['note'])}[/]")


def since_epoch(value: str | None) -> float | None:
    if value is None:
        return None
    from mso.spec.units import parse_duration
    try:
        return time.time() - parse_duration(value)
    except ValueError as exc:
        raise CliError(f"--since: {exc}", 2) from exc


def _ts(value: Any) -> str:
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value).strftime("%H:%M:%S.%f")[:-3]
    return str(value)


def log_line(record: dict[str, Any]) -> str:
    stream = "!" if record.get("stream") == "stderr" else " "
    return f"{_ts(record.get('ts'))} {record.get('replica', '?'):<14}{stream} {record.get('line', '')}"


def failure_report(failing: list[dict[str, Any]], header: str | None = None) -> None:
    """Why a waiting command gave up, on stderr, the same on every engine: a header, then
    per failing replica `SERVICE REPLICA STATE: reason` and its last log lines, indented,
    then hints where the output makes the cause plain. `failing` items are `mso ps -o
    json` row fields plus `logs` (records of `mso logs -o json`): `DeployFailed.failing`
    (mso.engines.remote) or `StartupFailed.failing` (mso.cli.lifecycle)."""
    count = len(failing)
    if header is None:
        header = (f"stopped waiting: {count} replica{'s' if count != 1 else ''} "
                  f"{'have' if count != 1 else 'has'} a problem")
    click.echo(f"mso: {header}", err=True)
    for item in failing:
        problem = item.get("problem") or {}
        reason = problem.get("message") or item.get("reason") or ""
        click.echo(f"{item.get('service')} {item.get('replica')} {item.get('state')}: "
                   f"{reason}".rstrip(": "), err=True)
        records = item.get("logs") or []
        if not records:
            click.echo("    (no log lines)", err=True)
        for record in records:
            click.echo(f"    {log_line(record)}", err=True)
    for hint in _hints(failing):
        click.echo(f"hint: {hint}", err=True)
    click.echo("mso: more with `mso ps` and `mso logs SERVICE`", err=True)


def event_line(e: dict[str, Any]) -> str:
    who = e.get("replica") or e.get("service") or "mso"
    return f"{_ts(e['ts'])} {e['type']:<18} {who:<16} {e['message']}"


def print_events(records: Iterator[dict[str, Any]], follow: bool, fmt: str) -> None:
    """Events from a remote engine, shown as `events` shows the local engine's."""
    if fmt == "json" and not follow:
        emit_json(list(records))
        return
    for e in records:
        click.echo(json.dumps(e) if fmt != "table" else event_line(e))
        sys.stdout.flush()


def rollout_status(data: dict[str, Any]) -> None:
    """One rollout, showing only what applies to its strategy (see `_status` in
    mso.controllers.rollouts), then the ways forward."""
    if not data.get("strategy"):
        console.print(f"{data['service']}: no rollout yet")
        return
    strategy = data["strategy"]
    kind = "update" if strategy in ("rolling", "recreate") else "rollout"
    header = (f"[bold]{data['service']}[/]: {strategy} {kind} {data['from_release']} -> "
              f"{data['to_release']}  phase [bold]{data['phase']}[/]")
    if data.get("finished"):
        header += f"  (ended {_ts(data['finished'])[:8]})"
    console.print(header)
    if strategy in ("rolling", "recreate"):
        replicas = data.get("replicas") or {}
        if replicas.get("wanted"):
            console.print(f"  {replicas.get('updated', 0)} of {replicas['wanted']} replicas "
                          "updated")
    elif strategy == "blue_green":
        _blue_green_lines(data)
    else:
        _canary_lines(data)
    if data.get("reason"):
        console.print(f"  {escape(data['reason'])}")
    if strategy == "canary" or data.get("analysis"):  # blue/green: with `analysis.load`
        _analysis_lines(data, "preview" if strategy == "blue_green" else "canary")
    ways = data.get("next") or []
    if ways:
        console.print("  next:")
        for way in ways:
            console.print(f"    - {escape(way)}")


def _canary_lines(data: dict[str, Any]) -> None:
    step, steps = data.get("step"), data.get("steps")
    plan = data.get("plan") or []
    current = data.get("current_step")
    line = f"  weight {data.get('weight', 0)}%"
    if step and steps:
        line = f"  step {step}/{steps}" + (f": {current}" if current else "") + \
            f"  weight {data.get('weight', 0)}%"
    console.print(escape(line))
    if plan:
        marked = [f"[{n}. {text}]" if n == step and current else f"{n}. {text}"
                  for n, text in enumerate(plan, start=1)]
        console.print("  steps: " + escape(", ".join(marked)))


def _blue_green_lines(data: dict[str, Any]) -> None:
    port = data.get("preview_port")
    where = f" on port {port}" if port else ""
    promoted = data.get("promoted_at")
    if promoted is None:
        console.print(f"  preview: release {data['to_release']}{where}; not promoted")
        return
    line = f"  promoted {_ts(promoted)[:8]}; release {data['from_release']} "
    until = data.get("previous_until")
    if data.get("phase") in ("Progressing", "Paused") and until is not None:
        minutes, seconds = divmod(round(max(0.0, float(until) - time.time())), 60)
        left = f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
        line += f"kept until {_ts(until)[:8]} ({left} left) for `mso rollout abort`"
    else:
        line += f"was kept {float(data.get('keep_previous') or 0):g}s"
    console.print(escape(line))


def _analysis_lines(data: dict[str, Any], judged: str = "canary") -> None:
    analysis = data.get("analysis") or {}
    if analysis.get("stable") or analysis.get("canary"):
        table = _table("SUBSET", "REQUESTS", "ERRORS", "ERROR RATE", "P50 MS", "P99 MS")
        for name in ("stable", "canary"):
            sub = analysis.get(name) or {}
            label = judged if name == "canary" else name
            table.add_row(label, str(sub.get("requests", 0)), str(sub.get("errors", 0)),
                          f"{100 * float(sub.get('error_rate') or 0):.2f}%",
                          _num(sub.get("p50_ms")), _num(sub.get("p99_ms")))
        console.print(table)
    providers = [p for p in analysis.get("providers") or [] if p.get("kind") != "proxy"]
    if providers:
        table = _table("PROVIDER", "PHASE", "STABLE", "CANARY", "REASON")
        for p in providers:
            table.add_row(f"{p.get('name')} {p.get('target')}", str(p.get("phase") or "-"),
                          _value(p.get("stable_value")), _value(p.get("value")),
                          str(p.get("reason") or ""))
        console.print(table)
    verdict_reason = str(analysis.get("reason") or "")
    if analysis.get("verdict") and verdict_reason not in str(data.get("reason") or "") \
            and data.get("phase") != "Inconclusive":
        console.print(escape(f"  verdict: {analysis.get('verdict')}: {verdict_reason}"))
    thresholds = data.get("thresholds") or {}
    if thresholds:
        console.print("  thresholds: " + escape(", ".join(
            f"{k}={v}" for k, v in thresholds.items() if k != "providers")))


def _value(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


def print_records(records: Any, fmt: str) -> None:
    """Log records from any engine, as lines, JSON or NDJSON."""
    if fmt == "json":
        emit_json(list(records))
        return
    for record in records:
        click.echo(json.dumps(record) if fmt == "ndjson" else log_line(record))
        sys.stdout.flush()


def route_limits_text(route: dict[str, Any]) -> str:
    """A route's limits in one line: `rate 100/s, burst 50, by client; body ≤ 1Mi`."""
    parts = []
    raw = route.get("rate_limit")
    if raw:
        limit = RateLimit.model_validate(raw)
        parts.append(f"rate {_per(limit.rate)}, burst {limit.bucket_size()}, by {limit.by}")
    size = route.get("max_body_size")
    if size is not None:
        parts.append(f"body ≤ {_size(int(size))}")
    return "; ".join(parts)


def _per(rate: float) -> str:
    for unit, seconds in (("s", 1), ("m", 60), ("h", 3600)):
        n = rate * seconds
        if n >= 1 and abs(n - round(n)) < 1e-6:
            return f"{round(n)}/{unit}"
    return f"{rate:g}/s"


def _size(n: int) -> str:
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n} bytes"
