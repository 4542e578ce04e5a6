"""How a new release replaces the old one: strategy, canary steps, analysis, autoscaling."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from mso.spec.errors import Loc, LocatedError
from mso.spec.fields import PortNumber, SpecModel
from mso.spec.units import Duration

__all__ = [
    "AnalysisSpec",
    "Autoscale",
    "LoadSpec",
    "Notification",
    "Pause",
    "PrometheusProvider",
    "Provider",
    "Rollout",
    "Step",
    "StepAnalysis",
    "Strategy",
    "WebhookProvider",
]

Strategy = Literal["rolling", "canary", "blue_green", "recreate"]
_PERCENT = re.compile(r"^(\d{1,3})%$")


def _surge(value: Any) -> Any:
    """An int count or a percentage string ("25%"); digit strings become ints."""
    if isinstance(value, bool):
        raise ValueError("expected a number of replicas or a percentage such as '25%'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _PERCENT.match(text)
        if match and int(match.group(1)) <= 100:
            return text
    raise ValueError(f"expected a number of replicas or a percentage 0%-100%, got {value!r}")


SurgeValue = Annotated[
    int | str,
    BeforeValidator(_surge),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\d{1,3}%$"}]}),
]


def _is_zero(value: int | str) -> bool:
    return value == 0 or value == "0%"


class Pause(SpecModel):
    """Pause a canary: for `duration`, or until `mso rollout promote` when it is None."""

    duration: Duration | None = Field(None, description="How long to pause; omit to wait for `mso rollout promote`.")


def _pause_short(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return {"duration": value}
    return value


PauseSpec = Annotated[Pause, BeforeValidator(_pause_short, json_schema_input_type=str | float | None | Pause)]


class StepAnalysis(SpecModel):
    """Hold the canary's weight and judge it for `duration`; a failing verdict rolls back."""

    duration: Duration = Field(description="How long to analyse at the current weight.")


class Step(SpecModel):
    """One canary step: exactly one of set_weight, pause or analysis."""

    set_weight: int | None = Field(None, description="Send this percentage (0-100) of traffic to the canary.")
    pause: PauseSpec | None = Field(None, description="Pause for a duration, or until promoted (`pause: {}`).")
    analysis: StepAnalysis | None = Field(None, description="Analyse for a duration before the next step.")

    @model_validator(mode="before")
    @classmethod
    def _bare_pause(cls, value: Any) -> Any:
        # `- pause:` (no value) reads as null; it means "pause until promoted"
        if isinstance(value, dict) and "pause" in value and value["pause"] is None:
            return {**value, "pause": {}}
        return value

    @model_validator(mode="after")
    def _check(self) -> Step:
        kinds = [k for k in ("set_weight", "pause", "analysis") if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = " and ".join(kinds) if kinds else "none"
            raise ValueError(f"a step needs exactly one of set_weight, pause or analysis (got {got})")
        if self.set_weight is not None and not 0 <= self.set_weight <= 100:
            raise LocatedError.at(("set_weight",), f"set_weight must be between 0 and 100, got {self.set_weight}")
        return self

    @property
    def kind(self) -> Literal["set_weight", "pause", "analysis"]:
        if self.set_weight is not None:
            return "set_weight"
        return "pause" if self.pause is not None else "analysis"


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_KNOWN_PLACEHOLDERS = ("subset", "service", "release")


class PrometheusProvider(SpecModel):
    """An instant query run once per subset (stable and canary) on every analysis poll."""

    url: str = Field(description="Prometheus base URL, e.g. http://prometheus:9090 (credentials as user:pass@ are redacted in output).")
    query: str = Field(
        description="PromQL returning one number; `{{subset}}` becomes stable/canary, `{{release}}` that subset's "
        "release number, `{{service}}` the service's name."
    )
    max: float = Field(description="The canary fails when its result exceeds this while the stable's does not.")

    @model_validator(mode="after")
    def _check(self) -> PrometheusProvider:
        unknown = sorted({n for n in _PLACEHOLDER.findall(self.query) if n not in _KNOWN_PLACEHOLDERS})
        if unknown:
            names = ", ".join("{{" + n + "}}" for n in unknown)
            raise LocatedError.at(
                ("query",), f"unknown placeholder {names}: only {{{{subset}}}}, {{{{release}}}} and {{{{service}}}} are replaced"
            )
        return self


class WebhookProvider(SpecModel):
    url: str = Field(description="POSTed the analysis context; a non-2xx answer fails the canary.")


class Provider(SpecModel):
    """An extra metric source for analysis: exactly one of prometheus or webhook."""

    prometheus: PrometheusProvider | None = None
    webhook: WebhookProvider | None = None

    @model_validator(mode="after")
    def _check(self) -> Provider:
        kinds = [k for k in ("prometheus", "webhook") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a provider needs exactly one of prometheus or webhook")
        url = self.prometheus.url if self.prometheus else self.webhook.url if self.webhook else ""
        if not url.startswith(("http://", "https://")):
            raise LocatedError.at((kinds[0], "url"), f"url must start with http:// or https://, got {url!r}")
        return self


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _header_issues(headers: dict[str, str], key: str) -> list[tuple[Loc, str]]:
    issues: list[tuple[Loc, str]] = []
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            issues.append(((key, name), f"invalid header name {name!r}"))
        elif "\r" in value or "\n" in value:
            issues.append(((key, name), "a header value must not contain a line break"))
    return issues


class LoadSpec(SpecModel):
    """Synthetic requests mso sends to both subsets during analysis (`analysis.load`)."""

    rate: float = Field(10.0, gt=0, le=1000, description="Requests per second sent to each subset (stable and canary/preview).")
    paths: list[str] = Field(default_factory=lambda: ["/"], min_length=1, description="Paths requested in turn (each starts with /).")
    methods: list[str] = Field(default_factory=lambda: ["GET"], min_length=1, description="HTTP methods used in turn.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers sent with every synthetic request.")
    timeout: Duration = Field(2.0, description="A request without an answer this long counts as an error.")

    @model_validator(mode="after")
    def _check(self) -> LoadSpec:
        issues: list[tuple[Loc, str]] = []
        for i, path in enumerate(self.paths):
            if not path.startswith("/") or any(c.isspace() for c in path):
                issues.append((("paths", i), f"a path starts with / and has no spaces, got {path!r}"))
        for i, method in enumerate(self.methods):
            if method.upper() not in _HTTP_METHODS:
                issues.append((("methods", i), f"unknown method {method!r}: use one of {', '.join(_HTTP_METHODS)}"))
        issues.extend(_header_issues(self.headers, "headers"))
        if self.timeout <= 0:
            issues.append((("timeout",), "timeout must be greater than 0"))
        if issues:
            raise LocatedError(issues)
        return self


class Notification(SpecModel):
    """A webhook that receives every rollout event (`rollout.notifications`)."""

    url: str | None = Field(None, description="Where events are POSTed (http:// or https://).")
    url_secret: str | None = Field(None, description="The name of one of the service's secrets holding the URL (e.g. a Slack webhook URL); instead of `url`.")
    format: Literal["json", "slack"] = Field("json", description="json: the event as JSON; slack: {\"text\": ...}.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers sent with every notification.")
    secret_headers: dict[str, str] = Field(default_factory=dict, description="Header name -> the name of one of the service's secrets whose value is sent (e.g. a token); never logged.")
    timeout: Duration = Field(5.0, description="One attempt without an answer this long fails.")
    retries: int = Field(3, ge=0, le=10, description="Attempts after the first, with exponential backoff (1s, 2s, 4s...).")

    @model_validator(mode="after")
    def _check(self) -> Notification:
        issues: list[tuple[Loc, str]] = []
        if (self.url is None) == (self.url_secret is None):
            issues.append((("url",), "a notification needs exactly one of url or url_secret"))
        elif self.url is not None and not self.url.startswith(("http://", "https://")):
            issues.append((("url",), f"url must start with http:// or https://, got {self.url!r}"))
        issues.extend(_header_issues(self.headers, "headers"))
        issues.extend(_header_issues(dict.fromkeys(self.secret_headers, ""), "secret_headers"))
        if self.timeout <= 0:
            issues.append((("timeout",), "timeout must be greater than 0"))
        if issues:
            raise LocatedError(issues)
        return self

    def secret_names(self) -> list[tuple[Loc, str]]:
        """(where, secret name) of every secret this notification uses."""
        out: list[tuple[Loc, str]] = []
        if self.url_secret is not None:
            out.append((("url_secret",), self.url_secret))
        for header, name in self.secret_headers.items():
            out.append((("secret_headers", header), name))
        return out


class AnalysisSpec(SpecModel):
    """Continuous comparison of canary and stable during canary / blue_green rollouts."""

    interval: Duration = Field(1.0, description="How often metrics are sampled.")
    min_samples: int = Field(50, ge=1, description="Requests per subset before any verdict; fewer is inconclusive.")
    confidence: float = Field(0.99, gt=0, lt=1, description="Statistical confidence of a failing verdict.")
    max_error_rate_increase: float = Field(0.01, ge=0, description="Tolerated canary-minus-stable error rate.")
    max_latency_p99_increase: float = Field(0.25, ge=0, description="Tolerated p99 latency increase, relative to stable.")
    providers: list[Provider] = Field(default_factory=list, description="Extra metric sources.")
    load: LoadSpec | None = Field(None, description="Synthetic requests mso sends to both subsets during analysis, so a service without user traffic gets a verdict.")
    duration: Duration | None = Field(None, description="blue_green: how long the preview is analysed before it may be promoted (default 30s; canary analysis steps carry their own).")

    @model_validator(mode="after")
    def _check(self) -> AnalysisSpec:
        if self.interval <= 0:
            raise LocatedError.at(("interval",), "interval must be greater than 0")
        return self


class Rollout(SpecModel):
    """How a service's new release replaces the old one."""

    strategy: Strategy = Field("rolling", description="rolling | canary | blue_green | recreate.")
    max_surge: SurgeValue = Field(1, description="Extra replicas allowed during a rollout (count or percent).")
    max_unavailable: SurgeValue = Field(0, description="Replicas allowed below the desired count (count or percent).")
    progress_deadline: Duration = Field(600.0, description="A rollout making no progress this long fails.")
    steps: list[Step] = Field(default_factory=list, description="Canary steps (strategy canary only).")
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec, description="Canary/blue_green analysis settings.")
    preview_port: PortNumber | None = Field(
        None, description="blue_green: where the new version waits for promotion."
    )
    keep_previous: Duration = Field(300.0, description="blue_green: how long the old version stays ready for rollback.")
    notifications: list[Notification] = Field(default_factory=list, description="Webhooks that receive every rollout event (JSON or Slack-compatible), with retries.")

    @model_validator(mode="after")
    def _check(self) -> Rollout:
        issues: list[tuple[Loc, str]] = []
        if self.steps and self.strategy != "canary":
            issues.append((("steps",), f"steps apply to strategy canary only (strategy is {self.strategy})"))
        if _is_zero(self.max_surge) and _is_zero(self.max_unavailable):
            issues.append(
                (("max_unavailable",), "max_surge and max_unavailable cannot both be 0: the rollout could never progress")
            )
        if self.progress_deadline <= 0:
            issues.append((("progress_deadline",), "progress_deadline must be greater than 0"))
        if self.analysis.duration is not None and self.strategy != "blue_green":
            issues.append((("analysis", "duration"), "analysis.duration applies to strategy blue_green only (a canary's analysis steps carry their own duration)"))
        elif self.analysis.duration is not None and self.analysis.duration <= 0:
            issues.append((("analysis", "duration"), "duration must be greater than 0"))
        if issues:
            raise LocatedError(issues)
        return self


class Autoscale(SpecModel):
    """Scale replicas between min and max to keep requests per replica near the target."""

    min: int = Field(1, ge=1, description="Fewest replicas.")
    max: int = Field(ge=1, description="Most replicas.")
    target_rps_per_replica: float = Field(gt=0, description="Requests per second one replica should handle.")

    @model_validator(mode="after")
    def _check(self) -> Autoscale:
        if self.min > self.max:
            raise LocatedError.at(("min",), f"min ({self.min}) must not be greater than max ({self.max})")
        return self
