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

__all__ = ["Autoscale", "ScaleBehavior", "ScaleRule", "Step"]

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


class Autoscale(SpecModel):
    """Scale replicas between min and max so that each metric stays near its target
    (the largest count any target asks for wins, as with Kubernetes' HPA)."""

    min: Count = Field(1, ge=1, description="Fewest replicas.")
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
        if self.target_p99_latency is not None and self.target_p99_latency <= 0:
            issues.append((("target_p99_latency",), "target_p99_latency must be greater than 0"))
        if issues:
            raise LocatedError(issues)
        return self
