"""Procfile -> mso manifest (the Heroku/foreman format: `name: command` per line).

`web` gets an http port (it listens on `$PORT`, which mso gives every replica) and the
gateway's route `/`; `release` becomes a job that runs before every service, as Heroku's
release phase runs before the new release starts; every other process type is a service
without ports (a worker). Commands run through `/bin/sh -c`, as foreman runs them, so
`$PORT` and other variables are expanded by the shell.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mso.importers.report import Report
from mso.importers.result import Imported, rebase
from mso.importers.source import display_path, read_text
from mso.spec.envfile import matched_lines
from mso.spec.errors import ManifestError
from mso.spec.yaml_loader import LineMap

__all__ = ["import_procfile", "is_procfile"]

_LINE = re.compile(r"^([A-Za-z0-9_-]+)\s*:\s*(.*)$")
WEB_PORT = 5000  # foreman's and Heroku's first PORT


def is_procfile(path: Path) -> bool:
    return path.name == "Procfile" or path.name.startswith("Procfile.")


def import_procfile(path: Path, *, out_dir: Path | None = None) -> Imported:
    path = Path(os.path.abspath(path))
    display = display_path(path)
    text = read_text(path, display, "Procfile")
    out_dir = (out_dir or path.parent).resolve()
    report = Report()
    lines = LineMap()
    services: dict[str, dict[str, Any]] = {}
    jobs: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    routes: list[dict[str, Any]] = []
    cwd = rebase(".", path.parent, out_dir)
    if cwd is None:
        raise ManifestError(display, None, "", "the manifest must be written in the Procfile's "
                            "folder or a folder above it (its commands run there)")
    for number, match in matched_lines(text, _LINE, display, "expected `name: command`"):
        kind, command = match.group(1), match.group(2).strip()
        name = kind.lower().replace("_", "-").strip("-")
        if not command:
            raise ManifestError(display, number, kind, "the command is empty")
        if name in seen:
            raise ManifestError(display, number, kind, f"{kind!r} is also defined on line {seen[name]}")
        seen[name] = number
        item: dict[str, Any] = {"run": command, "shell": True}
        if cwd != ".":
            item["cwd"] = cwd
        if name == "release":
            jobs[name] = item
            lines.lines[("jobs", name)] = number
            report.add(display, number, kind, "translated", "jobs.release (before every service)",
                       "the release phase: runs once per release and must succeed before the "
                       "services start")
            continue
        if name == "web":
            item["ports"] = {"http": WEB_PORT}
            routes.append({"path": "/", "service": name})
            lines.lines[("routes", 0)] = number
            report.add(display, number, kind, "translated",
                       "services.web with ports.http and the gateway's route /",
                       "web listens on $PORT (each replica gets its own); the gateway on "
                       "127.0.0.1:8080 balances the replicas")
        else:
            report.add(display, number, kind, "translated", f"services.{name}",
                       "a process without ports (a worker)" + (
                           f"; renamed from {kind} (mso names are DNS labels)" if name != kind else ""))
        services[name] = item
        lines.lines[("services", name)] = number
    if not services:
        raise ManifestError(display, None, "", "no process types: a Procfile needs lines like "
                            "`web: python -m app`")
    if "release" in jobs:
        jobs["release"]["before"] = list(services)
    data: dict[str, Any] = {"app": re.sub(r"[^a-z0-9-]+", "-", path.parent.name.lower()).strip("-") or "app"}
    report.add(display, None, "", "note", f"app: {data['app']}", "the folder's name")
    if routes:
        data["routes"] = routes
    data["services"] = services
    if jobs:
        data["jobs"] = jobs
    lines.lines[("app",)] = 1
    return Imported(path, display, "procfile", data, lines, report)
