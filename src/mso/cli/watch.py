"""`mso up --watch`: restart (or signal) a service when the files its `watch:` names change.

Where it runs: in the foreground `mso up`, not in the daemon. The watcher is a
`watchfiles` thread feeding a worker thread that calls the daemon's API (`restart` with a
strategy, `restart/settle`, `signal`), so the daemon stays a control plane that knows
nothing of a developer's editor, and the one place that shows what a save did (the
restart, its time, or the new replica's error and last log lines) is the terminal the
developer is looking at. `mso up -d --watch` is therefore refused: a detached watcher
would have nowhere to say why a save did not go live.

What a save does:

* Changes are debounced: a round starts once nothing changed for `DEBOUNCE` seconds
  (editors write a file in several steps; `git checkout` writes hundreds). Saves made while
  a round runs are coalesced into one more round after it, never one per save.
* A change under a path several services watch restarts each of them, in dependency
  order (a service after those it `depends_on`), one after the other.
* `restart` / `recreate`: the daemon replaces the replicas (rolling: a replacement is
  READY before an old replica stops, so the gateway never lacks one). When a replacement
  has a problem (crash loop, failed start, not listening, failing readiness: see
  mso.engines.problems) or is not READY within the service's `rollout.progress_deadline`,
  the restart is settled: the replacements are stopped, the old replicas keep serving, and
  the error with the replacement's last log lines is printed here.
* `{signal: SIGHUP}`: every replica gets the signal; nothing restarts.
* mso's own files (`.mso/`), VCS folders, byte code and editor temp files never count;
  the service's `ignore` globs neither.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from mso.cli.client import ApiClient, CliError
from mso.releases.sources import (IGNORED_DIRS, IGNORED_FILES, WatchRule, is_ignored,
                                  watched_roots)
from mso.spec.load import LoadedManifest

__all__ = ["IGNORED_DIRS", "IGNORED_FILES", "Coalescer", "WatchRule", "Watcher", "affected", "is_ignored", "restart_order",
           "rules_for", "start_watching"]

#: Seconds without a change before a round of restarts starts.
DEBOUNCE = 0.3

def rules_for(loaded: LoadedManifest) -> list[WatchRule]:
    """The services with `watch:`; a watched path that does not exist is an error at its
    file:line."""
    rules = []
    missing = []
    for name, service in loaded.manifest.services.items():
        watch = service.watch
        if watch is None:
            continue
        roots = []
        for i, (rel, path) in enumerate(watched_roots(loaded, name)):
            if not path.exists():
                where = f"services.{name}.watch.paths.{i}" if watch.paths else f"services.{name}.watch"
                missing.append(loaded.error(where, f"{rel!r} does not exist; nothing to watch"))
            roots.append(path)
        if isinstance(watch.action, str):
            rules.append(WatchRule(name, tuple(roots), tuple(watch.ignore), watch.action,
                                   base=loaded.base_dir.resolve()))
        else:
            rules.append(WatchRule(name, tuple(roots), tuple(watch.ignore), "signal",
                                   watch.action.signal, base=loaded.base_dir.resolve()))
    if missing:
        from mso.spec.errors import combine
        raise combine(missing)
    return rules


def affected(rules: Iterable[WatchRule], paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Service -> the changed files that concern it (in the order given)."""
    out: dict[str, list[Path]] = {}
    paths = list(paths)
    for rule in rules:
        for path in paths:
            for root in rule.roots:
                if (path == root or root in path.parents) and not is_ignored(rule, root, path):
                    out.setdefault(rule.service, []).append(path)
                    break
    return out


def restart_order(services: Iterable[str], depends_on: Mapping[str, Iterable[str]]) -> list[str]:
    """`services` with each one after those it depends on (directly or not), otherwise in
    the order given. `depends_on`: every service's dependencies (the manifest has no cycle)."""
    wanted = list(dict.fromkeys(services))
    chosen = set(wanted)
    done: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in depends_on.get(name, ()):
            visit(dep)
        if name in chosen:
            done.append(name)

    for name in wanted:
        visit(name)
    return done


class Coalescer:
    """Collects the services that changed and hands them out as one batch once nothing
    changed for `quiet` seconds. What arrives while a batch is being acted on becomes the
    next batch: one more round, however many saves it was."""

    def __init__(self, quiet: float = DEBOUNCE, clock: Callable[[], float] = time.monotonic):
        self.quiet = quiet
        self.clock = clock
        self.pending: dict[str, list[Path]] = {}
        self._last = 0.0

    def add(self, changes: dict[str, list[Path]]) -> None:
        if not changes:
            return
        for service, paths in changes.items():
            known = self.pending.setdefault(service, [])
            known.extend(p for p in paths if p not in known)
        self._last = self.clock()

    def wait(self) -> float | None:
        """Seconds until a batch is due (None: nothing pending)."""
        if not self.pending:
            return None
        return max(0.0, self._last + self.quiet - self.clock())

    def take(self) -> dict[str, list[Path]]:
        """The batch when due, else {}."""
        if not self.pending or self.clock() - self._last < self.quiet:
            return {}
        batch, self.pending = self.pending, {}
        return batch


class Watcher:
    """The watching thread (watchfiles) and the worker acting on the daemon's API."""

    def __init__(self, loaded: LoadedManifest, client: ApiClient, rules: list[WatchRule],
                 say: Callable[[str], None] = lambda line: click.echo(line, err=True)) -> None:
        self.loaded = loaded
        self.client = ApiClient(client.paths)
        self.rules = rules
        self.say = say
        self.depends_on = {n: list(s.depends_on) for n, s in loaded.manifest.services.items()}
        self.deadlines = {n: s.rollout.progress_deadline
                          for n, s in loaded.manifest.services.items()}
        self._stop = threading.Event()
        self._changes: queue.Queue[dict[str, list[Path]]] = queue.Queue()
        self._threads = [threading.Thread(target=self._watch, name="watch-files", daemon=True),
                         threading.Thread(target=self._work, name="watch-work", daemon=True)]

    def start(self) -> Watcher:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (a round under way ends at its next look); may be called again."""
        if self._stop.is_set():
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.client.close()

    # -- threads ------------------------------------------------------------------------
    def _watch(self) -> None:
        import watchfiles
        # A file is watched through its folder: an editor's atomic save (write a temp
        # file, rename it over) replaces the inode a watch on the file itself would follow.
        roots = sorted({str(root if root.is_dir() else root.parent)
                        for rule in self.rules for root in rule.roots})
        try:
            for changes in watchfiles.watch(*roots, watch_filter=None, stop_event=self._stop,
                                            debounce=DEBOUNCE_MAX_MS, step=STEP_MS,
                                            rust_timeout=500, yield_on_timeout=False,
                                            raise_interrupt=False):
                found = affected(self.rules, [Path(p) for _, p in changes])
                if found:
                    self._changes.put(found)
        except Exception as exc:  # the app keeps running; say why saves do nothing now
            self.say(f"mso watch: stopped watching files: {exc}")

    def _work(self) -> None:
        coalescer = Coalescer()
        while not self._stop.is_set():
            timeout = coalescer.wait()
            try:
                coalescer.add(self._changes.get(timeout=0.5 if timeout is None else timeout))
                continue  # keep collecting until quiet
            except queue.Empty:
                pass
            batch = coalescer.take()
            if batch:
                try:
                    self.run_round(batch)
                except CliError as exc:
                    self.say(f"mso watch: {exc}")
                except Exception as exc:  # the next save must still be acted on
                    self.say(f"mso watch: this round failed: {type(exc).__name__}: {exc}")

    # -- one round ----------------------------------------------------------------------
    def run_round(self, batch: dict[str, list[Path]]) -> None:
        """Act on every service of `batch`, in dependency order, one after the other."""
        by_name = {rule.service: rule for rule in self.rules}
        for service in restart_order(batch, self.depends_on):
            if self._stop.is_set():
                return
            rule = by_name[service]
            what = self._describe(batch[service])
            if rule.action == "signal":
                sent = self.client.post(f"/v1/services/{service}/signal",
                                        {"signal": rule.signal})
                self.say(f"mso watch: {service}: {what} changed; {rule.signal} sent to "
                         f"{sent['replicas']} replica(s)")
                continue
            self.restart(service, rule.action, what)

    def restart(self, service: str, action: str, what: str) -> bool:
        """Restart `service` and wait until its replacements are READY (True), or settle
        the restart when one fails, keeping the old replicas serving (False)."""
        began, wall = time.monotonic(), time.time()
        body = {"strategy": "recreate"} if action == "recreate" else None
        answer = self.client.post(f"/v1/services/{service}/restart", body)
        generation = answer["generation"]
        self.say(f"mso watch: {service}: {what} changed; {answer['strategy']} restart")
        deadline = began + self.deadlines.get(service, 600.0)
        while not self._stop.is_set():
            rows = self._rows(service)
            fresh = [r for r in rows if r["generation"] == generation]
            failing = [r for r in fresh if r.get("problem")]
            if not failing and time.monotonic() >= deadline:
                failing = [r for r in fresh if r["state"] != "READY"]
            if failing:
                self._report(service, failing, wall)
                return False
            if rows and len(fresh) == len(rows) and all(r["state"] == "READY" for r in rows):
                self.say(f"mso watch: {service}: restarted in {time.monotonic() - began:.1f}s")
                return True
            self._stop.wait(0.1)  # polls the daemon for a condition
        return False

    def _report(self, service: str, failing: list[dict[str, Any]], since: float) -> None:
        from mso.cli.lifecycle import _with_logs
        from mso.cli.output import failure_report
        reason = "; ".join(f"{r['replica']} {r['state']}: "
                           f"{(r.get('problem') or {}).get('message') or r.get('reason') or ''}"
                           for r in failing)
        stopped = self.client.post(f"/v1/services/{service}/restart/settle",
                                   {"reason": reason[:2000]})["stopped"]
        failure_report(_with_logs(self.client, failing, since),
                       header=f"watch: {service}: the new replica is not READY; restart "
                              f"settled ({stopped} replacement(s) stopped), the old replicas "
                              "keep serving")
        self.say(f"mso watch: {service}: fix it and save again")

    def _rows(self, service: str) -> list[dict[str, Any]]:
        return [r for r in self.client.get("/v1/ps")["replicas"]
                if r["service"] == service and not r["draining"]]

    def _describe(self, paths: list[Path]) -> str:
        base = self.loaded.base_dir.resolve()
        names = []
        for path in paths[:3]:
            try:
                names.append(path.relative_to(base).as_posix())
            except ValueError:
                names.append(str(path))
        more = f" (+{len(paths) - 3} more)" if len(paths) > 3 else ""
        return ", ".join(names) + more


#: watchfiles' own grouping: yield once nothing changed for STEP_MS (at most
#: DEBOUNCE_MAX_MS after the first change); the Coalescer then waits for DEBOUNCE.
STEP_MS = 50
DEBOUNCE_MAX_MS = 1600


def start_watching(loaded: LoadedManifest, client: ApiClient) -> Watcher | None:
    """Start watching the manifest's `watch:` paths (None, with a note, when no service
    has one)."""
    rules = rules_for(loaded)
    if not rules:
        click.echo("mso: --watch: no service has `watch:`; nothing to watch "
                   "(docs/manifest.md, `watch`)", err=True)
        return None
    for rule in rules:
        paths = ", ".join(str(p) for p in rule.roots)
        what = f"signal {rule.signal}" if rule.action == "signal" else rule.action
        click.echo(f"mso: watching {paths} for {rule.service} ({what})", err=True)
    return Watcher(loaded, client, rules).start()
