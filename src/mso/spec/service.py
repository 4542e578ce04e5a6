"""Services and jobs: what runs, with which ports, environment, secrets and config.

Checks that only need one service live here; checks across services (dependencies,
routes, name collisions) live in `mso.spec.models`.
"""

from __future__ import annotations

import re
import signal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from mso.spec.errors import Loc, LocatedError
from mso.spec.fields import Argv, Count, EnvMap, EnvName, Name, PathList, PortName, PortNumber, RelPath, SpecModel
from mso.spec.health import Health, Probe
from mso.spec.autoscale import Autoscale
from mso.spec.rollout import Rollout
from mso.spec.units import ByteSize, Duration, cpu_cores
from mso.spec.users import parse_user

__all__ = [
    "Backoff",
    "Build",
    "Condition",
    "ConfigFile",
    "Job",
    "Port",
    "ProxySettings",
    "Resources",
    "Secret",
    "Service",
    "Stop",
    "Watch",
    "WatchSignal",
]

Condition = Literal["started", "healthy", "completed"]
SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class Port(SpecModel):
    """A named port. Short form `http: 8000` means `{port: 8000, protocol: http}`."""

    port: PortNumber = Field(description="Port number the process listens on (1-65535).")
    protocol: Literal["http", "tcp"] = Field("http", description="http (routable, HTTP probes) or tcp.")


def _port_short(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"port": value}
    if isinstance(value, str) and value.strip().isdigit():
        return {"port": int(value)}
    if not isinstance(value, dict):
        raise ValueError("expected a port number (http: 8000) or {port: 8000, protocol: tcp}")
    return value


PortSpec = Annotated[Port, BeforeValidator(_port_short, json_schema_input_type=int | Port)]


class Secret(SpecModel):
    """A secret from a file or from mso's environment, delivered as a file in $MSO_SECRETS."""

    file: RelPath | None = Field(None, description="File holding the value (relative to the manifest).")
    env: EnvName | None = Field(None, description="Variable in mso's environment holding the value.")
    as_env: bool | str = Field(
        False,
        description="Also set an env var: true = the secret name upper-cased ('-' becomes '_'), or the var's name.",
    )

    @model_validator(mode="after")
    def _check(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("a secret needs exactly one of file or env")
        if isinstance(self.as_env, str) and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.as_env):
            raise LocatedError.at(("as_env",), f"as_env {self.as_env!r} is not a valid environment variable name")
        return self

    def env_var(self, name: str) -> str | None:
        """Name of the env var this secret is exposed as, or None."""
        return secret_env_var(name, self.as_env)


def secret_env_var(name: str, as_env: bool | str | None) -> str | None:
    """The env var a secret named `name` is exposed as (`as_env: true`: the name
    upper-cased, `-` and `.` as `_`), or None. Every engine names it with this."""
    if as_env is True:
        return name.upper().replace("-", "_").replace(".", "_")
    return as_env or None


class ConfigFile(SpecModel):
    """A file delivered to each replica; changing its content makes a new release."""

    source: RelPath = Field(description="File beside the manifest.")
    target: str = Field(description="Relative path inside the replica's working directory.")

    @field_validator("target")
    @classmethod
    def _relative_target(cls, value: str) -> str:
        parts = value.replace("\\", "/").split("/")
        if not value or value.startswith("/") or ".." in parts:
            raise ValueError(f"target {value!r} must be a relative path without '..'")
        return value


class Build(SpecModel):
    """How to build a service's image (every engine builds locally). Short form: `build: ./dir`."""

    context: RelPath = Field(".", description="Build context folder.")
    dockerfile: str = Field("Dockerfile", description="Dockerfile path inside the context.")
    args: EnvMap = Field(default_factory=dict, description="Build arguments.")
    target: str | None = Field(None, description="Multi-stage build target.")


def _build_short(value: Any) -> Any:
    return {"context": value} if isinstance(value, str) else value


BuildSpec = Annotated[Build, BeforeValidator(_build_short, json_schema_input_type=str | Build)]


class Backoff(SpecModel):
    """Restart delays: doubling from `initial` up to `max`; reset after `reset_after` of uptime."""

    initial: Duration = Field(0.5, description="First restart delay.")
    max: Duration = Field(30.0, description="Longest restart delay.")
    reset_after: Duration = Field(60.0, description="Uptime after which the delay starts over.")

    @model_validator(mode="after")
    def _check(self) -> Backoff:
        if self.initial > self.max:
            raise LocatedError.at(("initial",), f"initial ({self.initial}s) must not exceed max ({self.max}s)")
        return self


class Stop(SpecModel):
    """How replicas are stopped: `signal`, then SIGKILL after `grace`."""

    signal: str = Field("SIGTERM", description="Signal name, e.g. SIGTERM, SIGINT, SIGQUIT (SIG prefix optional).")
    grace: Duration = Field(10.0, description="Time between the signal and SIGKILL.")

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        return signal_name(value, "stop signal", "SIGTERM, SIGINT or SIGQUIT")


def signal_name(value: str, what: str, examples: str) -> str:
    """`hup`, `HUP` and `SIGHUP` all mean SIGHUP; SIGKILL and SIGSTOP cannot be handled."""
    name = value.strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in signal.Signals.__members__ or name in ("SIGKILL", "SIGSTOP"):
        raise ValueError(f"unknown or unusable {what} {value!r}; use e.g. {examples}")
    return name


class WatchSignal(SpecModel):
    """`action: {signal: SIGHUP}`: signal every replica (for servers that reload themselves)."""

    signal: str = Field(description="Signal name, e.g. SIGHUP (SIG prefix optional).")

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        return signal_name(value, "signal", "SIGHUP or SIGUSR1")


class Watch(SpecModel):
    """Development (`mso up --watch`, local engine): what a change to these files does.
    Short form: `watch: [src/]` (paths) or `watch: src/`."""

    paths: PathList = Field(default_factory=list, description="Files or folders to watch, relative "
                            "to the manifest; default: the service's cwd (else the manifest's folder).")
    ignore: list[str] = Field(default_factory=list, description="Globs to leave out: `*.log` "
                              "(a file name), `data/` (a folder, anywhere), `tests/*.py` (a path).")
    action: Literal["restart", "recreate"] | WatchSignal = Field(
        "restart", description="restart: a readiness-gated rolling restart; recreate: stop, "
        "then start; {signal: SIGHUP}: signal every replica, no restart.")

    @field_validator("ignore")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        if any(not glob.strip() for glob in value):
            raise ValueError("an ignore glob must not be empty")
        return value


def _watch_short(value: Any) -> Any:
    if isinstance(value, (str, list)):
        return {"paths": value}
    return value


WatchSpec = Annotated[Watch, BeforeValidator(_watch_short, json_schema_input_type=str | list[str] | Watch)]


class ProxySettings(SpecModel):
    """How mso's proxy treats a slow or hung replica of this service (idempotent requests:
    GET, HEAD, OPTIONS, PUT, DELETE, TRACE, with the whole body received)."""

    per_try_timeout: Duration = Field(
        0.5, description="A request with no response head after this gets a second try on "
        "another replica (the first keeps going, the first answer wins); a try that loses to "
        "an answer within this counts as a failure toward ejection. 0 turns it off.")
    hedge_delay: Duration | None = Field(
        None, description="Send the second try already after this long (hedging), if "
        "shorter than per_try_timeout. Default: no hedging.")

    @model_validator(mode="after")
    def _check(self) -> ProxySettings:
        if self.per_try_timeout < 0:
            raise LocatedError.at(("per_try_timeout",), "per_try_timeout must be 0 (off) or more")
        if self.hedge_delay is not None and self.hedge_delay <= 0:
            raise LocatedError.at(("hedge_delay",), "hedge_delay must be greater than 0; leave it out for no hedging")
        if self.hedge_delay is not None and self.per_try_timeout and self.hedge_delay >= self.per_try_timeout:
            raise LocatedError.at(("hedge_delay",), f"hedge_delay ({self.hedge_delay:g}s) must be shorter than "
                                  f"per_try_timeout ({self.per_try_timeout:g}s), which already sends the second try")
        return self


class Resources(SpecModel):
    cpu: Annotated[float | None, BeforeValidator(cpu_cores)] = Field(
        None, gt=0, description="CPU limit in cores (0.5 or 500m)."
    )
    memory: ByteSize | None = Field(None, gt=0, description="Memory limit, e.g. 256Mi.")


class _Runnable(SpecModel):
    """Fields shared by services and jobs."""

    run: Argv | None = Field(None, description="argv list; a string only with shell: true. "
                             "A service with `image:` or `build:` may leave it out: it then "
                             "runs the image's own command, as a container.")
    shell: bool = Field(False, description="Run `run` (a string) with /bin/sh -c.")
    cwd: RelPath | None = Field(None, description="Working directory, relative to the manifest.")
    image: str | None = Field(None, description="The image to run (as a container when `run:` is "
                              "left out; on Swarm/Kubernetes `run:` runs inside it).")
    build: BuildSpec | None = Field(None, description="Build the image from a Dockerfile instead.")
    env: EnvMap = Field(default_factory=dict, description="Environment; values may use ${VAR} interpolation.")
    env_file: PathList = Field(default_factory=list, description="KEY=VALUE files; `env` overrides them.")
    secrets: dict[str, Secret] = Field(default_factory=dict, description="Secrets by name.")

    def _runnable_issues(self) -> list[tuple[Loc, str]]:
        issues: list[tuple[Loc, str]] = []
        if self.run is None:
            if not (self.image or self.build):
                what = "give `run:` (a command), or `image:`/`build:` to run a container"
                issues.append((("run",), f"required key is missing: {what}"))
            elif self.cwd is not None:
                kind = "job" if isinstance(self, Job) else "service"
                issues.append((("cwd",), f"a container {kind} (`image:`/`build:` without "
                               "`run:`) runs in its image's WORKDIR on every engine; leave "
                               "`cwd` out (or give `run:` to run a process there)"))
        elif isinstance(self.run, str) and not self.shell:
            issues.append((("run",), "run is a string; use an argv list like [python3, app.py], or set shell: true"))
        if self.run is not None and (not self.run or (isinstance(self.run, str) and not self.run.strip())):
            issues.append((("run",), "run must not be empty"))
        for name, secret in self.secrets.items():
            if not SECRET_NAME.match(name):
                issues.append((("secrets", name), f"invalid secret name {name!r}: use letters, digits, '_', '-', '.'"))
        for i, path in enumerate(self.env_file):
            if not path.strip():
                issues.append((("env_file", i), "path must not be empty"))
        issues.extend(self._env_collisions())
        return issues

    def _env_collisions(self) -> list[tuple[Loc, str]]:
        issues: list[tuple[Loc, str]] = []
        for key in self.env:
            if key.startswith("MSO_"):
                issues.append((("env", key), f"{key}: names starting with MSO_ are set by mso"))
            if not key or "=" in key or "\0" in key:
                issues.append((("env", key), f"invalid environment variable name {key!r}"))
        seen: dict[str, str] = {}
        for name, secret in self.secrets.items():
            var = secret.env_var(name)
            if var is None:
                continue
            if var in self.env:
                issues.append((("secrets", name, "as_env"), f"{var} is also set in env; remove one"))
            if var in seen:
                issues.append((("secrets", name, "as_env"), f"{var} is also set by secret {seen[var]!r}"))
            seen[var] = name
        return issues

    def secret_env_vars(self) -> dict[str, str]:
        """env var name -> secret name, for secrets with as_env."""
        out: dict[str, str] = {}
        for name, secret in self.secrets.items():
            var = secret.env_var(name)
            if var is not None:
                out[var] = name
        return out


def _depends_on(value: Any) -> Any:
    """A plain list means condition `started`."""
    if isinstance(value, list):
        out: dict[Any, Any] = {}
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"expected the name of a service or job, got {type(item).__name__}")
            if item in out:
                raise ValueError(f"{item!r} is listed twice")
            out[item] = "started"
        return out
    return value


DependsOn = Annotated[
    dict[Name, Condition],
    BeforeValidator(_depends_on),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {"type": "string"}},
                {"type": "object", "additionalProperties": {"enum": ["started", "healthy", "completed"]}},
            ],
            "description": "Services (or jobs, with completed) to wait for: name -> started | healthy | completed.",
        }
    ),
]


def _number_as_text(value: Any) -> Any:
    """`user: 999` is the number 999 in YAML: the uid."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Service(_Runnable):
    """A long-running process with replicas, ports and a rollout strategy."""

    replicas: Count = Field(1, ge=0, description="Number of replicas (0 stops the service).")
    ports: dict[PortName, PortSpec] = Field(default_factory=dict, description="Named ports, first http port first.")
    config: list[ConfigFile] = Field(default_factory=list, description="Files delivered to each replica.")
    depends_on: DependsOn = Field(default_factory=dict, description="Start after these are started/healthy/completed.")
    health: Health = Field(default_factory=Health, description="startup, readiness and liveness probes.")
    restart: Literal["always", "on-failure", "never"] = Field("always", description="When to restart a replica that exits.")
    backoff: Backoff = Field(default_factory=Backoff, description="Restart delays.")
    stop: Stop = Field(default_factory=Stop, description="Stop signal and grace period.")
    resources: Resources = Field(default_factory=Resources, description="CPU and memory limits.")
    rollout: Rollout = Field(default_factory=Rollout, description="How new releases replace old ones.")
    autoscale: Autoscale | None = Field(
        None, description="Scale replicas between min and max on requests/s, in-flight "
        "requests, p99 latency or CPU per replica (docs/manifest.md, Autoscaling).")
    proxy: ProxySettings | None = Field(
        None, description="How mso's proxy handles slow and hung replicas (per-try timeout, "
        "hedging); local engine.")
    watch: WatchSpec | None = Field(
        None, description="Development: restart (or signal) the service when these files "
        "change, with `mso up --watch` (local engine; refused by Swarm/Kubernetes deploys "
        "unless --dev).")
    user: Annotated[str | None, BeforeValidator(_number_as_text)] = Field(
        None, description="Run the service's processes as this user: a name (postgres), "
        "name:group, uid or uid:gid, or `dynamic` (a per-service unprivileged user mso "
        "creates at start and removes at `mso down`). Data, secret and config files are "
        "handed to it (docs/manifest.md, Users).")

    @field_validator("user")
    @classmethod
    def _user_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_user(value)
        return value.strip()

    def first_http_port(self) -> str | None:
        """Name of the first port with protocol http, in manifest order."""
        return next((name for name, p in self.ports.items() if p.protocol == "http"), None)

    def probe_port(self, probe: Probe) -> str | None:
        """The named port a probe connects to (None for exec probes)."""
        if probe.kind == "tcp":
            return probe.tcp
        if probe.kind == "http":
            return probe.port or self.first_http_port()
        return None

    @model_validator(mode="after")
    def _check(self) -> Service:
        issues = self._runnable_issues()
        issues.extend(self._port_issues())
        issues.extend(self._probe_issues())
        for i, note in enumerate(self.rollout.notifications):
            for loc, name in note.secret_names():
                if name not in self.secrets:
                    issues.append((("rollout", "notifications", i, *loc), f"no secret {name!r} in this service's secrets{self._known_secrets()}"))
        if self.rollout.analysis.load is not None and self.first_http_port() is None:
            issues.append((("rollout", "analysis", "load"), "synthetic load needs an http port; add one under ports"))
        targets: dict[str, int] = {}
        for i, cfg in enumerate(self.config):
            if cfg.target in targets:
                issues.append((("config", i, "target"), f"target {cfg.target!r} is also used by config item {targets[cfg.target]}"))
            targets.setdefault(cfg.target, i)
        scale = self.autoscale
        if scale is not None and "replicas" in self.model_fields_set \
                and not scale.min <= self.replicas <= scale.max:
            issues.append((("replicas",), f"replicas ({self.replicas}) is outside autoscale's "
                           f"bounds ({scale.min}-{scale.max}); leave it out (the autoscaler "
                           "starts at min) or write a count between them"))
        if scale is not None and scale.min == 0:
            tcp = [n for n, p in self.ports.items() if p.protocol == "tcp"]
            if tcp:
                issues.append((("autoscale", "min"), f"scale to zero needs http ports only: "
                               f"the proxy holds HTTP requests while a replica starts, not TCP "
                               f"connections (port {tcp[0]!r} is tcp); use min: 1"))
            elif self.first_http_port() is None:
                issues.append((("autoscale", "min"), "scale to zero needs an http port (a "
                               "request is what starts a replica again); use min: 1"))
        if issues:
            raise LocatedError(issues)
        return self

    def _port_issues(self) -> list[tuple[Loc, str]]:
        issues: list[tuple[Loc, str]] = []
        seen: dict[int, str] = {}
        for name, port in self.ports.items():
            if port.port in seen:
                issues.append((("ports", name), f"port {port.port} is already used by port {seen[port.port]!r}"))
            seen.setdefault(port.port, name)
        return issues

    def _probe_issues(self) -> list[tuple[Loc, str]]:
        issues: list[tuple[Loc, str]] = []
        for role, probe in self.health.probes().items():
            loc: Loc = ("health", role)
            if probe.kind == "tcp" and probe.tcp not in self.ports:
                issues.append(((*loc, "tcp"), f"port {probe.tcp!r} is not defined in ports{self._known_ports()}"))
            if probe.kind != "http":
                continue
            if probe.port is not None and probe.port not in self.ports:
                issues.append(((*loc, "port"), f"port {probe.port!r} is not defined in ports{self._known_ports()}"))
            elif probe.port is None and self.first_http_port() is None:
                issues.append(((*loc, "http"), "an http probe needs an http port; add one under ports or use a tcp or exec probe"))
        return issues

    def _known_secrets(self) -> str:
        return f" (defined: {', '.join(self.secrets)})" if self.secrets else " (the service has no secrets)"

    def _known_ports(self) -> str:
        return f" (defined: {', '.join(self.ports)})" if self.ports else " (the service has no ports)"


class Job(_Runnable):
    """A one-off task, e.g. a migration; `before` services start only after it succeeds."""

    before: list[Name] = Field(default_factory=list, description="Services that start only after this job succeeds.")
    depends_on: DependsOn = Field(default_factory=dict, description="Run after these are started/healthy/completed.")
    timeout: Duration = Field(300.0, description="The job fails if it runs longer.")

    @model_validator(mode="after")
    def _check(self) -> Job:
        issues = self._runnable_issues()
        if self.timeout <= 0:
            issues.append((("timeout",), "timeout must be greater than 0"))
        if issues:
            raise LocatedError(issues)
        return self
