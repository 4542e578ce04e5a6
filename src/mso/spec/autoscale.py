"""`autoscale`: the bounds, the targets and the behaviour of mso's autoscaler.

The decision itself is `mso.controllers.autoscale.plan`; this is only what the manifest
may say, checked with a located error for each mistake.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from mso.spec.errors import Loc, LocatedError
from mso.spec.fields import Count, SpecModel
from mso.spec.units import Duration, cpu_cores

__all__ = ["Autoscale", "Hold", "ScaleBehavior", "ScaleRule", "Step"]

#: Scale to zero: after this long without a request the service goes to 0 replicas.
DEFAULT_IDLE = 300.0
#: Requests held per proxy process while a service at zero starts, and for how long.
DEFAULT_HOLD_QUEUE = 100
DEFAULT_HOLD_TIMEOUT = 30.0

_PERCENT = re.compile(r"^(\d{1,4})%$")


def _step(value: Any) -> Any:
    """A number of replicas (1 or more) or a percentage of the current count ("100%")."""
    if isinstance(value, bool):
        raise ValueError("expected a number of replicas or a percentage such as '100%'")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) >= 1:
            return int(text)
        match = _PERCENT.match(text)
        if match and int(match.group(1)) >= 1:
            return text
    raise ValueError(f"expected a number of replicas (1 or more) or a percentage such as "
                     f"'100%', got {value!r}")


Step = Annotated[
    int | str,
    BeforeValidator(_step),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1},
                              {"type": "string", "pattern": r"^\d{1,4}%$"}]}),
]

Cores = Annotated[float, BeforeValidator(cpu_cores)]


class ScaleRule(SpecModel):
    """How fast one direction may go (HPA v2's `behavior.scaleUp`/`scaleDown`)."""

    stabilization: Duration | None = Field(
        None, description="Scale down: to the highest recommendation of this window (default "
        "5m); scale up: to the lowest (default 0s: at once).")
    max_step: Step | None = Field(
        None, description="Most replicas added (removed) within `period`: a count or a "
        "percentage of the current count. Default: up max(4, 100%), down 100%.")
    period: Duration = Field(15.0, description="The window `max_step` counts over.")

    @model_validator(mode="after")
    def _check(self) -> ScaleRule:
        if self.period <= 0:
            raise LocatedError.at(("period",), "period must be greater than 0")
        return self


class ScaleBehavior(SpecModel):
    scale_up: ScaleRule = Field(default_factory=ScaleRule, description="Adding replicas.")
    scale_down: ScaleRule = Field(default_factory=ScaleRule, description="Removing replicas.")


class Hold(SpecModel):
    """Scale to zero: what the proxy does with requests that arrive while no replica runs.
    They wait (at most `queue` of them, each at most `timeout`) while the autoscaler
    starts one, and go to it once it is READY; over either bound, 503 with Retry-After."""

    queue: Count = Field(DEFAULT_HOLD_QUEUE, ge=1, le=100_000,
                         description="Most requests waiting at once (per proxy process).")
    timeout: Duration = Field(DEFAULT_HOLD_TIMEOUT,
                              description="Longest a request waits for a replica.")

    @model_validator(mode="after")
    def _check(self) -> Hold:
        if self.timeout <= 0:
            raise LocatedError.at(("timeout",), "timeout must be greater than 0")
        return self


class Autoscale(SpecModel):
    """Scale replicas between min and max so that each metric stays near its target
    (the largest count any target asks for wins, as with Kubernetes' HPA)."""

    min: Count = Field(1, ge=0, description="Fewest replicas; 0 scales to zero after "
                       "`idle` without a request (http services, local and Swarm).")
    max: Count = Field(ge=1, description="Most replicas.")
    target_rps_per_replica: float | None = Field(
        None, gt=0, description="Requests per second one replica should handle.")
    target_inflight_per_replica: float | None = Field(
        None, gt=0, description="Requests in flight (sent, not yet answered) per replica.")
    target_p99_latency: Duration | None = Field(
        None, description="The 99th percentile of response times, e.g. 200ms.")
    target_cpu_per_replica: Cores | None = Field(
        None, gt=0, description="CPU one replica should use, in cores (0.5 or 500m), from "
        "its cgroup.")
    behavior: ScaleBehavior = Field(default_factory=ScaleBehavior,
                                    description="Stabilization windows and step limits.")
    idle: Duration | None = Field(
        None, description="With min 0: go to 0 replicas after this long without a request "
        "(default 5m).")
    hold: Hold | None = Field(
        None, description="With min 0: requests held while a replica starts (default "
        "queue 100, timeout 30s).")

    def idle_seconds(self) -> float:
        return DEFAULT_IDLE if self.idle is None else self.idle

    def hold_or_default(self) -> Hold:
        return self.hold if self.hold is not None else Hold()

    def targets(self) -> dict[str, float]:
        """The targets written, by metric name (rps, inflight, p99_ms, cpu)."""
        found = {"rps": self.target_rps_per_replica, "inflight": self.target_inflight_per_replica,
                 "p99_ms": None if self.target_p99_latency is None
                 else self.target_p99_latency * 1000.0,
                 "cpu": self.target_cpu_per_replica}
        return {name: value for name, value in found.items() if value is not None}

    @model_validator(mode="after")
    def _check(self) -> Autoscale:
        issues: list[tuple[Loc, str]] = []
        if self.min > self.max:
            issues.append((("min",), f"min ({self.min}) must not be greater than max ({self.max})"))
        if not self.targets():
            issues.append(((), "autoscale needs at least one target: target_rps_per_replica, "
                            "target_inflight_per_replica, target_p99_latency or "
                            "target_cpu_per_replica"))
        for key in ("idle", "hold"):
            if key in self.model_fields_set and self.min != 0:
                issues.append(((key,), f"{key} applies only to scale to zero: write min: 0, "
                                "or leave it out"))
        if self.idle is not None and self.idle <= 0:
            issues.append((("idle",), "idle must be greater than 0"))
        if self.target_p99_latency is not None and self.target_p99_latency <= 0:
            issues.append((("target_p99_latency",), "target_p99_latency must be greater than 0"))
        if issues:
            raise LocatedError(issues)
        return self
