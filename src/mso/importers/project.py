"""`mso init` for a folder without a Procfile or compose file: a guess from `pyproject.toml`
or `package.json`.

These files say what a project is, not how to run it, so everything here is a guess and
every guess is reported (status `guessed`, with why) so the user can check it:

* pyproject.toml: a web framework among the dependencies (uvicorn/FastAPI/Starlette,
  Flask, Django's `manage.py`) gives a web service on `$PORT` with the gateway's route `/`;
  otherwise a package with `__main__.py` runs as `python3 -m PACKAGE`, or the first
  `[project.scripts]` entry point is called (`python3 -c "from M import F; F()"`, which
  needs no `pip install` of the project itself).
* package.json: `scripts.start` runs as `npm start`, else `main` (or `server.js`,
  `index.js`, `app.js`) as `node FILE`; a web framework among the dependencies (express,
  fastify, koa, ...) or a start script that mentions a server makes it a web service.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from mso.importers.report import Report
from mso.importers.result import Imported
from mso.importers.source import display_path, read_text
from mso.spec.errors import ManifestError
from mso.spec.yaml_loader import LineMap

__all__ = ["PROJECT_FILES", "import_package_json", "import_pyproject", "label"]

PROJECT_FILES = ("pyproject.toml", "package.json")
PYTHON_WEB_PORT = 8000
NODE_WEB_PORT = 3000
_NODE_WEB = {"express", "fastify", "koa", "@hapi/hapi", "hapi", "next", "@nestjs/core",
             "restify", "polka", "hono"}
_SKIP_DIRS = {"tests", "test", "docs", "build", "dist", ".venv", "venv", "node_modules",
              ".git", ".mso"}


def label(text: str, default: str = "app") -> str:
    """`text` as a DNS label (mso's names for apps and services)."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return out or default


def _line_of(text: str, pattern: str) -> int | None:
    match = re.search(pattern, text, re.M)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _dep_name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;@(]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _python_deps(project: dict[str, Any], doc: dict[str, Any]) -> set[str]:
    deps = {_dep_name(d) for d in project.get("dependencies", []) if isinstance(d, str)}
    poetry = doc.get("tool", {}).get("poetry", {}).get("dependencies", {})
    if isinstance(poetry, dict):
        deps.update(str(k).lower() for k in poetry)
    return deps


def _packages(folder: Path) -> list[tuple[str, Path]]:
    """(import name, folder the import works from): top-level packages, src layout too."""
    found = []
    for root in (folder, folder / "src"):
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if (child.is_dir() and child.name not in _SKIP_DIRS and child.name.isidentifier()
                    and (child / "__init__.py").is_file()):
                found.append((child.name, root))
    return found


def _asgi_module(folder: Path, packages: list[tuple[str, Path]], marker: str) -> tuple[str, Path] | None:
    """The module that creates the web app (`FastAPI(`, `Flask(`...): its dotted name and
    the folder it imports from."""
    candidates: list[tuple[str, Path, Path]] = [
        (name, folder / f"{name}.py", folder) for name in ("main", "app", "server", "api")]
    for pkg, root in packages:
        for name in ("main", "app", "server", "api", "__init__"):
            dotted = pkg if name == "__init__" else f"{pkg}.{name}"
            candidates.append((dotted, root / pkg / f"{name}.py", root))
    for dotted, file, root in candidates:
        try:
            if re.search(marker, file.read_text(errors="replace")):
                return dotted, root
        except OSError:
            continue
    return None


def _cwd(root: Path, folder: Path) -> dict[str, Any]:
    rel = root.relative_to(folder).as_posix()
    return {} if rel in ("", ".") else {"cwd": f"./{rel}"}


def import_pyproject(path: Path) -> Imported:
    path = path.absolute()
    display = display_path(path)
    text = read_text(path, display, "pyproject.toml")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ManifestError(display, int(line.group(1)) if line else None, "",
                            f"not valid TOML: {exc}") from None
    folder = path.parent
    report = Report()
    project = doc.get("project") if isinstance(doc.get("project"), dict) else {}
    assert isinstance(project, dict)
    name = label(str(project.get("name") or folder.name))
    deps = _python_deps(project, doc)
    packages = _packages(folder)
    deps_line = _line_of(text, r"^\s*dependencies\s*=")
    item: dict[str, Any] = {}
    web = False
    web_marker = None
    if deps & {"uvicorn", "fastapi", "starlette"}:
        web_marker = ("uvicorn", r"\b(FastAPI|Starlette)\s*\(")
    elif "flask" in deps:
        web_marker = ("flask", r"\bFlask\s*\(")
    if "django" in deps and (folder / "manage.py").is_file():
        item = {"run": "python3 manage.py runserver 0.0.0.0:$PORT --noreload", "shell": True}
        web = True
        report.add(display, deps_line, "dependencies: django", "guessed",
                   "services.{0}.run: python3 manage.py runserver".format(name),
                   "Django with manage.py; its development server on $PORT (use gunicorn in "
                   "production)")
    elif web_marker is not None:
        server, marker = web_marker
        found = _asgi_module(folder, packages, marker)
        if found is None:
            module, root = (packages[0][0], packages[0][1]) if packages else ("main", folder)
            why = f"no file creating the app was found: check `{module}:app`"
        else:
            module, root = found
            why = f"{module} creates the app"
        if server == "uvicorn":
            command = f"python3 -m uvicorn {module}:app --host 0.0.0.0 --port $PORT"
        else:
            command = f"python3 -m flask --app {module} run --host 0.0.0.0 --port $PORT"
        item = {"run": command, "shell": True, **_cwd(root, folder)}
        web = True
        report.add(display, deps_line, f"dependencies: {server}", "guessed",
                   f"services.{name}.run: {command}", why + "; it listens on $PORT, which mso "
                   "gives every replica")
    else:
        main = next(((pkg, root) for pkg, root in packages if (root / pkg / "__main__.py").is_file()),
                    None)
        scripts = project.get("scripts") if isinstance(project.get("scripts"), dict) else {}
        assert isinstance(scripts, dict)
        if main is not None:
            item = {"run": ["python3", "-m", main[0]], **_cwd(main[1], folder)}
            report.add(display, None, f"{main[0]}/__main__.py", "guessed",
                       f"services.{name}.run: python3 -m {main[0]}", "the package's __main__")
        elif scripts:
            script, target = next(iter(scripts.items()))
            module, _, func = str(target).partition(":")
            root = next((r for pkg, r in packages if pkg == module.split(".")[0]), folder)
            call = f"import sys; from {module} import {func or 'main'}; sys.exit({func or 'main'}())"
            item = {"run": ["python3", "-c", call], **_cwd(root, folder)}
            report.add(display, _line_of(text, rf"^\s*\"?{re.escape(script)}\"?\s*="),
                       f"project.scripts.{script}", "guessed",
                       f"services.{name}.run: python3 -c \"...{func or 'main'}()\"",
                       f"calls the entry point {target} (no `pip install .` of the project "
                       "needed; its dependencies must be installed)")
        else:
            raise ManifestError(display, None, "", "cannot guess how to run this project: no "
                                "web framework among its dependencies, no package with "
                                "__main__.py and no [project.scripts]; write mso.yaml by hand "
                                "(docs/manifest.md) or start from `mso new service`")
    return _imported(path, display, "pyproject", name, item, web, PYTHON_WEB_PORT, report)


def import_package_json(path: Path) -> Imported:
    path = path.absolute()
    display = display_path(path)
    text = read_text(path, display, "package.json")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(display, exc.lineno, "", f"not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise ManifestError(display, 1, "", "expected a JSON object")
    folder = path.parent
    report = Report()
    name = label(str(doc.get("name") or folder.name).split("/")[-1])
    scripts = doc.get("scripts") if isinstance(doc.get("scripts"), dict) else {}
    assert isinstance(scripts, dict)
    deps = {str(k) for section in ("dependencies", "devDependencies")
            if isinstance(doc.get(section), dict) for k in doc[section]}
    start = str(scripts.get("start", ""))
    item: dict[str, Any]
    if start:
        item = {"run": ["npm", "start"]}
        report.add(display, _line_of(text, r"\"start\"\s*:"), "scripts.start", "guessed",
                   f"services.{name}.run: npm start", f"runs `{start}`")
    else:
        main = doc.get("main") if isinstance(doc.get("main"), str) else None
        if main is None:
            main = next((f for f in ("server.js", "index.js", "app.js") if (folder / f).is_file()), None)
        if main is None:
            raise ManifestError(display, None, "", "cannot guess how to run this project: no "
                                "scripts.start, no main and no server.js/index.js/app.js")
        item = {"run": ["node", main]}
        report.add(display, _line_of(text, r"\"main\"\s*:"), "main" if doc.get("main") else main,
                   "guessed", f"services.{name}.run: node {main}",
                   "no scripts.start: the main file")
    web_deps = sorted(deps & _NODE_WEB)
    web = bool(web_deps) or bool(re.search(r"server|serve|listen", start))
    if web:
        report.add(display, _line_of(text, r"\"dependencies\"\s*:"), "dependencies", "guessed",
                   f"services.{name}.ports.http: {NODE_WEB_PORT} and the gateway's route /",
                   (f"{', '.join(web_deps)} is a web framework" if web_deps else
                    "the start script looks like a server")
                   + "; it must listen on process.env.PORT")
    return _imported(path, display, "package.json", name, item, web, NODE_WEB_PORT, report)


def _imported(path: Path, display: str, kind: Any, name: str, item: dict[str, Any], web: bool,
              port: int, report: Report) -> Imported:
    lines = LineMap()
    data: dict[str, Any] = {"app": label(path.parent.name)}
    report.add(display, None, "", "guessed", f"app: {data['app']}", "the folder's name")
    if web:
        item["ports"] = {"http": port}
        data["routes"] = [{"path": "/", "service": name}]
        if kind == "pyproject":
            report.add(display, None, "", "guessed",
                       f"services.{name}.ports.http and the gateway's route /",
                       "a web app; the gateway on 127.0.0.1:8080 balances its replicas")
    else:
        report.add(display, None, "", "guessed", f"services.{name} without ports",
                   "no web framework found: a worker")
    report.add(display, None, "", "note", None, "no health probes: add health.readiness "
               "(e.g. {http: /ready}) so rollouts wait for the app to be ready")
    data["services"] = {name: item}
    lines.lines[("app",)] = 1
    return Imported(path, display, kind, data, lines, report)
