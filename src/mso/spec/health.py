"""Health probes: startup, readiness and liveness, with Kubernetes semantics.

A probe is exactly one of `http: /path`, `tcp: <port name>` or `exec: [argv]`. Checks
that need the service's ports (an http probe needs an http port, names must exist)
live on `Service`, which knows them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mso.spec.errors import LocatedError
from mso.spec.fields import Argv, PortName, SpecModel
from mso.spec.units import Duration

__all__ = ["Health", "Probe", "ProbeKind"]

ProbeKind = Literal["http", "tcp", "exec"]


class Probe(SpecModel):
    """One health check, run every `period` after `initial_delay`."""

    http: str | None = Field(None, description="HTTP GET this path (must start with /); 2xx/3xx is success.")
    tcp: PortName | None = Field(None, description="Open a TCP connection to this named port.")
    exec: Argv | None = Field(None, description="Run this command in the replica's environment; exit 0 is success.")
    port: PortName | None = Field(None, description="Named port for http probes; default: the service's first http port.")
    period: Duration = Field(10.0, description="Time between checks.")
    timeout: Duration = Field(1.0, description="How long one check may take.")
    failure_threshold: int = Field(3, description="Consecutive failures before the probe counts as failed.")
    success_threshold: int = Field(1, description="Consecutive successes before the probe counts as passing.")
    initial_delay: Duration = Field(0.0, description="Wait this long after start before the first check.")

    @property
    def kind(self) -> ProbeKind:
        if self.http is not None:
            return "http"
        if self.tcp is not None:
            return "tcp"
        return "exec"

    @model_validator(mode="after")
    def _check(self) -> Probe:
        issues: list[tuple[tuple[str | int, ...], str]] = []
        kinds = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = " and ".join(kinds) if kinds else "none"
            issues.append(((), f"a probe needs exactly one of http, tcp or exec (got {got})"))
        if self.http is not None and not self.http.startswith("/"):
            issues.append((("http",), f"http probe path must start with '/', got {self.http!r}"))
        if self.port is not None and self.http is None:
            issues.append((("port",), "port applies to http probes only (a tcp probe names its port itself)"))
        if isinstance(self.exec, str):
            issues.append((("exec",), "exec must be a list of arguments, e.g. [pg_isready, -q]"))
        elif self.exec is not None and not self.exec:
            issues.append((("exec",), "exec must not be empty"))
        for name in ("failure_threshold", "success_threshold"):
            if getattr(self, name) < 1:
                issues.append(((name,), f"{name} must be at least 1"))
        for name in ("period", "timeout"):
            if getattr(self, name) <= 0:
                issues.append(((name,), f"{name} must be greater than 0"))
        if issues:
            raise LocatedError(issues)
        return self


class Health(SpecModel):
    """Probes of a service; each is optional."""

    startup: Probe | None = Field(
        None, description="Holds off readiness and liveness until it passes once (slow starters)."
    )
    readiness: Probe | None = Field(
        None, description="A replica gets traffic only while this passes; without it, a running replica is ready."
    )
    liveness: Probe | None = Field(None, description="A replica failing this is restarted.")

    @model_validator(mode="after")
    def _check(self) -> Health:
        issues: list[tuple[tuple[str | int, ...], str]] = []
        for name in ("startup", "liveness"):
            probe: Probe | None = getattr(self, name)
            if probe is not None and probe.success_threshold != 1:
                issues.append(((name, "success_threshold"), f"success_threshold must be 1 for {name} probes (as in Kubernetes)"))
        if issues:
            raise LocatedError(issues)
        return self

    def probes(self) -> dict[str, Probe]:
        """The configured probes by role, in startup → readiness → liveness order."""
        found = {"startup": self.startup, "readiness": self.readiness, "liveness": self.liveness}
        return {role: probe for role, probe in found.items() if probe is not None}
