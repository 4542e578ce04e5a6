"""`LoadedManifest`: a validated manifest plus what it references on disk.

Secrets and file contents are read on demand (never at import or in `repr`), and an
error about them names the file, line and field but never contains a value.

`spec_hash(name)` identifies a release: it covers the service's normalized model
(command, image, ports and their order, probes, restart, stop, resources,
dependencies...), the effective environment (env files overlaid by `env`), config
file contents and a digest of secret values. It deliberately leaves out `replicas`,
`autoscale` and `rollout`: scaling, or changing *how* releases roll out, is not a new
release (as in Kubernetes, where the pod-template hash ignores them); nor `watch`, which
only tells `mso up --watch` what to do on a save.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mso.spec.envfile import parse_env_file
from mso.spec.errors import Loc, ManifestError, combine
from mso.spec.models import Job, Manifest, Service
from mso.spec.translate import locate
from mso.spec.yaml_loader import LineMap

__all__ = ["LoadedManifest"]

_NOT_IN_HASH = {"replicas", "autoscale", "rollout", "watch"}  # watch: development only


@dataclass(frozen=True, eq=False)
class LoadedManifest:
    manifest: Manifest
    path: Path
    """Absolute path of the manifest file."""
    base_dir: Path
    """The manifest's folder; relative paths resolve against it."""
    environ: Mapping[str, str] = field(repr=False)
    """Snapshot of the environment used for interpolation and `env:` secrets."""
    file: str = ""
    """The manifest path as the user gave it (used in error messages)."""
    data: Any = field(default=None, repr=False)
    lines: LineMap = field(default_factory=LineMap, repr=False)

    def field_line(self, field_path: str | Loc) -> int | None:
        """Source line of a dotted field path (or loc tuple), or of its closest ancestor."""
        loc: Loc = tuple(_segments(field_path)) if isinstance(field_path, str) else field_path
        return locate(self.data, self.lines, loc)

    def error(self, field_path: str, message: str) -> ManifestError:
        """A ManifestError located at `field_path` in this manifest (for later semantic checks)."""
        return ManifestError(self.file, self.field_line(field_path), field_path, message)

    def service_env(self, name: str) -> dict[str, str]:
        """env_file contents (in order) overlaid by `env`; works for services and jobs."""
        section, item = self._runnable(name)
        env: dict[str, str] = {}
        for i, rel in enumerate(item.env_file):
            where = f"{section}.{name}.env_file.{i}"
            path = self.base_dir / rel
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise self.error(where, f"env file {rel!r} not found") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise self.error(where, f"cannot read env file {rel!r}: {_reason(exc)}") from None
            env.update(parse_env_file(text, self._display(rel), self.environ))
        env.update(item.env)
        return env

    def secrets(self, name: str) -> dict[str, bytes]:
        """Secret values by secret name, read from files (relative to base_dir) or environ."""
        section, item = self._runnable(name)
        values: dict[str, bytes] = {}
        for secret_name, secret in item.secrets.items():
            where = f"{section}.{name}.secrets.{secret_name}"
            if secret.file is not None:
                try:
                    values[secret_name] = (self.base_dir / secret.file).read_bytes()
                except FileNotFoundError:
                    raise self.error(f"{where}.file", f"secret file {secret.file!r} not found") from None
                except OSError as exc:
                    raise self.error(f"{where}.file", f"cannot read secret file {secret.file!r}: {_reason(exc)}") from None
            elif secret.env is not None:
                if secret.env not in self.environ:
                    raise self.error(f"{where}.env", f"environment variable {secret.env} is not set")
                values[secret_name] = self.environ[secret.env].encode()
        return values

    def secret_env(self, name: str) -> dict[str, str]:
        """Env vars for secrets with `as_env` (one trailing newline of a file is dropped)."""
        section, item = self._runnable(name)
        values = self.secrets(name)
        out: dict[str, str] = {}
        for var, secret_name in item.secret_env_vars().items():
            try:
                text = values[secret_name].decode("utf-8")
            except UnicodeDecodeError:
                raise self.error(f"{section}.{name}.secrets.{secret_name}.as_env", "secret is not UTF-8 text") from None
            out[var] = text[:-1] if text.endswith("\n") else text
        return out

    def configs(self, name: str) -> list[tuple[str, bytes]]:
        """(target, content) of each config file of a service (jobs have none)."""
        section, item = self._runnable(name)
        if not isinstance(item, Service):
            return []
        out: list[tuple[str, bytes]] = []
        for i, cfg in enumerate(item.config):
            try:
                out.append((cfg.target, (self.base_dir / cfg.source).read_bytes()))
            except FileNotFoundError:
                raise self.error(f"{section}.{name}.config.{i}.source", f"config file {cfg.source!r} not found") from None
            except OSError as exc:
                raise self.error(f"{section}.{name}.config.{i}.source", f"cannot read {cfg.source!r}: {_reason(exc)}") from None
        return out

    def spec_hash(self, name: str) -> str:
        """sha256 hex (64 chars) of everything that makes a release; see the module docstring."""
        section, item = self._runnable(name)
        model = item.model_dump(mode="json", exclude=_NOT_IN_HASH if isinstance(item, Service) else None)
        if model.get("proxy", 0) is None:
            del model["proxy"]  # not written: the same hash as before the key existed
        payload = {
            "kind": section,
            "name": name,
            "model": model,
            # dict order is lost by sort_keys, but the first http port is PORT: keep it
            "port_order": list(item.ports) if isinstance(item, Service) else [],
            "env": self.service_env(name),
            "configs": [[target, _sha(content)] for target, content in self.configs(name)],
            "secrets": {key: _sha(value) for key, value in self.secrets(name).items()},
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def check_files(self) -> None:
        """Raise (all at once) if a referenced env file, secret, config or cwd is missing."""
        errors: list[ManifestError] = []
        for name in [*self.manifest.services, *self.manifest.jobs]:
            section, item = self._runnable(name)
            if item.cwd is not None:
                try:
                    found = (self.base_dir / item.cwd).is_dir()
                except OSError as exc:  # a name too long for the OS: is_dir() raises
                    errors.append(self.error(f"{section}.{name}.cwd", f"cannot use directory "
                                             f"{item.cwd[:60]!r}: {exc.strerror}"))
                else:
                    if not found:
                        errors.append(self.error(f"{section}.{name}.cwd",
                                                 f"directory {item.cwd!r} not found"))
            for check in (self.service_env, self.secrets, self.configs):
                try:
                    check(name)
                except ManifestError as exc:
                    errors.append(exc)
        errors.extend(e for e, fatal in self._tls_problems() if fatal)
        if errors:
            raise combine(errors)

    def tls_files(self) -> list[tuple[Path, Path]]:
        """Absolute (cert, key) paths of `gateway.tls`, the default certificate first."""
        tls = self.manifest.gateway.tls
        if tls is None:
            return []
        return [(self.base_dir / cert, self.base_dir / key) for cert, key, _ in tls.pairs()]

    def _tls_problems(self, now: datetime.datetime | None = None) -> list[tuple[ManifestError, bool]]:
        """(error, fatal) for each `gateway.tls` pair that cannot serve or expires soon."""
        tls = self.manifest.gateway.tls
        if tls is None:
            return []
        from mso.spec.certs import inspect_pair  # cryptography: only when TLS is used
        when = now or datetime.datetime.now(datetime.timezone.utc)
        out: list[tuple[ManifestError, bool]] = []
        for (cert, key), (_, _, where) in zip(self.tls_files(), tls.pairs()):
            try:
                info = inspect_pair(cert, key)
            except ValueError as exc:
                out.append((self.error(where, str(exc)), True))
                continue
            problem = info.expiry_problem(when)
            if problem is not None:
                fatal, message = problem
                out.append((self.error(f"{where}.cert", message if fatal
                                       else f"warning: {message}"), fatal))
        return out

    def tls_warnings(self, now: datetime.datetime | None = None) -> list[ManifestError]:
        """Certificates that expire within 14 days (mso.spec.certs.EXPIRY_WARNING)."""
        return [e for e, fatal in self._tls_problems(now) if not fatal]

    def command_warnings(self, path_env: str | None = None,
                         containers: bool = False) -> list[ManifestError]:
        """Commands that will not start as written: a program that is not on PATH (the
        PATH replicas inherit from mso, `path_env`) or a path that is not an executable
        file. Warnings, not errors: the program may be built or installed before `up`.
        With `containers` (Swarm, Kubernetes) services and jobs that run an `image:` or
        `build:` are not checked: their command runs inside the image."""
        search = os.environ.get("PATH", os.defpath) if path_env is None else path_env
        found: list[ManifestError] = self.tls_warnings()
        for name in [*self.manifest.services, *self.manifest.jobs]:
            section, item = self._runnable(name)
            run = item.run
            if not run or item.shell or not isinstance(run, list) \
                    or (containers and (item.image or item.build)):
                continue
            program = str(run[0])
            where = f"{section}.{name}.run.0"
            if "/" in program:
                target = (self.base_dir / (item.cwd or ".") / program).resolve()
                try:
                    target.stat()
                except FileNotFoundError:
                    pass
                except OSError as exc:  # a name too long, a loop of links...
                    found.append(self.error(where, f"warning: cannot check {program[:60]!r}: "
                                                   f"{exc.strerror}"))
                    continue
                if not target.exists():
                    found.append(self.error(where, f"warning: {program!r} does not exist "
                                                   f"(looked for {target})"))
                elif not target.is_file() or not os.access(target, os.X_OK):
                    found.append(self.error(where, f"warning: {program!r} is not an "
                                                   "executable file"))
            elif shutil.which(program, path=search) is None:
                hint = _closest_program(program, search)
                found.append(self.error(where, f"warning: command {program!r} not found on "
                                               "PATH" + (f" (did you mean {hint!r}?)"
                                                         if hint else "")))
        return found

    def _runnable(self, name: str) -> tuple[str, Service | Job]:
        if name in self.manifest.services:
            return "services", self.manifest.services[name]
        if name in self.manifest.jobs:
            return "jobs", self.manifest.jobs[name]
        raise ManifestError(self.file, None, "", f"no service or job named {name!r}")

    def _display(self, rel: str) -> str:
        return str(Path(self.file).parent / rel)


def _segments(dotted: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in dotted.split(".") if part]


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "not UTF-8 text"


def _closest_program(program: str, search: str) -> str | None:
    names: set[str] = set()
    for folder in search.split(os.pathsep):
        try:
            names.update(entry.name for entry in os.scandir(folder or "."))
        except OSError:
            continue
    close = difflib.get_close_matches(program, sorted(names), n=1, cutoff=0.8)
    return close[0] if close else None
