"""`mso new service`: a service from a template folder, added to mso.yaml.

A template is a folder (docs/templates.md): `template.yaml` holds the service's manifest
entry (and a description), `files/` what goes into the service's folder. Both are rendered
with Jinja2 (`StrictUndefined`: a misspelt variable is an error): `template.yaml` and
every file or folder name always, a file's content when its name ends in `.jinja` (the
suffix is dropped, as copier does); other files are copied byte for byte.

mso.yaml is edited with ruamel.yaml's round-trip mode, so the user's comments, key order,
quoting and flow style stay as they were; the result is validated before it is written.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mso.cli.client import CliError

BUILTIN = ("python-http", "node-http", "worker")
SUFFIX = ".jinja"
DEFAULT_PORT = {"python-http": 8000, "node-http": 3000}
NEW_MANIFEST = """\
# The app's manifest; docs/manifest.md is the reference.
app: {app}

gateway:
  bind: 127.0.0.1
  port: 8080
"""


@dataclass
class Template:
    name: str
    folder: Path

    @property
    def files(self) -> Path:
        return self.folder / "files"


def find_template(spec: str) -> Template:
    """A built-in template by name, or a user's folder (`--template PATH`)."""
    if spec in BUILTIN:
        root = Path(str(resources.files("mso") / "templates" / spec))
        return Template(spec, root)
    folder = Path(spec)
    if not folder.is_dir():
        raise CliError(f"--template {spec}: not one of {', '.join(BUILTIN)} and not a folder", 2)
    if not (folder / "template.yaml").is_file():
        raise CliError(f"--template {spec}: a template folder needs template.yaml "
                       "(see docs/templates.md)", 2)
    return Template(folder.name, folder.resolve())


def _environment() -> Any:
    import jinja2
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)


def _render(env: Any, text: str, where: str, variables: dict[str, Any]) -> str:
    import jinja2
    try:
        return str(env.from_string(text).render(**variables))
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise CliError(f"{where}{f':{line}' if line else ''}: template error: {exc}", 2) from None


def render_files(template: Template, dest: Path, variables: dict[str, Any]) -> list[Path]:
    """Render the template's files/ into `dest` (which must not exist yet)."""
    env = _environment()
    written: list[Path] = []
    if not template.files.is_dir():
        raise CliError(f"{template.folder}: a template folder needs files/ (see docs/templates.md)", 2)
    for source in sorted(template.files.rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        rel = source.relative_to(template.files).as_posix()
        target_rel = _render(env, rel, str(source), variables)
        if target_rel.endswith(SUFFIX):
            target_rel = target_rel[:-len(SUFFIX)]
        target = dest / target_rel
        if dest.resolve() not in target.resolve().parents:
            raise CliError(f"{source}: renders to {target_rel}, outside the service's folder", 2)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.name.endswith(SUFFIX):
            target.write_text(_render(env, source.read_text(), str(source), variables))
        else:
            shutil.copyfile(source, target)
        shutil.copymode(source, target)
        written.append(target)
    return written


def service_entry(template: Template, variables: dict[str, Any]) -> tuple[Any, str]:
    """The template's manifest entry for the service (a ruamel mapping, its comments and
    flow style kept) and its description."""
    path = template.folder / "template.yaml"
    text = _render(_environment(), path.read_text(), str(path), variables)
    data = _yaml().load(text)
    if not isinstance(data, dict) or not isinstance(data.get("service"), dict):
        raise CliError(f"{path}: needs a `service:` mapping (the service's entry in mso.yaml)", 2)
    return data["service"], str(data.get("description", ""))


def _yaml() -> Any:
    from ruamel.yaml import YAML
    yaml = YAML()  # round-trip: comments, order, quotes and flow style are kept
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def add_service(text: str, name: str, entry: Any, route_path: str | None) -> str:
    """mso.yaml's text with `services.NAME` added (and a gateway route to it), everything
    else as the user wrote it. The route goes before the first route whose path is a
    prefix of it (first match wins: `/NAME` must come before `/`)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.util import load_yaml_guess_indent
    try:
        data, indent, block_seq = load_yaml_guess_indent(text)
    except Exception as exc:  # the manifest is validated first; this is a backstop
        raise CliError(f"cannot edit the manifest: {exc}", 2) from None
    yaml = _yaml()
    indent = indent or 2
    block_seq = 2 if block_seq is None else block_seq  # none yet: as docs/manifest.md writes them
    yaml.indent(mapping=indent, sequence=indent + block_seq, offset=block_seq)
    if not isinstance(data, dict):
        raise CliError("cannot edit the manifest: it is not a mapping", 2)
    if data.get("services") is None:
        data["services"] = CommentedMap()
    services = data["services"]
    if name in services:
        raise CliError(f"the manifest already has a service {name!r}", 2)
    services[name] = entry
    if route_path is not None:
        if data.get("routes") is None:
            data.insert(_before(data, "services"), "routes", CommentedSeq())
        routes = data["routes"]
        route = CommentedMap([("path", route_path), ("service", name)])
        first = next((r for r in routes if isinstance(r, CommentedMap)), None)
        if first is not None and first.fa.flow_style():
            route.fa.set_flow_style()  # as the user writes routes
        at = next((i for i, r in enumerate(routes) if isinstance(r, dict)
                   and _prefix_of(str(r.get("path", "/")), route_path)), len(routes))
        routes.insert(at, route)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _before(data: Any, key: str) -> int:
    keys = list(data)
    return keys.index(key) if key in keys else len(keys)


def _prefix_of(path: str, other: str) -> bool:
    return other == path or other.startswith(path.rstrip("/") + "/")


def route_for(text: str, name: str) -> str:
    """`/` when no route claims it yet, else `/NAME`."""
    from ruamel.yaml import YAML
    data = YAML(typ="safe").load(text) or {}
    paths = {str(r.get("path")) for r in data.get("routes") or [] if isinstance(r, dict)}
    return f"/{name}" if "/" in paths else "/"


def app_label(folder: Path) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", folder.name.lower()).strip("-")[:63].strip("-") or "app"


def new_service(manifest: Path, name: str, template_spec: str, port: int | None,
                route: str | None, no_route: bool, environ: dict[str, str]) -> tuple[list[Path], str, str | None]:
    """Create NAME/ beside the manifest from the template and add the service to it.
    Returns the files written, the template's description and the route added."""
    from mso.spec.errors import ManifestError
    from mso.spec.load import load_manifest
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise CliError(f"{name!r} is not a valid service name: lower-case letters, digits and "
                       "`-` (a DNS label, as every engine needs)", 2)
    template = find_template(template_spec)
    app_dir = manifest.parent
    created_manifest = not manifest.exists()
    text = NEW_MANIFEST.format(app=app_label(app_dir)) if created_manifest else manifest.read_text()
    if not created_manifest:
        load_manifest(manifest, environ, check_files=False)  # a broken manifest is not edited
    dest = app_dir / name
    if dest.exists():
        raise CliError(f"{dest} exists already: choose another name or remove it", 2)
    variables = {"name": name, "app": app_label(app_dir) if created_manifest else
                 _app_name(text), "port": port or DEFAULT_PORT.get(template.name, 8000),
                 "env_prefix": name.upper().replace("-", "_"), "template": template.name}
    entry, description = service_entry(template, variables)
    has_http = isinstance(entry.get("ports"), dict) and "http" in entry["ports"]
    path = None if no_route or not has_http else (route or route_for(text, name))
    new_text = add_service(text, name, entry, path)
    written = render_files(template, dest, variables)
    staged = manifest.with_name(f".{manifest.name}.new")
    try:
        staged.write_text(new_text)
        load_manifest(staged, environ, check_files=True)
        os.replace(staged, manifest)
    except ManifestError as exc:
        staged.unlink(missing_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        raise CliError(f"the service from template {template.name} does not validate, nothing "
                       f"was changed: {exc}", 2) from None
    except BaseException:
        staged.unlink(missing_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return written, description, path


def _app_name(text: str) -> str:
    from ruamel.yaml import YAML
    data = YAML(typ="safe").load(text) or {}
    return str(data.get("app", ""))
