"""`mso new service`: a service from a template folder, added to mso.yaml.

A template is a folder (docs/templates.md): `template.yaml` holds the service's manifest
entry (and a description), `files/` what goes into the service's folder. Both are rendered
with Jinja2 (`StrictUndefined`: a misspelt variable is an error): `template.yaml` and
every file or folder name always, a file's content when its name ends in `.jinja` (the
suffix is dropped, as copier does); other files are copied byte for byte.

mso.yaml is edited by splicing: PyYAML's node marks say where `services:` and `routes:`
end, the new lines go there (indented as the file is), and every other byte stays as the
user wrote it, comments included; the result is validated before it is written.
"""

from __future__ import annotations

import json
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


def service_entry(template: Template, variables: dict[str, Any]) -> tuple[str, bool, str]:
    """The template's manifest entry for the service as YAML text (its comments and style
    kept, indented from column 0), whether it has an http port, and the description."""
    import yaml
    path = template.folder / "template.yaml"
    text = _render(_environment(), path.read_text(), str(path), variables)
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not valid YAML after rendering: {exc}", 2) from None
    node = _value(root, "service")
    if not isinstance(data, dict) or not isinstance(data.get("service"), dict) or not isinstance(
            node, yaml.MappingNode) or node.flow_style or not node.value:
        raise CliError(f"{path}: needs a `service:` block mapping (the service's entry in mso.yaml)", 2)
    lines = text.splitlines()[node.start_mark.line:_end_line(text, node, node.start_mark.column)]
    base = node.start_mark.column
    block = "".join((line[base:] if line[:base].strip() == "" else line.lstrip()) + "\n"
                    for line in lines)
    ports = data["service"].get("ports")
    return block, isinstance(ports, dict) and "http" in ports, str(data.get("description", ""))


def _value(root: Any, key: str) -> Any:
    import yaml
    if not isinstance(root, yaml.MappingNode):
        return None
    return next((v for k, v in root.value if getattr(k, "value", None) == key), None)


def _end_line(text: str, node: Any, column: int) -> int:
    """The line after `node`'s last line of content: its end mark, less the blank lines and
    the comments less indented than `column` (those belong to what follows)."""
    lines = text.splitlines()
    first: int = node.start_mark.line
    end: int = min(node.end_mark.line + (1 if node.end_mark.column > 0 else 0), len(lines))
    while end > first + 1:
        line = lines[end - 1]
        indent = len(line) - len(line.lstrip())
        if line.strip() and not (line.lstrip().startswith("#") and indent < column):
            break
        end -= 1
    return end


def _scalar(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9/_.-]+", text) else json.dumps(text)


def add_service(text: str, name: str, entry: str, route_path: str | None) -> str:
    """mso.yaml's text with `services.NAME` added (and a gateway route to it): the new
    lines are spliced in, every other byte stays as the user wrote it. The route goes
    before the first route whose path is a prefix of it (first match wins: `/NAME` must
    come before `/`), written like the routes around it."""
    import yaml
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:  # the manifest is validated first; this is a backstop
        raise CliError(f"cannot edit the manifest: {exc}", 2) from None
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise CliError("cannot edit the manifest: it is not a block mapping", 2)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    inserts: list[tuple[int, str]] = []
    services = _value(root, "services")
    top = next(k for k, _ in root.value).start_mark.column
    step = 2
    if isinstance(services, yaml.MappingNode) and services.value and not services.flow_style:
        if any(getattr(k, "value", None) == name for k, _ in services.value):
            raise CliError(f"the manifest already has a service {name!r}", 2)
        col = services.value[0][0].start_mark.column
        step = max(col - top, 1)
        at = _end_line(text, services, col)
        inserts.append((at, _indent(f"{name}:\n" + _indent(entry, step), col)))
    elif services is None or (isinstance(services, yaml.ScalarNode) and services.value in ("", "~", "null")) \
            or (isinstance(services, yaml.MappingNode) and not services.value):
        block = "services:\n" + _indent(f"{name}:\n" + _indent(entry, step), top + step)
        key = next((k for k, v in root.value if v is services), None) if services is not None else None
        if key is None:
            inserts.append((len(lines), _indent(block, top)))
        else:  # `services:`, `services: {}`: the line is replaced
            lines[key.start_mark.line] = _indent(block, top)
    else:
        raise CliError("cannot add to `services:` written in flow style ({...}); write it as "
                       "a block mapping first", 2)
    if route_path is not None:
        inserts.append(_route_insert(text, root, name, route_path, top, step))
    for at, block in sorted(inserts, key=lambda item: -item[0]):
        lines[at:at] = [block]
    return "".join(lines)


def _route_insert(text: str, root: Any, name: str, path: str, top: int, step: int) -> tuple[int, str]:
    import yaml
    routes = _value(root, "routes")
    lines = text.splitlines()
    flow_item = f"{{path: {_scalar(path)}, service: {name}}}"
    if isinstance(routes, yaml.SequenceNode) and routes.value and not routes.flow_style:
        items = routes.value
        index = next((i for i, r in enumerate(items) if isinstance(r, yaml.MappingNode)
                      and _prefix_of(str(_route_path(r)), path)), len(items))
        ref = items[min(index, len(items) - 1)]
        dash = lines[ref.start_mark.line][:ref.start_mark.column]
        at = ref.start_mark.line if index < len(items) else _end_line(text, routes, len(dash) - 2)
        if isinstance(ref, yaml.MappingNode) and ref.flow_style:
            return at, f"{dash}{flow_item}\n"
        return at, f"{dash}path: {_scalar(path)}\n{' ' * len(dash)}service: {name}\n"
    if routes is None:
        key_line = next(k for k, v in root.value if getattr(k, "value", None) == "services").start_mark.line \
            if _value(root, "services") is not None else len(text.splitlines())
        block = f"routes:\n{' ' * step}- path: {_scalar(path)}\n{' ' * (step + 2)}service: {name}\n\n"
        return key_line, _indent(block, top)
    raise CliError("cannot add a route to `routes:` written in flow style ([...]); write it "
                   "as a block sequence first, or pass --no-route", 2)


def _prefix_of(path: str, other: str) -> bool:
    return other == path or other.startswith(path.rstrip("/") + "/")


def _route_path(node: Any) -> Any:
    value = _value(node, "path")
    return getattr(value, "value", "/") if value is not None else "/"


def _indent(block: str, by: int) -> str:
    pad = " " * by
    return "".join(pad + line if line.strip() else line for line in block.splitlines(keepends=True))


def route_for(text: str, name: str) -> str:
    """`/` when no route claims it yet, else `/NAME`."""
    import yaml
    data = yaml.safe_load(text) or {}
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
    entry, has_http, description = service_entry(template, variables)
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
    import yaml
    data = yaml.safe_load(text) or {}
    return str(data.get("app", ""))
