"""Reading a Compose project: files with lines, `.env`, interpolation, `include`, `extends`.

Everything here follows the Compose Specification (compose-spec/compose-spec,
`spec.md`, `interpolation.md`, `include.md`, `extends.md`, `05-services.md`): the shell's
environment wins over `.env` beside the file; `${VAR}`, `$VAR`, `${VAR:-d}`, `${VAR-d}`,
`${VAR:?err}`, `${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}` and `$$`; an unset variable is
'' (and the importer reports it, as compose warns). Problems are `ManifestError`s naming
the file and line (exit 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mso.importers.result import Located
from mso.spec.envfile import parse_env_file
from mso.spec.errors import Loc, ManifestError
from mso.spec.interpolate import interpolate_tree
from mso.spec.yaml_loader import load_yaml

__all__ = ["Doc", "Project", "ServiceDef", "display_path", "load_project", "read_text"]

_BARE = re.compile(r"\$\$|\$([A-Za-z_][A-Za-z0-9_]*)")

# Sequences that compose's merge (extends, and several files) appends instead of replacing.
_APPENDED = {"ports", "expose", "secrets", "configs", "volumes", "env_file", "dns",
             "dns_search", "tmpfs", "cap_add", "cap_drop", "devices", "external_links",
             "links", "security_opt", "extra_hosts", "profiles"}
# Sequences that are really mappings, merged key by key.
_MAPPINGS = {"environment", "labels", "depends_on", "extra_hosts"}


def display_path(path: Path) -> str:
    """The path as the user will recognise it: relative to the current folder if below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_text(path: Path, display: str, what: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(display, None, "", f"{what} not found") from None
    except IsADirectoryError:
        raise ManifestError(display, None, "", f"is a directory, not a {what}") from None
    except OSError as exc:
        raise ManifestError(display, None, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(display, raw[:exc.start].count(b"\n") + 1, "", "not valid UTF-8 text") from None


class ComposeEnv(Mapping[str, str]):
    """Variables for interpolation with compose's rule: an unset `${VAR}` is '' (recorded
    in `unset` for the report), while `${VAR-default}` still sees it as unset."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.known = dict(values)
        self.unset: dict[str, tuple[str, int | None]] = {}
        self.used: set[str] = set()
        self._where: tuple[str, int | None] = ("", None)

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        if key in self.known:
            self.used.add(key)
            return self.known[key]
        self.unset.setdefault(key, self._where)
        return ""

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.known:
            self.used.add(key)
        return self.known.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.known)

    def __len__(self) -> int:
        return len(self.known)


@dataclass
class Doc(Located):
    """One compose file, loaded and interpolated."""

    data: dict[str, Any] = field(default_factory=dict)
    # files listed together in one `include: - path: [a, b]` (compose merges them)
    group: int | None = None


@dataclass
class ServiceDef:
    """A service after `extends`: its merged keys, and for each top-level key the file and
    path it was written at (for lines in the report)."""

    name: str
    doc: Doc
    data: dict[str, Any]
    origin: dict[str, tuple[Doc, Loc]] = field(default_factory=dict)

    def where(self, *path: str | int) -> tuple[Doc, int | None]:
        """The file and line of `services.NAME.<path>`."""
        if path and str(path[0]) in self.origin:
            doc, loc = self.origin[str(path[0])]
            return doc, doc.line((*loc, *path))
        return self.doc, self.doc.line(("services", self.name, *path))


@dataclass
class Project:
    main: Doc
    env: ComposeEnv
    services: dict[str, ServiceDef] = field(default_factory=dict)
    # top-level secrets/configs/networks/volumes by name: (file, definition)
    secrets: dict[str, tuple[Doc, Any]] = field(default_factory=dict)
    configs: dict[str, tuple[Doc, Any]] = field(default_factory=dict)
    docs: list[Doc] = field(default_factory=list)


def load_project(path: Path, environ: Mapping[str, str]) -> Project:
    """Read `path` and everything it includes, with interpolation; resolve `extends`."""
    path = Path(os.path.abspath(path))
    display = display_path(path)
    values: dict[str, str] = {}
    dotenv = path.parent / ".env"
    if dotenv.is_file():
        values.update(parse_env_file(read_text(dotenv, display_path(dotenv), "env file"),
                                     display_path(dotenv), environ))
    values.update(environ)  # the shell's environment wins over .env
    env = ComposeEnv(values)
    main = _load_doc(path, display, env)
    project = Project(main, env)
    _add_doc(project, main, [path])
    raw = {name: (doc, svc) for name, (doc, svc) in _raw_services(project).items()}
    for name in raw:
        project.services[name] = _resolve(name, raw[name][0], raw, env, [])
    return project


def _load_doc(path: Path, display: str, env: ComposeEnv) -> Doc:
    text = read_text(path, display, "compose file")
    if not text.strip():
        raise ManifestError(display, None, "", "the file is empty; a compose file needs `services:`")
    data, lines = load_yaml(text, display)
    if not isinstance(data, dict):
        raise ManifestError(display, lines.line_of(()), "", "the top level must be a mapping "
                            "(services:, ...)")
    data = _bare_vars(data)
    env._where = (display, None)
    data = interpolate_tree(data, env, display, lines)
    for name in list(env.unset):
        if env.unset[name][0] == display and env.unset[name][1] is None:
            env.unset[name] = (display, _first_use(text, name))
    return Doc(display, path, lines, data)


def _first_use(text: str, name: str) -> int | None:
    found = re.search(r"\$\{?" + re.escape(name) + r"\b", text)
    return text.count("\n", 0, found.start()) + 1 if found else None


def _bare_vars(value: Any) -> Any:
    """Compose also reads `$VAR` (mso's interpolation keeps a bare `$` for shells)."""
    if isinstance(value, str):
        return _BARE.sub(lambda m: m.group(0) if m.group(1) is None else "${" + m.group(1) + "}",
                         value)
    if isinstance(value, dict):
        return {k: _bare_vars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bare_vars(v) for v in value]
    return value


def _add_doc(project: Project, doc: Doc, stack: list[Path]) -> None:
    project.docs.append(doc)
    includes = doc.data.get("include") or []
    if not isinstance(includes, list):
        raise ManifestError(doc.display, doc.line(("include",)), "include",
                            "expected a list of files")
    for i, item in enumerate(includes):
        paths = item.get("path") if isinstance(item, dict) else item
        for rel in paths if isinstance(paths, list) else [paths]:
            if not isinstance(rel, str) or not rel:
                raise ManifestError(doc.display, doc.line(("include", i)), f"include.{i}",
                                    "expected a file path, or {path: FILE}")
            target = Path(os.path.normpath(doc.path.parent / rel))
            if target in stack:
                chain = " -> ".join(display_path(p) for p in [*stack[stack.index(target):], target])
                raise ManifestError(doc.display, doc.line(("include", i)), f"include.{i}",
                                    f"include cycle: {chain}")
            if not target.is_file():
                raise ManifestError(doc.display, doc.line(("include", i)), f"include.{i}",
                                    f"included file {rel!r} not found")
            child = _load_doc(target, display_path(target), project.env)
            if isinstance(paths, list) and len(paths) > 1:
                child.group = id(item)
            _add_doc(project, child, [*stack, target])
    for section in ("secrets", "configs"):
        table = getattr(project, section)
        for name, definition in (doc.data.get(section) or {}).items():
            if name in table and table[name][0] is not doc:
                raise ManifestError(doc.display, doc.line((section, name)), f"{section}.{name}",
                                    f"{section[:-1]} {name!r} is also defined in {table[name][0].display}")
            table[name] = (doc, definition)


def _raw_services(project: Project) -> dict[str, tuple[Doc, dict[str, Any]]]:
    out: dict[str, tuple[Doc, dict[str, Any]]] = {}
    for doc in project.docs:
        services = doc.data.get("services")
        if services is None:
            continue
        if not isinstance(services, dict):
            raise ManifestError(doc.display, doc.line(("services",)), "services",
                                "expected a mapping of service names to services")
        for name, svc in services.items():
            if name in out:
                other = out[name][0]
                why = (" (files listed together under one include `path:` are override files, "
                       "which mso import does not merge yet: merge them, or include one)"
                       if doc.group is not None and doc.group == other.group else "")
                raise ManifestError(doc.display, doc.line(("services", name)), f"services.{name}",
                                    f"service {name!r} is also defined in {other.display}{why}")
            if svc is None:
                svc = {}
            if not isinstance(svc, dict):
                raise ManifestError(doc.display, doc.line(("services", name)), f"services.{name}",
                                    "expected a mapping (image:, command:, ...)")
            out[name] = (doc, svc)
    if not out:
        raise ManifestError(project.main.display, project.main.line(()), "services",
                            "no services: a compose file needs at least one service")
    return out


def _resolve(name: str, doc: Doc, raw: dict[str, tuple[Doc, dict[str, Any]]],
             env: ComposeEnv, stack: list[tuple[Path, str]]) -> ServiceDef:
    """The service `name` of `doc` with its `extends` chain merged in."""
    svc = raw[name][1] if name in raw and raw[name][0] is doc else \
        (doc.data.get("services") or {}).get(name)
    if not isinstance(svc, dict):
        raise ManifestError(doc.display, doc.line(("services",)), f"services.{name}",
                            f"no service {name!r} in {doc.display}")
    origin: dict[str, tuple[Doc, Loc]] = {str(key): (doc, ("services", name)) for key in svc}
    here = ServiceDef(name, doc, dict(svc), origin)
    ext = svc.get("extends")
    if ext is None:
        return here
    loc: Loc = ("services", name, "extends")
    base_name = ext.get("service") if isinstance(ext, dict) else ext
    if not isinstance(base_name, str):
        raise ManifestError(doc.display, doc.line(loc), f"services.{name}.extends",
                            "expected a service name, or {service: NAME, file: FILE}")
    base_doc = doc
    if isinstance(ext, dict) and ext.get("file"):
        target = Path(os.path.normpath(doc.path.parent / str(ext["file"])))
        if not target.is_file():
            raise ManifestError(doc.display, doc.line((*loc, "file")), f"services.{name}.extends.file",
                                f"file {ext['file']!r} not found")
        base_doc = _load_doc(target, display_path(target), env)
    key = (base_doc.path, base_name)
    if key in stack or (base_doc is doc and base_name == name):
        chain = " -> ".join(n for _, n in [*stack, (doc.path, name), key])
        raise ManifestError(doc.display, doc.line(loc), f"services.{name}.extends",
                            f"extends cycle: {chain}")
    if base_doc is doc and base_name not in raw or \
            base_doc is not doc and base_name not in (base_doc.data.get("services") or {}):
        raise ManifestError(doc.display, doc.line(loc), f"services.{name}.extends",
                            f"unknown service {base_name!r}")
    if base_doc is not doc:
        raw = {n: (base_doc, s) for n, s in (base_doc.data.get("services") or {}).items()
               if isinstance(s, dict)}
    base = _resolve(base_name, base_doc, raw, env, [*stack, (doc.path, name)])
    merged = dict(base.data)
    merged_origin = dict(base.origin)
    for k, v in svc.items():
        if k == "extends":
            continue
        merged[k] = _merge(k, merged[k], v) if k in merged else v
        merged_origin[k] = (doc, ("services", name))
    merged.pop("extends", None)
    return ServiceDef(name, doc, merged, merged_origin)


def _merge(key: str, base: Any, over: Any) -> Any:
    if key in _MAPPINGS:
        return {**as_mapping(base), **as_mapping(over)}
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(k, out[k], v) if k in out else v
        return out
    if key in _APPENDED and isinstance(base, list) and isinstance(over, list):
        return [*base, *[v for v in over if v not in base]]
    return over


def as_mapping(value: Any) -> dict[str, Any]:
    """`environment`/`labels`/`depends_on` as a mapping (compose allows `KEY=VALUE` lists,
    and plain lists of names for depends_on)."""
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value or []:
        text = str(item)
        if "=" in text:
            k, _, v = text.partition("=")
            out[k] = v
        else:
            out[text] = None
    return out
