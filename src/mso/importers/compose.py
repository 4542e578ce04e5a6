"""Compose file -> mso manifest, key by key, each key reported (docs/import.md).

The reading (files, `.env`, interpolation, `include`, `extends`) is `mso.importers.source`;
this module decides what each service key becomes. Choices where compose and mso differ:

* `ports` publish on the host; mso has one entry point, its gateway. The first service
  with published http ports gets the route `/` and the gateway takes its first published
  port; every other one gets a route by Host (`<service>.localhost`). Published tcp ports
  and `expose` become named ports reached through the service's stable address.
* A service another one waits for with `service_completed_successfully` is a one-shot
  task: it becomes a job with `before:` those services.
* A `healthcheck` command becomes an `exec` readiness probe (`start_period` a startup probe).
* `deploy.update_config` maps to a rolling update (`order: start-first` surges,
  `stop-first` takes down first); services without it get mso's default (rolling).
* Services whose `profiles` are not enabled are left out (compose does not start them).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mso.importers.report import Report, Status
from mso.importers.result import Imported, rebase
from mso.importers.source import Doc, Project, ServiceDef, as_mapping, load_project
from mso.spec.errors import Loc, ManifestError
from mso.spec.graph import find_cycle
from mso.spec.units import parse_duration
from mso.spec.yaml_loader import LineMap

__all__ = ["COMPOSE_NAMES", "import_compose"]

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")

_CONDITIONS = {"service_started": "started", "service_healthy": "healthy",
               "service_completed_successfully": "completed"}
# Container ports that are almost never HTTP: they become tcp ports (no gateway route).
_TCP_PORTS = {21, 22, 25, 53, 110, 143, 389, 443, 1433, 1521, 2181, 3306, 4222, 5432, 5672,
              6379, 6380, 7000, 7001, 9042, 9092, 9093, 11211, 26257, 27017, 28015}
_CONTAINER_ONLY = ("a container setting; mso runs each replica as a process "
                   "(the embedded engine) or as a container it configures itself")
# Service keys with nothing to carry over, and why.
_DROPPED = {
    "container_name": "mso names replicas itself (`mso ps`)",
    "hostname": "dependents reach a service by its stable address (<SERVICE>_URL/_HOST/_PORT)",
    "domainname": "dependents reach a service by its stable address",
    "networks": "mso connects services itself: every dependency gets <SERVICE>_URL/_HOST/_PORT "
                "pointing at the service's stable address; named networks do not exist",
    "network_mode": "mso connects services itself (stable addresses on its proxy)",
    "links": "dependents reach a service by its stable address (<SERVICE>_URL)",
    "external_links": "dependents reach a service by its stable address (<SERVICE>_URL)",
    "extra_hosts": _CONTAINER_ONLY,
    "dns": _CONTAINER_ONLY, "dns_search": _CONTAINER_ONLY, "dns_opt": _CONTAINER_ONLY,
    "privileged": "mso never runs replicas privileged",
    "cap_add": _CONTAINER_ONLY, "cap_drop": _CONTAINER_ONLY,
    "security_opt": _CONTAINER_ONLY, "userns_mode": _CONTAINER_ONLY, "user": _CONTAINER_ONLY,
    "group_add": _CONTAINER_ONLY, "devices": _CONTAINER_ONLY, "device_cgroup_rules": _CONTAINER_ONLY,
    "ipc": _CONTAINER_ONLY, "pid": _CONTAINER_ONLY, "uts": _CONTAINER_ONLY,
    "cgroup": _CONTAINER_ONLY, "cgroup_parent": _CONTAINER_ONLY, "isolation": _CONTAINER_ONLY,
    "init": _CONTAINER_ONLY, "runtime": _CONTAINER_ONLY, "platform": _CONTAINER_ONLY,
    "shm_size": _CONTAINER_ONLY, "sysctls": _CONTAINER_ONLY, "ulimits": _CONTAINER_ONLY,
    "tmpfs": _CONTAINER_ONLY, "read_only": _CONTAINER_ONLY, "stdin_open": _CONTAINER_ONLY,
    "tty": _CONTAINER_ONLY, "mac_address": _CONTAINER_ONLY, "oom_kill_disable": _CONTAINER_ONLY,
    "oom_score_adj": _CONTAINER_ONLY, "storage_opt": _CONTAINER_ONLY, "gpus": _CONTAINER_ONLY,
    "volumes": "replicas run in the compose file's folder (their `cwd`) and keep data in "
               "$MSO_DATA_DIR, which survives restarts; mso mounts no volumes",
    "volumes_from": "mso mounts no volumes",
    "working_dir": "a path inside the container; replicas run in the compose file's folder",
    "labels": "mso labels what it creates itself",
    "annotations": "mso labels what it creates itself",
    "logging": "mso captures every replica's output (`mso logs`)",
    "pull_policy": "mso builds or runs the image as the engine does",
    "scale": None,  # handled
    "cpu_count": _CONTAINER_ONLY, "cpu_percent": _CONTAINER_ONLY, "cpu_shares": _CONTAINER_ONLY,
    "cpu_period": _CONTAINER_ONLY, "cpu_quota": _CONTAINER_ONLY, "cpu_rt_runtime": _CONTAINER_ONLY,
    "cpu_rt_period": _CONTAINER_ONLY, "cpuset": _CONTAINER_ONLY, "mem_reservation": _CONTAINER_ONLY,
    "memswap_limit": _CONTAINER_ONLY, "mem_swappiness": _CONTAINER_ONLY, "blkio_config": _CONTAINER_ONLY,
    "pids_limit": _CONTAINER_ONLY, "credential_spec": _CONTAINER_ONLY, "attach": _CONTAINER_ONLY,
    "develop": None,  # handled: develop.watch becomes `watch:`
    "post_start": _CONTAINER_ONLY, "pre_stop": _CONTAINER_ONLY, "use_api_socket": _CONTAINER_ONLY,
    "models": "not supported by mso", "provider": "not supported by mso",
}
_TOP_DROPPED = {
    "version": "obsolete in the Compose Specification",
    "networks": "mso connects services itself (stable addresses on its proxy); named networks "
                "do not exist",
    "volumes": "mso mounts no volumes; replicas keep data in $MSO_DATA_DIR",
    "models": "not supported by mso",
}


def import_compose(path: Path, environ: Mapping[str, str], *, out_dir: Path | None = None,
                   profiles: tuple[str, ...] = ()) -> Imported:
    """Translate the compose file at `path`; the manifest will live in `out_dir` (default:
    the compose file's folder), which its relative paths are written against."""
    project = load_project(path, environ)
    if not profiles:  # as compose: COMPOSE_PROFILES=a,b
        profiles = tuple(p.strip() for p in environ.get("COMPOSE_PROFILES", "").split(",") if p.strip())
    translator = _Translator(project, out_dir or project.main.path.parent, set(profiles))
    return translator.run()


def _app_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "app"


def _port_name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:15].strip("-") or "port"


class _Translator:
    def __init__(self, project: Project, out_dir: Path, profiles: set[str]) -> None:
        self.p = project
        self.main = project.main
        self.out_dir = Path(out_dir).resolve()
        self.profiles = profiles
        self.report = Report()
        self.lines = LineMap()
        self.services: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.routes: list[dict[str, Any]] = []
        self.route_lines: list[int] = []
        self.gateway: dict[str, Any] = {}
        self.blockers: list[str] = []
        self.not_imported: dict[str, Any] = {}
        self.dropped: set[str] = set()  # services left out (nothing to run)
        self.app = "app"

    # -- bookkeeping --------------------------------------------------------------------
    def note(self, svc: ServiceDef, path: tuple[str | int, ...], status: Status,
             to: str | None = None, reason: str | None = None) -> None:
        doc, line = svc.where(*path)
        key = ".".join(str(p) for p in ("services", svc.name, *path))
        self.report.add(doc.display, line, key, status, to, reason)
        if to and status in ("kept", "translated") and to.startswith(("services.", "jobs.")) \
                and doc is self.main and line is not None:
            # what the key became points back at it: a later validation error has its line
            target = to.split(" ")[0].split(":")[0]
            loc = tuple(int(p) if p.isdigit() else p for p in target.split("."))
            self.lines.lines.setdefault(loc, line)

    def top(self, doc: Doc, loc: Loc, status: Status, to: str | None = None,
            reason: str | None = None) -> None:
        self.report.add(doc.display, doc.line(loc), ".".join(str(p) for p in loc), status, to, reason)

    def mark(self, out_loc: Loc, svc: ServiceDef, path: tuple[str | int, ...]) -> None:
        """Remember the source line of an mso key (errors then point at the compose file)."""
        doc, line = svc.where(*path)
        if doc is self.main and line is not None:
            self.lines.lines.setdefault(out_loc, line)

    def error(self, svc: ServiceDef, path: tuple[str | int, ...], message: str) -> ManifestError:
        doc, line = svc.where(*path)
        return ManifestError(doc.display, line, ".".join(str(p) for p in ("services", svc.name, *path)),
                             message)

    def path(self, svc: ServiceDef, rel: str) -> str | None:
        doc, _ = svc.where()
        return rebase(rel, doc.path.parent, self.out_dir)

    # -- the whole file -----------------------------------------------------------------
    def run(self) -> Imported:
        main = self.main
        self._top_level()
        enabled = self._enabled()
        self._check_graph(enabled)
        jobs = self._one_shots(enabled)
        self.dropped = {n for n, svc in enabled.items()
                        if not svc.data.get("command") and not svc.data.get("entrypoint")
                        and (n in jobs or not (svc.data.get("image") or svc.data.get("build")))}
        for name, svc in enabled.items():
            try:
                self._service(svc, enabled, jobs)
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                # a value of the wrong kind (`replicas: many`, `retries: [3]`): the service's line
                raise self.error(svc, (), f"cannot read this service: {type(exc).__name__}: {exc}") from None
        for name, svc in self.p.services.items():
            if name not in enabled:
                wanted = ", ".join(svc.data.get("profiles") or [])
                self.note(svc, ("profiles",), "dropped", None,
                          f"profile {wanted} is not enabled, so compose would not start it "
                          f"either; import with --profile {wanted.split(', ')[0]} to include it")
        keep = [i for i, r in enumerate(self.routes) if r["service"] not in self.dropped]
        self.routes = [self.routes[i] for i in keep]
        self.route_lines = [self.route_lines[i] for i in keep]
        if not self.routes:
            self.gateway = {}
        self._drop_dangling()
        data: dict[str, Any] = {"app": self.app}
        if self.gateway:
            data["gateway"] = self.gateway
        if self.routes:
            # First match wins: the Host routes go before the catch-all `/`.
            order = sorted(range(len(self.routes)), key=lambda i: "host" not in self.routes[i])
            data["routes"] = [self.routes[i] for i in order]
            for n, i in enumerate(order):
                self.lines.lines[("routes", n)] = self.route_lines[i]
        data["services"] = self.services
        if self.jobs:
            data["jobs"] = self.jobs
        for var, (file, line) in sorted(self.p.env.unset.items()):
            self.report.add(file, line, f"${{{var}}}", "note", "''",
                            "the variable is not set (in the environment or .env); compose "
                            "substitutes an empty string, and so did the import")
        used = sorted(v for v in self.p.env.used)
        if used:
            self.report.add(main.display, None, "interpolation", "translated",
                            "values written into the manifest",
                            f"interpolated at import time from the environment and .env: "
                            f"{', '.join(used)}; import again after changing them")
        return Imported(main.path, main.display, "compose", data, self.lines, self.report,
                        self.blockers, self.not_imported)

    def _top_level(self) -> None:
        main = self.main
        name = main.data.get("name")
        if isinstance(name, str) and name:
            self.app = _app_name(name)
            self.top(main, ("name",), "translated", f"app: {self.app}")
        else:
            self.app = _app_name(main.path.parent.name)
            self.report.add(main.display, None, "name", "note", f"app: {self.app}",
                            "no `name:`: the folder's name, as compose's project name")
        self.lines.lines[("app",)] = main.line(("name",)) or 1
        for doc in self.p.docs:
            for key in doc.data:
                loc: Loc = (key,)
                if key in ("services", "name", "secrets", "configs"):
                    continue
                if key == "include":
                    self.top(doc, loc, "translated", "merged into this manifest",
                             "the included files' services, secrets and configs are imported")
                elif str(key).startswith("x-"):
                    self.top(doc, loc, "dropped", None, "an extension field (x-): no meaning to "
                             "compose either; its anchors were applied where used")
                elif key in _TOP_DROPPED:
                    self.top(doc, loc, "dropped", None, _TOP_DROPPED[key])
                else:
                    self.top(doc, loc, "dropped", None, "not a Compose Specification key mso knows")

    def _enabled(self) -> dict[str, ServiceDef]:
        out = {}
        for name, svc in self.p.services.items():
            wanted = svc.data.get("profiles")
            if wanted and not (set(map(str, wanted)) & self.profiles) and "*" not in self.profiles:
                continue
            out[name] = svc
        return out

    def _deps(self, svc: ServiceDef) -> dict[str, Any]:
        raw = svc.data.get("depends_on")
        if raw is None:
            return {}
        if not isinstance(raw, (dict, list)):
            raise self.error(svc, ("depends_on",), "expected a list of services or a mapping")
        return as_mapping(raw)

    @staticmethod
    def _dep_path(svc: ServiceDef, dep: str) -> tuple[str | int, ...]:
        """Where `dep` is written in the service's depends_on (a list item, or a key)."""
        raw = svc.data.get("depends_on")
        if isinstance(raw, list) and dep in raw:
            return ("depends_on", raw.index(dep))
        return ("depends_on", dep)

    def _check_graph(self, enabled: dict[str, ServiceDef]) -> None:
        edges: dict[str, list[str]] = {}
        for name, svc in self.p.services.items():
            for dep in self._deps(svc):
                if dep == name:
                    raise self.error(svc, self._dep_path(svc, dep), f"{name!r} depends on itself")
                if dep not in self.p.services:
                    known = ", ".join(self.p.services)
                    raise self.error(svc, self._dep_path(svc, dep),
                                     f"unknown service {dep!r} (defined: {known})")
            edges[name] = list(self._deps(svc))
        for name, svc in enabled.items():
            for dep in self._deps(svc):
                if dep not in enabled:
                    wanted = ", ".join(map(str, self.p.services[dep].data.get("profiles") or []))
                    raise self.error(svc, self._dep_path(svc, dep), f"{dep!r} is not enabled "
                                     f"(profiles: {wanted}), so this dependency cannot be met; "
                                     f"import with --profile {wanted.split(', ')[0]}")
        cycle = find_cycle(edges)
        if cycle is not None:
            first = self.p.services[cycle[0]]
            raise self.error(first, self._dep_path(first, cycle[1 % len(cycle)]),
                             "dependency cycle: " + " -> ".join([*cycle, cycle[0]]))

    def _condition(self, svc: ServiceDef, dep: str, spec: Any) -> str:
        if spec is None:
            return "started"
        if not isinstance(spec, dict):
            raise self.error(svc, self._dep_path(svc, dep), "expected {condition: ...}")
        cond = spec.get("condition", "service_started")
        if cond not in _CONDITIONS:
            raise self.error(svc, ("depends_on", dep, "condition"),
                             f"unknown condition {cond!r} (one of {', '.join(_CONDITIONS)})")
        return _CONDITIONS[cond]

    def _one_shots(self, enabled: dict[str, ServiceDef]) -> dict[str, list[str]]:
        """Services waited for with service_completed_successfully -> who waits for them."""
        out: dict[str, list[str]] = {}
        for name, svc in enabled.items():
            for dep, spec in self._deps(svc).items():
                if dep in enabled and self._condition(svc, dep, spec) == "completed":
                    out.setdefault(dep, []).append(name)
        return out

    def _drop_dangling(self) -> None:
        """Dependencies on services that were left out (profiles, image-only)."""
        for section in (self.services, self.jobs):
            for name, item in section.items():
                for dep in list(item.get("depends_on") or {}):
                    if dep not in self.services and dep not in self.jobs:
                        del item["depends_on"][dep]
                        self.note(self.p.services[name], self._dep_path(self.p.services[name], dep), "dropped", None,
                                  f"{dep!r} is not in the manifest (see its entry)")
                if "depends_on" in item and not item["depends_on"]:
                    del item["depends_on"]
                if "before" in item:
                    item["before"] = [b for b in item["before"] if b in self.services]
                    if not item["before"]:
                        del item["before"]

    # -- one service --------------------------------------------------------------------
    def _service(self, svc: ServiceDef, enabled: dict[str, ServiceDef],
                 jobs: dict[str, list[str]]) -> None:
        name = svc.name
        if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name) or len(name) > 63:
            raise self.error(svc, (), f"service name {name!r} is not a DNS label (lower-case "
                                      "letters, digits and '-'), which mso needs on every engine")
        is_job = name in jobs
        section = "jobs" if is_job else "services"
        out: dict[str, Any] = {}
        base: Loc = (section, name)
        self.lines.lines[base] = svc.where()[1] or 1
        handled: set[str] = set()

        def take(key: str) -> Any:
            handled.add(key)
            return svc.data.get(key)

        run = self._command(svc, take("entrypoint"), take("command"))
        image = take("image")
        build = take("build")
        if run is None and image is None and build is None:
            self.dropped.add(name)
            why = "no command, no image and no build: nothing to run"
            self.note(svc, (), "dropped", None, why + "; give it `command:` to import it")
            self.blockers.append(f"{name}: has no command, image or build")
            self.not_imported[name] = {k: v for k, v in svc.data.items() if k in ("image", "build")}
            return
        if run is not None:
            out["run"] = run
            self.mark((*base, "run"), svc, ("command",) if "command" in svc.data else ("entrypoint",))
        if image is not None:
            out["image"] = str(image)
            self.note(svc, ("image",), "kept", f"{section}.{name}.image",
                      "used on Swarm and Kubernetes; the embedded engine runs `run:` as a process"
                      if run is not None else "no command: the image's own command runs, as a "
                      "container on every engine" + (" (once, before its dependents)" if is_job
                      else " (one per replica on the embedded engine)"))
        if build is not None:
            self._build(svc, out, build)
        if "run" in out and (cwd := rebase(".", svc.where()[0].path.parent, self.out_dir)):
            if cwd != ".":  # (a container runs in its image's WORKDIR: no cwd)
                out["cwd"] = cwd
        self._environment(svc, out, take("environment"))
        self._env_file(svc, out, take("env_file"))
        self._secrets(svc, out, take("secrets"))
        deps = take("depends_on")
        if deps is not None:
            self._depends_on(svc, out, enabled, jobs, is_job)
        if is_job:
            out["before"] = [n for n in jobs[name] if n not in jobs]
            self.note(svc, (), "translated", f"jobs.{name} with before: {', '.join(jobs[name])}",
                      "waited for with service_completed_successfully: a one-shot task, run "
                      "once per release before those services start")
            for key in svc.data:
                if key not in handled and key not in ("profiles", "extends"):
                    self._other(svc, key, job=True)
            self.jobs[name] = out
            return
        self._ports(svc, out, take("ports"), take("expose"))
        self._configs(svc, out, take("configs"))
        self._health(svc, out, take("healthcheck"))
        self._restart(svc, out, take("restart"))
        self._stop(svc, out, take("stop_signal"), take("stop_grace_period"))
        self._deploy(svc, out, take("deploy"), take("scale"))
        self._develop(svc, out, take("develop"))
        for key in svc.data:
            if key not in handled and key not in ("profiles", "extends"):
                self._other(svc, key, job=False)
        self.services[name] = out

    def _other(self, svc: ServiceDef, key: str, job: bool) -> None:
        if key.startswith("x-"):
            self.note(svc, (key,), "dropped", None, "an extension field (x-)")
        elif job and key in ("ports", "expose", "healthcheck", "deploy", "restart", "stop_signal",
                             "stop_grace_period", "configs", "scale"):
            self.note(svc, (key,), "dropped", None, "the service runs once, as a job; jobs have no "
                      "ports, probes, replicas, restarts or config files")
        elif _DROPPED.get(key):
            self.note(svc, (key,), "dropped", None, _DROPPED[key])
        else:
            self.note(svc, (key,), "dropped", None, "not a Compose Specification key mso knows")

    def _command(self, svc: ServiceDef, entrypoint: Any, command: Any) -> list[str] | None:
        def argv(value: Any, key: str) -> list[str] | None:
            if value is None:
                return None
            if isinstance(value, str):
                try:
                    return shlex.split(value)
                except ValueError as exc:
                    raise self.error(svc, (key,), f"cannot split the command: {exc}") from None
            if isinstance(value, list):
                return [str(v) for v in value]
            raise self.error(svc, (key,), "expected a string or a list")
        head, tail = argv(entrypoint, "entrypoint"), argv(command, "command")
        run = [*(head or []), *(tail or [])]
        for key, value in (("entrypoint", head), ("command", tail)):
            if value is not None:
                self.note(svc, (key,), "translated", f"services.{svc.name}.run",
                          "as an argv list (compose splits a string command the same way, "
                          "without a shell)" + ("; entrypoint then command" if head else ""))
        if head is not None and tail is None and svc.data.get("image"):
            self.note(svc, ("entrypoint",), "note", None, "the image's own CMD is not appended "
                      "(mso does not know it); add `command:` if the entrypoint needs arguments")
        return run or None

    def _build(self, svc: ServiceDef, out: dict[str, Any], build: Any) -> None:
        spec = {"context": build} if isinstance(build, str) else dict(build or {})
        result: dict[str, Any] = {}
        for key, value in spec.items():
            if key == "context":
                rel = self.path(svc, str(value))
                if rel is None:
                    self.note(svc, ("build", key), "dropped", None, f"{value!r} is outside the "
                              "manifest's folder; mso paths stay inside it")
                    continue
                result["context"] = rel
            elif key == "dockerfile":
                result["dockerfile"] = str(value)
            elif key == "args":
                result["args"] = {k: "" if v is None else str(v) for k, v in as_mapping(value).items()}
            elif key == "target":
                result["target"] = str(value)
            else:
                self.note(svc, ("build", key), "dropped", None, "mso builds with the context, "
                          "dockerfile, args and target only")
                continue
            self.note(svc, ("build", key), "kept", f"services.{svc.name}.build.{key}",
                      "used on Swarm and Kubernetes")
        if result:
            out["build"] = result

    def _environment(self, svc: ServiceDef, out: dict[str, Any], env: Any) -> None:
        if env is None:
            return
        values: dict[str, str] = {}
        for key, value in as_mapping(env).items():
            if value is None:
                found = self.p.env.known.get(key)
                if found is None:
                    self.note(svc, ("environment", key), "dropped", None,
                              f"no value, and {key} is not set where mso import ran (compose "
                              "leaves it unset too)")
                    continue
                value = found
                self.note(svc, ("environment", key), "translated", f"services.{svc.name}.env.{key}",
                          "the value of the variable where mso import ran")
            if key.startswith("MSO_"):
                self.note(svc, ("environment", key), "dropped", None, "MSO_* names are set by mso")
                continue
            values[key] = "true" if value is True else "false" if value is False else str(value)
            self.mark(("services", svc.name, "env", key), svc, ("environment", key))
        if values:
            out["env"] = values
            self.note(svc, ("environment",), "kept", f"services.{svc.name}.env")
            self._hostnames(svc, values)

    def _hostnames(self, svc: ServiceDef, values: dict[str, str]) -> None:
        """Compose apps reach each other by service name (`redis://redis:6379`); on the
        local engine a dependency is at its stable address, given as <DEP>_URL/_HOST/_PORT."""
        deps = self._deps(svc)
        for key, value in values.items():
            for dep in self.p.services:
                if dep == svc.name or not re.search(rf"(?:^|//|@){re.escape(dep)}(?=[:/]|$)", value):
                    continue
                var = dep.upper().replace("-", "_")
                text = (f"names {dep!r} as a host, which does not resolve on the local engine: "
                        f"replicas reach {dep} at its stable address, ${var}_HOST:${var}_PORT "
                        f"(${var}_URL)")
                if dep not in deps:
                    text += f", which mso sets for dependencies: add {dep} to depends_on"
                if key in (f"{var}_URL", f"{var}_HOST", f"{var}_PORT"):
                    text += f"; this value replaces the {key} mso would set: leave it out"
                self.note(svc, ("environment", key), "note", None,
                          text + "; the program must build its address from them")

    def _env_file(self, svc: ServiceDef, out: dict[str, Any], env_file: Any) -> None:
        if env_file is None:
            return
        files: list[str] = []
        for i, item in enumerate(env_file if isinstance(env_file, list) else [env_file]):
            rel = item.get("path") if isinstance(item, dict) else item
            required = item.get("required", True) if isinstance(item, dict) else True
            doc, _ = svc.where("env_file")
            exists = (doc.path.parent / str(rel)).is_file()
            target = self.path(svc, str(rel))
            where = ("env_file", i) if isinstance(env_file, list) else ("env_file",)
            if not exists and not required:
                self.note(svc, where, "dropped", None, f"{rel} does not exist and is not required")
            elif target is None:
                self.note(svc, where, "dropped", None, f"{rel!r} is outside the manifest's folder; "
                          "mso paths stay inside it (move the file, or import with -o in a folder above)")
            else:
                files.append(target)
                self.note(svc, where, "kept", f"services.{svc.name}.env_file")
        if files:
            out["env_file"] = files

    def _secrets(self, svc: ServiceDef, out: dict[str, Any], secrets: Any) -> None:
        if secrets is None:
            return
        result: dict[str, Any] = {}
        for i, item in enumerate(secrets):
            source = item.get("source") if isinstance(item, dict) else item
            target = str(item.get("target") or source) if isinstance(item, dict) else str(source)
            target = target.rsplit("/", 1)[-1]
            found = self.p.secrets.get(str(source))
            if found is None:
                raise self.error(svc, ("secrets", i), f"unknown secret {source!r} (not in the "
                                 "top-level secrets:)")
            doc, definition = found
            definition = definition or {}
            if definition.get("file"):
                rel = rebase(str(definition["file"]), doc.path.parent, self.out_dir)
                if rel is None:
                    self.note(svc, ("secrets", i), "dropped", None, f"its file {definition['file']!r} "
                              "is outside the manifest's folder; mso paths stay inside it")
                    continue
                result[target] = {"file": rel}
            elif definition.get("environment"):
                result[target] = {"env": str(definition["environment"])}
            else:
                why = "external: managed outside compose" if definition.get("external") \
                    else "no file or environment"
                self.note(svc, ("secrets", i), "dropped", None, f"secret {source!r} has {why}; "
                          "give mso the value with {file: PATH} or {env: VAR}")
                continue
            self.note(svc, ("secrets", i), "translated", f"services.{svc.name}.secrets.{target}",
                      f"a 0400 file $MSO_SECRETS/{target} (compose: /run/secrets/{target})")
        if result:
            out["secrets"] = result

    def _depends_on(self, svc: ServiceDef, out: dict[str, Any], enabled: dict[str, ServiceDef],
                    jobs: dict[str, list[str]], is_job: bool) -> None:
        result: dict[str, str] = {}
        for dep, spec in self._deps(svc).items():
            cond = self._condition(svc, dep, spec)
            if dep in self.dropped:
                self.note(svc, self._dep_path(svc, dep), "dropped", None,
                          f"{dep!r} is not imported (see its entry)")
                continue
            if dep in jobs and is_job:
                result[dep] = "completed"
                self.note(svc, self._dep_path(svc, dep), "translated",
                          f"jobs.{svc.name}.depends_on.{dep}: completed")
                continue
            if dep in jobs:
                self.note(svc, self._dep_path(svc, dep), "translated", f"jobs.{dep}.before",
                          f"{dep} is a one-shot job that runs before {svc.name}")
                continue
            if isinstance(spec, dict):
                for extra in spec:
                    if extra not in ("condition",):
                        self.note(svc, ("depends_on", dep, extra), "dropped", None,
                                  "mso restarts dependents only when their release changes"
                                  if extra == "restart" else "every dependency is required in mso")
            if cond == "completed":
                cond = "started"  # unreachable for enabled services (they became jobs)
            result[dep] = cond
            self.mark(((("jobs" if is_job else "services"), svc.name, "depends_on", dep)), svc,
                      self._dep_path(svc, dep))
            self.note(svc, self._dep_path(svc, dep), "translated",
                      f"{'jobs' if is_job else 'services'}.{svc.name}.depends_on.{dep}: {cond}",
                      f"the dependent also gets {dep.upper().replace('-', '_')}_URL/_HOST/_PORT")
        if result:
            out["depends_on"] = result

    def _ports(self, svc: ServiceDef, out: dict[str, Any], ports: Any, expose: Any) -> None:
        named: dict[str, dict[str, Any]] = {}
        by_target: dict[int, str] = {}
        published: list[tuple[str, int | None, str | None, int]] = []  # name, host port, ip, index
        for i, item in enumerate(ports or []):
            for target, host, ip, proto, app_proto, label in self._parse_port(svc, i, item):
                if proto != "tcp":
                    self.note(svc, ("ports", i), "dropped", None, f"{proto}: mso proxies tcp and http only")
                    continue
                name = self._add_port(named, by_target, target, app_proto, label)
                published.append((name, host, ip, i))
        for i, item in enumerate(expose or []):
            text = str(item).split("/")[0]
            for target in _port_range(text):
                name = self._add_port(named, by_target, target, None, None)
                self.note(svc, ("expose", i), "translated", f"services.{svc.name}.ports.{name}",
                          "an internal port: dependents reach it at the service's stable address")
        if not named:
            return
        if out.get("run") is not None:
            self.note(svc, ("ports",) if ports else ("expose",), "note", None,
                      "on the local engine each replica listens on its own $PORT (and "
                      "PORT_<NAME> per port), not on the compose port: a program bound to a "
                      "fixed port must read PORT")
        out["ports"] = {n: spec["port"] if spec["protocol"] == "http"
                        else {"port": spec["port"], "protocol": "tcp"} for n, spec in named.items()}
        routed: set[str] = set()
        for name, host, ip, i in published:
            protocol = named[name]["protocol"]
            guess = "" if named[name]["given"] else " (assumed from the port number; " \
                "write app_protocol: http or tcp in the long syntax to choose)"
            if protocol != "http":
                self.note(svc, ("ports", i), "translated", f"services.{svc.name}.ports.{name} (tcp)",
                          "a tcp port is reached at the service's stable address (`mso "
                          f"endpoints`), not on a host port; only http goes through the gateway{guess}")
                continue
            if name in routed:
                continue
            routed.add(name)
            first_http = next(n for n, spec in named.items() if spec["protocol"] == "http")
            self._route(svc, name, host, ip, i, guess, name != first_http)

    def _route(self, svc: ServiceDef, port: str, host: int | None, ip: str | None, index: int,
               guess: str, named_port: bool) -> None:
        first = not self.routes
        route: dict[str, Any] = {"path": "/", "service": svc.name}
        if not first:
            route = {"path": "/", "host": f"{svc.name}.localhost", "service": svc.name}
        if named_port:
            route["port"] = port
            route["host"] = f"{port}.{svc.name}.localhost"
        self.routes.append(route)
        self.route_lines.append(svc.where("ports", index)[1] or 1)
        if first:
            self.gateway = {"port": host if host else 8080}
            if ip and ip not in ("0.0.0.0", "::"):
                self.gateway = {"bind": ip, **self.gateway}
            self.lines.lines[("gateway",)] = svc.where("ports", index)[1] or 1
            where = f"the gateway on {ip or '127.0.0.1'}:{self.gateway['port']}"
            how = "route / "
            bind_note = "" if ip else "; the gateway binds 127.0.0.1 (compose published on every " \
                "interface: write gateway.bind: 0.0.0.0 for that)"
        else:
            where = f"the gateway's port, Host {svc.name}.localhost"
            how = f"route Host {svc.name}.localhost "
            bind_note = f"; compose published it on host port {host}" if host else ""
        self.note(svc, ("ports", index), "translated",
                  f"services.{svc.name}.ports.{port} + {how}(gateway)",
                  f"reached through {where}: mso's one entry point, balancing the replicas and "
                  f"rolling updates{bind_note}{guess}")

    def _add_port(self, named: dict[str, dict[str, Any]], by_target: dict[int, str], target: int,
                  app_proto: str | None, label: str | None) -> str:
        if target in by_target:
            return by_target[target]
        protocol = ("http" if app_proto.lower() in ("http", "http2", "h2c") else "tcp") if app_proto \
            else ("tcp" if target in _TCP_PORTS else "http")
        taken = set(named)
        if label:
            name = _port_name(label)
        elif protocol not in taken:
            name = protocol
        else:
            name = f"{protocol}-{target}"
        while name in taken:
            name = f"{name[:10]}-{target}"
        named[name] = {"port": target, "protocol": protocol, "given": app_proto is not None}
        by_target[target] = name
        return name

    def _parse_port(self, svc: ServiceDef, i: int, item: Any
                    ) -> list[tuple[int, int | None, str | None, str, str | None, str | None]]:
        """(target, published, host_ip, protocol, app_protocol, name) per container port."""
        if isinstance(item, dict):
            try:
                target = int(item["target"])
                host = item.get("published")
                hosts = _port_range(str(host)) if host not in (None, "") else []
            except (KeyError, ValueError):
                raise self.error(svc, ("ports", i), "expected {target: PORT, published: PORT, ...}") from None
            for extra in item:
                if extra == "mode":
                    self.note(svc, ("ports", i, extra), "dropped", None, "the gateway publishes")
            return [(target, hosts[0] if hosts else None, item.get("host_ip"),
                     str(item.get("protocol", "tcp")).lower(), item.get("app_protocol"), item.get("name"))]
        text = str(item)
        proto = "tcp"
        if "/" in text:
            text, proto = text.rsplit("/", 1)
        ip = None
        if text.startswith("["):
            ip, _, text = text[1:].partition("]:")
        parts = text.rsplit(":", 2) if ip is None else text.split(":")
        if len(parts) == 3:
            ip, host_part, target_part = parts
        elif len(parts) == 2:
            host_part, target_part = parts
        else:
            host_part, target_part = "", parts[0]
        try:
            targets = _port_range(target_part)
            hosts = _port_range(host_part) if host_part else []
        except ValueError:
            raise self.error(svc, ("ports", i), f"cannot read port {item!r}: expected "
                             "[HOST_IP:][HOST:]CONTAINER[/PROTOCOL]") from None
        out: list[tuple[int, int | None, str | None, str, str | None, str | None]] = []
        for n, target in enumerate(targets):
            host = hosts[n] if n < len(hosts) else (hosts[0] if len(hosts) == 1 else None)
            out.append((target, host, ip or None, proto.lower(), None, None))
        return out

    def _configs(self, svc: ServiceDef, out: dict[str, Any], configs: Any) -> None:
        if configs is None:
            return
        result: list[dict[str, str]] = []
        for i, item in enumerate(configs):
            source = str(item.get("source") if isinstance(item, dict) else item)
            target = str(item.get("target") or f"/{source}") if isinstance(item, dict) else f"/{source}"
            found = self.p.configs.get(source)
            if found is None:
                raise self.error(svc, ("configs", i), f"unknown config {source!r} (not in the "
                                 "top-level configs:)")
            doc, definition = found
            file = (definition or {}).get("file")
            rel = rebase(str(file), doc.path.parent, self.out_dir) if file else None
            if rel is None:
                why = (f"its file {file!r} is outside the manifest's folder" if file else
                       "only file configs can be delivered (content:, environment: and external: "
                       "cannot); write the content to a file and name it with file:")
                self.note(svc, ("configs", i), "dropped", None, why)
                continue
            rel_target = target.lstrip("/") or source
            result.append({"source": rel, "target": rel_target})
            self.note(svc, ("configs", i), "translated", f"services.{svc.name}.config.{len(result) - 1}",
                      f"delivered read-only as $MSO_CONFIG_DIR/{rel_target} (compose: {target})")
        if result:
            out["config"] = result

    def _health(self, svc: ServiceDef, out: dict[str, Any], check: Any) -> None:
        if check is None:
            return
        if not isinstance(check, dict):
            raise self.error(svc, ("healthcheck",), "expected a mapping (test:, interval:, ...)")
        test = check.get("test")
        if check.get("disable") or (isinstance(test, list) and test[:1] == ["NONE"]):
            self.note(svc, ("healthcheck",), "dropped", None, "disabled: the service has no probe")
            return
        if isinstance(test, str):
            argv = ["/bin/sh", "-c", test]
        elif isinstance(test, list) and test[:1] == ["CMD"] and len(test) > 1:
            argv = [str(v) for v in test[1:]]
        elif isinstance(test, list) and test[:1] == ["CMD-SHELL"] and len(test) == 2:
            argv = ["/bin/sh", "-c", str(test[1])]
        else:
            raise self.error(svc, ("healthcheck", "test"), "expected a string, [CMD, args...], "
                             "[CMD-SHELL, command] or [NONE]")
        probe: dict[str, Any] = {"exec": argv}
        for key, to in (("interval", "period"), ("timeout", "timeout"), ("retries", "failure_threshold")):
            if key in check:
                probe[to] = check[key] if key != "retries" else max(1, int(check[key]))
                self.note(svc, ("healthcheck", key), "translated",
                          f"services.{svc.name}.health.readiness.{to}")
        probe.setdefault("period", "30s")  # compose's defaults
        probe.setdefault("timeout", "30s")
        health: dict[str, Any] = {"readiness": probe}
        if "start_period" in check:
            period = parse_duration(check.get("start_interval", "5s"))
            start = parse_duration(check["start_period"])
            health["startup"] = {"exec": argv, "period": check.get("start_interval", "5s"),
                                 "timeout": probe["timeout"],
                                 "failure_threshold": max(1, math.ceil(start / max(period, 0.001)))}
            self.note(svc, ("healthcheck", "start_period"), "translated",
                      f"services.{svc.name}.health.startup", "a startup probe that may fail for "
                      "that long before readiness is judged")
        if "start_interval" in check and "start_period" not in check:
            self.note(svc, ("healthcheck", "start_interval"), "dropped", None, "no start_period")
        self.note(svc, ("healthcheck", "test"), "translated",
                  f"services.{svc.name}.health.readiness.exec",
                  "an exec probe: the replica gets traffic, and `healthy` dependents start, "
                  "while it passes")
        out["health"] = health
        self.mark(("services", svc.name, "health"), svc, ("healthcheck",))

    def _restart(self, svc: ServiceDef, out: dict[str, Any], restart: Any) -> None:
        if restart is None:
            self.note(svc, (), "note", f"services.{svc.name}.restart: always",
                      "no `restart:` (compose would not restart it): mso's default restarts a "
                      "service's replicas; write restart: \"no\" to keep compose's behaviour")
            return
        text = ("no" if restart is False else str(restart)).lower()  # YAML 1.1 reads `no` as false
        mapped = {"no": "never", "always": "always", "unless-stopped": "always",
                  "false": "never"}.get(text)
        if text.startswith("on-failure"):
            mapped = "on-failure"
            if ":" in text:
                self.note(svc, ("restart",), "note", None, "mso restarts with backoff and never "
                          "gives up; the maximum number of retries is not kept")
        if mapped is None:
            raise self.error(svc, ("restart",), f"unknown restart policy {text!r}")
        out["restart"] = mapped
        self.note(svc, ("restart",), "translated", f"services.{svc.name}.restart: {mapped}")

    def _stop(self, svc: ServiceDef, out: dict[str, Any], sig: Any, grace: Any) -> None:
        stop: dict[str, Any] = {}
        if sig is not None:
            stop["signal"] = str(sig)
            self.note(svc, ("stop_signal",), "translated", f"services.{svc.name}.stop.signal")
        if grace is not None:
            stop["grace"] = grace
            self.note(svc, ("stop_grace_period",), "translated", f"services.{svc.name}.stop.grace")
        if stop:
            out["stop"] = stop

    def _develop(self, svc: ServiceDef, out: dict[str, Any], develop: Any) -> None:
        """`develop.watch` (compose watch) becomes `watch:` (`mso up --watch`): the
        replicas run in the compose file's folder, so `sync` needs nothing (the files are
        already where the process reads them) and every action that restarts or rebuilds
        is a readiness-gated restart."""
        if develop is None:
            return
        rules = develop.get("watch") if isinstance(develop, dict) else None
        for key in (develop if isinstance(develop, dict) else {}):
            if key != "watch":
                self.note(svc, ("develop", key), "dropped", None, "not a key mso knows")
        paths: list[str] = []
        ignore: list[str] = []
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            where = ("develop", "watch", i)
            rule = rule if isinstance(rule, dict) else {}
            action = str(rule.get("action", ""))
            path = rebase(str(rule.get("path", ".")), svc.where()[0].path.parent, self.out_dir)
            if action == "sync":
                self.note(svc, where, "dropped", None, "`sync`: the replicas run in the compose "
                          "file's folder and read the files where they are saved")
                continue
            if path is None:
                self.note(svc, where, "dropped", None, "the path leaves the manifest's folder")
                continue
            paths.append(path)
            ignore.extend(str(g) for g in rule.get("ignore") or [])
            if rule.get("include") is not None:
                self.note(svc, (*where, "include"), "dropped", None, "mso watches the whole "
                          "path (leave out what should not count with `ignore`)")
            self.note(svc, where, "translated", f"services.{svc.name}.watch",
                      f"`{action}`: a readiness-gated rolling restart (`mso up --watch`)"
                      + ("; the files are already in place" if action.startswith("sync") else ""))
        if paths:
            out["watch"] = {"paths": paths, **({"ignore": ignore} if ignore else {})}
            self.mark(("services", svc.name, "watch"), svc, ("develop",))

    def _deploy(self, svc: ServiceDef, out: dict[str, Any], deploy: Any, scale: Any) -> None:
        deploy = dict(deploy or {})
        if scale is not None:
            out["replicas"] = int(scale)
            self.note(svc, ("scale",), "translated", f"services.{svc.name}.replicas")
        for key, value in deploy.items():
            path = ("deploy", key)
            if key == "replicas":
                out["replicas"] = int(value)
                self.note(svc, path, "translated", f"services.{svc.name}.replicas")
            elif key == "resources":
                self._resources(svc, out, value or {})
            elif key == "restart_policy":
                self._restart_policy(svc, out, value or {})
            elif key == "update_config":
                self._update_config(svc, out, value or {})
            elif key == "rollback_config":
                self.note(svc, path, "dropped", None, "a failed mso rollout rolls back to the "
                          "previous release with the service's own strategy")
            elif key == "mode" and value == "replicated":
                self.note(svc, path, "kept", None, "mso services are replicated")
            else:
                self.note(svc, path, "dropped", None, {
                    "mode": "global (one replica per node) does not exist in mso: one replica "
                            "unless replicas: says more",
                    "placement": "mso places replicas itself",
                    "endpoint_mode": "mso's proxy balances the replicas",
                    "labels": "mso labels what it creates itself",
                }.get(key, "not a deploy key mso knows"))
        if "update_config" not in deploy and any(r["service"] == svc.name for r in self.routes):
            self.note(svc, ("ports",), "note", f"services.{svc.name}.rollout: rolling (default)",
                      "a web-facing service: new releases roll out one replica at a time without "
                      "downtime, rolled back when they fail; a canary with analysis "
                      "(rollout: {strategy: canary, steps: [...]}) is one line away")

    def _resources(self, svc: ServiceDef, out: dict[str, Any], value: dict[str, Any]) -> None:
        result: dict[str, Any] = {}
        for kind, spec in value.items():
            if kind != "limits":
                self.note(svc, ("deploy", "resources", kind), "dropped", None,
                          "mso enforces limits only (cgroups); a reservation is not kept")
                continue
            for key, limit in (spec or {}).items():
                path = ("deploy", "resources", "limits", key)
                if key == "cpus":
                    result["cpu"] = float(limit)
                    self.note(svc, path, "translated", f"services.{svc.name}.resources.cpu")
                elif key == "memory":
                    result["memory"] = _docker_size(str(limit))
                    self.note(svc, path, "translated", f"services.{svc.name}.resources.memory: "
                              f"{result['memory']}", "Docker's units are binary (1m = 1Mi)")
                else:
                    self.note(svc, path, "dropped", None, "mso limits cpu and memory only")
        if result:
            out["resources"] = result

    def _restart_policy(self, svc: ServiceDef, out: dict[str, Any], value: dict[str, Any]) -> None:
        for key, item in value.items():
            path = ("deploy", "restart_policy", key)
            if key == "condition":
                mapped = {"none": "never", "on-failure": "on-failure", "any": "always"}.get(str(item))
                if mapped is None:
                    raise self.error(svc, path, f"unknown condition {item!r} (none, on-failure or any)")
                out["restart"] = mapped
                self.note(svc, path, "translated", f"services.{svc.name}.restart: {mapped}")
            elif key == "delay":
                out.setdefault("backoff", {})["initial"] = item
                self.note(svc, path, "translated", f"services.{svc.name}.backoff.initial",
                          "mso doubles the delay on each restart, up to backoff.max")
            elif key == "window":
                out.setdefault("backoff", {})["reset_after"] = item
                self.note(svc, path, "translated", f"services.{svc.name}.backoff.reset_after")
            else:
                self.note(svc, path, "dropped", None, "mso restarts with backoff and never gives up")
        backoff = out.get("backoff")
        if backoff and "initial" in backoff and parse_duration(backoff["initial"]) > 30:
            backoff["max"] = backoff["initial"]

    def _update_config(self, svc: ServiceDef, out: dict[str, Any], value: dict[str, Any]) -> None:
        parallelism = int(value.get("parallelism", 1) or 1)
        order = str(value.get("order", "stop-first"))
        if parallelism == 0:  # swarm: all at once
            rollout: dict[str, Any] = {"strategy": "rolling", "max_surge": "100%" if order ==
                                       "start-first" else 0, "max_unavailable": 0 if order ==
                                       "start-first" else "100%"}
        elif order == "start-first":
            rollout = {"strategy": "rolling", "max_surge": parallelism, "max_unavailable": 0}
        else:
            rollout = {"strategy": "rolling", "max_surge": 0, "max_unavailable": parallelism}
        out["rollout"] = rollout
        for key, item in value.items():
            path = ("deploy", "update_config", key)
            if key in ("parallelism", "order"):
                self.note(svc, path, "translated", f"services.{svc.name}.rollout: rolling, "
                          f"max_surge {rollout['max_surge']}, max_unavailable "
                          f"{rollout['max_unavailable']}")
            elif key == "failure_action":
                why = "mso rolls a failed rollout back by itself" if item == "rollback" else \
                    f"{item}: mso always rolls a failed rollout back (progress_deadline)"
                self.note(svc, path, "translated" if item == "rollback" else "dropped",
                          f"services.{svc.name}.rollout" if item == "rollback" else None, why)
            elif key == "monitor":
                self.note(svc, path, "dropped", None, "mso watches each new replica until READY "
                          "and judges by its probes and the progress deadline")
            else:
                self.note(svc, path, "dropped", None, "mso paces a rolling update by readiness "
                          "(max_surge/max_unavailable), not by delays or failure ratios")
        if "order" not in value:
            self.note(svc, ("deploy", "update_config"), "note", None,
                      "no order: compose's default stop-first (no surge)")


def _port_range(text: str) -> list[int]:
    text = text.strip()
    if "-" in text:
        low, high = (int(p) for p in text.split("-", 1))
        if not 0 < low <= high <= 65535 or high - low > 100:
            raise ValueError(text)
        return list(range(low, high + 1))
    port = int(text)
    if not 0 < port <= 65535:
        raise ValueError(text)
    return [port]


def _docker_size(text: str) -> str:
    """Docker's `512m`, `1g`, `1.5g`, `100k`, `1024b` (binary units) in mso's `512Mi`."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([bkmgt]?)i?b?\s*", text.lower())
    if not match:
        return text
    number, unit = match.groups()
    if unit in ("", "b"):
        return str(int(float(number)))
    value = float(number)
    if value.is_integer():
        return f"{int(value)}{unit.upper()}i"
    scale = {"k": 1, "m": 2, "g": 3, "t": 4}[unit]
    return str(int(value * 1024 ** scale))
