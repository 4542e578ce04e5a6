"""Which manifest keys each engine honours: the one source of truth.

mso's promise is that one `mso.yaml` means the same thing on every engine. A key that an
engine would accept and then ignore (or read differently) breaks that promise silently,
so every such key is listed here with the engines that do not honour it, why, and what to
use instead. From this table:

* `mso validate --engine X`, `mso render --engine X`, `mso up`/`mso deploy` on engine X
  refuse a manifest that uses such a key: exit 2, `file:line: field.path: not supported
  on X: <why>; <instead>` (`check`);
* the support table in docs/engines.md is generated (`python -m mso.spec.support`), and a
  test keeps the two equal;
* every feature names the conformance scenario (tests/conformance/) that shows it working,
  and a test checks that each engine that claims a feature runs that scenario.

A key counts as used when the manifest *writes* it (defaults are what every engine does
by definition), optionally only for some values (`rollout.strategy: recreate`).
Keys not listed here are honoured everywhere.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mso.spec.errors import ManifestError, combine
from mso.spec.units import parse_duration

if TYPE_CHECKING:
    from mso.spec.loaded import LoadedManifest

EngineName = Literal["local", "swarm", "kubernetes"]
ENGINES: tuple[EngineName, ...] = ("local", "swarm", "kubernetes")


@dataclass(frozen=True)
class Gap:
    """Why an engine does not honour a key, and what to write instead."""

    why: str
    instead: str


Predicate = Callable[[Any, dict[str, Any]], bool]


def _always(value: Any, item: dict[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class Feature:
    """A manifest key (a dotted pattern, `*` for any name) and where it is honoured.

    `when(value, item)` narrows it to some values; `item` is the service or job the key
    belongs to (empty for top-level keys)."""

    key: str
    label: str
    scenario: str
    gaps: dict[EngineName, Gap] = field(default_factory=dict)
    when: Predicate = _always

    def supported(self, engine: EngineName) -> bool:
        return engine not in self.gaps


def _is(*values: Any) -> Predicate:
    return lambda value, item: value in values


def _signal_other_than_term(value: Any, item: dict[str, Any]) -> bool:
    name = str(value).strip().upper()
    return (name if name.startswith("SIG") else "SIG" + name) != "SIGTERM"


def _fraction_of_second(value: Any, item: dict[str, Any]) -> bool:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return False
    return seconds != int(seconds)


def _below(limit: float) -> Predicate:
    def check(value: Any, item: dict[str, Any]) -> bool:
        try:
            return parse_duration(value) < limit
        except ValueError:
            return False
    return check


def _above_one_second(value: Any, item: dict[str, Any]) -> bool:
    try:
        return parse_duration(value) > 1.0
    except ValueError:
        return False


def _not_one(value: Any, item: dict[str, Any]) -> bool:
    return bool(value != 1)


def _with_readiness(value: Any, item: dict[str, Any]) -> bool:
    return bool((item.get("health") or {}).get("readiness"))


def _blue_green(value: Any, item: dict[str, Any]) -> bool:
    return bool(value) and (item.get("rollout") or {}).get("strategy") == "blue_green"


#: What the labels of keys honoured everywhere for `run:` services (under mso's shim) add.
_OF_IMAGES = " of `image:`/`build:` services"


def _no_shim(predicate: Predicate) -> Predicate:
    """`predicate`, for a service built from `image:`/`build:` only: the others run under
    mso's shim, which supervises them in the container as the local engine does."""
    return lambda value, item: bool(item.get("image") or item.get("build")) \
        and predicate(value, item)


def _blue_green_without_load(value: Any, item: dict[str, Any]) -> bool:
    return _blue_green(value, item) and not (isinstance(value, dict) and value.get("load"))


def _container_probe(value: Any, item: dict[str, Any]) -> bool:
    return bool(item.get("image") or item.get("build")) and isinstance(value, dict) \
        and (value.get("http") is not None or value.get("tcp") is not None)


def _container_secret(value: Any, item: dict[str, Any]) -> bool:
    return bool(value) and bool(item.get("image") or item.get("build"))


def _local_container_secret(value: Any, item: dict[str, Any]) -> bool:
    return bool(value) and not item.get("run") and bool(item.get("image") or item.get("build"))


def _completed(value: Any, item: dict[str, Any]) -> bool:
    return bool(value == "completed")


def _container_job(value: Any, item: dict[str, Any]) -> bool:
    """A job that runs its image's own command (no `run:`)."""
    return isinstance(value, dict) and not value.get("run") \
        and bool(value.get("image") or value.get("build"))


def _not_always(value: Any, item: dict[str, Any]) -> bool:
    return bool(value != "always")


_REMOTE_CPU_INSTEAD = ("use target_rps_per_replica, target_inflight_per_replica or "
                      "target_p99_latency (from the gateway's figures)")
_SWARM_CPU = Gap("the Swarm controller does not read its tasks' CPU time", _REMOTE_CPU_INSTEAD)
_K8S_CPU = Gap("the Kubernetes controller does not read its pods' CPU time (no "
               "metrics-server is assumed)", _REMOTE_CPU_INSTEAD)
_K8S_ZERO = Gap("the Kubernetes gateway does not hold requests while a Deployment scales "
                "up from 0 (a request at zero would get a 503)", "use min: 1 on Kubernetes")
_BG_ANALYSIS = Gap("a blue/green preview gets no user traffic, so without synthetic load the "
                   "proxy's analysis has nothing to judge", "add `analysis.load` (mso then "
                   "sends requests of its own to the preview and the stable), or promote with "
                   "`mso rollout promote` once the preview port answers as it should")
_REMOTE_LOAD = Gap("the rollout controller runs outside the app's network and cannot reach "
                   "each subset's replicas directly; through the gateway the synthetic "
                   "requests would be counted as user traffic", "leave `load` out and send "
                   "traffic through the gateway, or pin requests with the header "
                   "`x-mso-route: canary`")
_K8S_NOTIFY = Gap("the notifier runs in the rollout controller, and the Kubernetes controller "
                  "process runs only while a rollout is active: it would exit before the "
                  "last events (promoted, rolled back) are delivered or retried",
                     "leave `notifications` out and follow `mso events` or "
                     "`mso rollout status -w`")
_SWARM_SURGE = Gap("a Swarm rolling update moves all traffic to a full-size stand-in service "
                   "first (zero-loss handoff), so there is no surge to bound",
                   "leave it out: the stand-in is the surge")
_SWARM_PROBE = Gap("a container built from `image:`/`build:` has no mso shim to supervise it, "
                   "and Swarm's healthcheck is one check per container",
                   "use one readiness probe, or a `run:` service")
_K8S_BACKOFF = Gap("a container built from `image:`/`build:` has no mso shim to restart its "
                   "process, and the kubelet restarts containers with its own delays (10s "
                   "doubling to 5m)", "leave `backoff` out, or use a `run:` service")

_K8S_PROXY = Gap("the Kubernetes gateway reaches each subset through one Service (kube-proxy "
                 "picks the pod), so it has no other replica to send a second try to and no "
                 "pod to take out of rotation", "leave `proxy` out; a readiness probe takes a "
                 "hung pod out of its Service")
_SWARM_PROXY = Gap("the Swarm gateway's route table does not carry these settings yet (not "
                   "shown by a Swarm scenario)", "leave `proxy` out; the gateway still retries "
                   "failed connections and ejects tasks that fail")

_WATCH = Gap("watch is a development key (mso up --watch on the embedded engine)",
             "pass --dev to deploy without it")

#: Development keys: `--dev` deploys without them (a one-line note each) on the engines
#: that refuse them.
DEV_KEYS: frozenset[str] = frozenset({"services.*.watch"})

_TRACING_INSTEAD = ("leave `tracing` out; the gateway still forwards each request's W3C "
                    "`traceparent` (continued, or a new one), so the services' own spans join "
                    "their callers' traces")
_SWARM_TRACING = Gap("the Swarm gateway's route table does not carry the tracing settings, and "
                     "its proxy-only image has no OTLP encoder (not shown by a Swarm scenario)",
                     _TRACING_INSTEAD)
_K8S_TRACING = Gap("the Kubernetes gateway's route table does not carry the tracing settings, "
                   "and its proxy-only image has no OTLP encoder (not shown by a Kubernetes "
                   "scenario)", _TRACING_INSTEAD)

def _user_name(value: Any, item: dict[str, Any]) -> bool:
    """`user:` naming a user or group (not numbers, not `dynamic`)."""
    text = str(value).strip()
    return text != "dynamic" and not all(part.isdigit() for part in text.split(":"))


def _container_user_name(value: Any, item: dict[str, Any]) -> bool:
    return _user_name(value, item) and not item.get("run") \
        and bool(item.get("image") or item.get("build"))


_K8S_USER_NAME = Gap("Kubernetes' runAsUser/runAsGroup take numbers, and mso does not look "
                     "up names inside images", "write the uid (`user: 999` or `999:999`), "
                     "or `dynamic`")
_LOCAL_CONTAINER_USER = Gap("the secret, config and data folders a container (`image:`/"
                            "`build:` without `run:`) gets are bind-mounted from this "
                            "machine and must belong to its user, whose name is known only "
                            "inside the image", "write the uid (`user: 999` or `999:999`), "
                            "or `dynamic`")

FEATURES: tuple[Feature, ...] = (
    Feature("services.*.user", "`user` (run as this user; `dynamic`)", "runs_as_user"),
    Feature("services.*.user", "`user` as a name (not a number)", "runs_as_user",
            gaps={"kubernetes": _K8S_USER_NAME}, when=_user_name),
    Feature("services.*.user", "`user` as a name, of a container (no `run:`)",
            "runs_as_user", gaps={"local": _LOCAL_CONTAINER_USER,
                                  "kubernetes": _K8S_USER_NAME}, when=_container_user_name),
    Feature("services.*.watch", "`watch` (development: `mso up --watch`)", "watch_restarts",
            gaps={"swarm": _WATCH, "kubernetes": _WATCH}),
    Feature("services.*.ports", "`ports` (the first one written is `PORT`)", "port_order"),
    Feature("services.*.secrets.*.as_env", "`secrets.*.as_env`", "secret_as_env",
            gaps={"swarm": Gap("a container built from `image:`/`build:` gets its secrets as "
                               "files only", "read the file in $MSO_SECRETS")},
            when=_container_secret),
    Feature("services.*.secrets.*.as_env", "`secrets.*.as_env` of a container (no `run:`)",
            "secret_as_env",
            gaps={"local": Gap("a container (`image:`/`build:` without `run:`) gets its secrets "
                               "as read-only files in /run/secrets only: an environment "
                               "variable would show in `docker inspect`",
                               "read the file in $MSO_SECRETS")},
            when=_local_container_secret),
    Feature("services.*.depends_on.*", "`depends_on: {X: completed}`", "depends_on_order",
            when=_completed),
    Feature("services.*.depends_on", "`depends_on` (start order)", "depends_on_order"),
    Feature("jobs.*.before", "`jobs.*.before`", "jobs_before"),
    Feature("jobs.*.timeout", "`jobs.*.timeout`", "job_timeout"),
    Feature("jobs.*", "a job with `image:`/`build:` and no `run:` (its image's command)",
            "job_as_container", when=_container_job),
    Feature("services.*.health.liveness", "`health.liveness` beside `readiness`" + _OF_IMAGES,
            "liveness_replaces_hung", gaps={"swarm": _SWARM_PROBE},
            when=_no_shim(_with_readiness)),
    Feature("services.*.health.startup", "`health.startup`" + _OF_IMAGES,
            "startup_probe",
            gaps={"swarm": _SWARM_PROBE}, when=_no_shim(_always)),
    Feature("services.*.health.*.success_threshold",
            "probe `success_threshold` other than 1" + _OF_IMAGES, "readiness_gates_traffic",
            gaps={"swarm": _SWARM_PROBE}, when=_no_shim(_not_one)),
    Feature("services.*.health.*.initial_delay", "probe `initial_delay`" + _OF_IMAGES,
            "startup_probe",
            gaps={"swarm": Gap("a container built from `image:`/`build:` has no mso shim, and "
                               "Swarm's healthcheck has a start period, not a delay",
                               "use a `startup` probe, or a `run:` service")},
            when=_no_shim(_always)),
    Feature("services.*.health.*.timeout", "probe `timeout` under 5s" + _OF_IMAGES,
            "readiness_gates_traffic",
            gaps={"swarm": Gap("a container built from `image:`/`build:` has no mso shim, and "
                               "the Swarm engine gives its Docker healthcheck at least 5s",
                               "write `timeout: 5s` or more, or use a `run:` service")},
            when=_no_shim(_below(5.0))),
    Feature("services.*.health.*", "http/tcp probes" + _OF_IMAGES, "readiness_gates_traffic",
            gaps={"swarm": Gap("a container built from `image:`/`build:` has no mso shim to "
                               "run http/tcp probes", "use an `exec` probe")},
            when=_container_probe),
    Feature("services.*.health.*.period", "probe durations in fractions of a second",
            "readiness_gates_traffic",
            gaps={"kubernetes": Gap("Kubernetes probes count whole seconds",
                                    "write whole seconds (1s)")}, when=_fraction_of_second),
    Feature("services.*.health.*.timeout", "probe durations in fractions of a second",
            "readiness_gates_traffic",
            gaps={"kubernetes": Gap("Kubernetes probes count whole seconds",
                                    "write whole seconds (1s)")}, when=_fraction_of_second),
    Feature("services.*.health.*.initial_delay", "probe durations in fractions of a second",
            "readiness_gates_traffic",
            gaps={"kubernetes": Gap("Kubernetes probes count whole seconds",
                                    "write whole seconds (1s)")}, when=_fraction_of_second),
    Feature("services.*.restart", "`restart: on-failure | never`", "restart_policy",
            gaps={"kubernetes": Gap("a Deployment's pods are always restarted",
                                    "run a one-shot task as a job")}, when=_not_always),
    Feature("services.*.backoff", "`backoff`" + _OF_IMAGES,
            "backoff_grows",
            gaps={"swarm": Gap("a container built from `image:`/`build:` has no mso shim to "
                               "restart its process, and Swarm restarts tasks with a fixed "
                               "delay", "leave `backoff` out, or use a `run:` service"),
                  "kubernetes": _K8S_BACKOFF}, when=_no_shim(_always)),
    Feature("services.*.stop.signal", "`stop.signal` other than SIGTERM" + _OF_IMAGES,
            "stop_signal",
            gaps={"kubernetes": Gap("a container built from `image:`/`build:` has no mso shim "
                                    "to translate the kubelet's SIGTERM, and a pod is always "
                                    "stopped with the image's STOPSIGNAL (SIGTERM)",
                                    "handle SIGTERM, or use a `run:` service")},
            when=_no_shim(_signal_other_than_term)),
    Feature("services.*.rollout.strategy", "`rollout.strategy: recreate`", "recreate_order",
            when=_is("recreate")),
    Feature("services.*.rollout.max_surge", "`rollout.max_surge`", "surge_bounds",
            gaps={"swarm": _SWARM_SURGE}),
    Feature("services.*.rollout.max_unavailable", "`rollout.max_unavailable`", "surge_bounds",
            gaps={"swarm": _SWARM_SURGE}),
    Feature("services.*.rollout.analysis.providers", "`rollout.analysis.providers`",
            "analysis_prometheus",
            when=lambda value, item: bool(value)),
    Feature("services.*.rollout.analysis", "`rollout.analysis` with `blue_green`, no `load`",
            "bluegreen_analysis",
            gaps={"local": _BG_ANALYSIS, "swarm": _BG_ANALYSIS, "kubernetes": _BG_ANALYSIS},
            when=_blue_green_without_load),
    Feature("services.*.rollout.analysis.load", "`rollout.analysis.load` (synthetic requests)",
            "analysis_load", gaps={"swarm": _REMOTE_LOAD, "kubernetes": _REMOTE_LOAD}),
    Feature("services.*.rollout.notifications", "`rollout.notifications` (webhooks)",
            "rollout_notifications",
            gaps={"kubernetes": _K8S_NOTIFY},
            when=lambda value, item: bool(value)),
    Feature("services.*.rollout.analysis.interval", "`analysis.interval` above 1s",
            "analysis_interval",
            when=_above_one_second),
    Feature("services.*.proxy", "`proxy` (per-try timeout, hedging)", "hung_replica_skipped",
            gaps={"swarm": _SWARM_PROXY, "kubernetes": _K8S_PROXY}),
    Feature("tracing", "`tracing` (request spans over OTLP)", "request_traces",
            gaps={"swarm": _SWARM_TRACING, "kubernetes": _K8S_TRACING}),
    Feature("gateway.tls", "`gateway.tls` (HTTPS at the gateway)", "gateway_tls"),
    Feature("routes.*.rate_limit", "`routes[].rate_limit` (429 with Retry-After)",
            "edge_limits"),
    Feature("routes.*.max_body_size", "`routes[].max_body_size` (413)", "edge_limits"),
    Feature("gateway.max_connections_per_client", "`gateway.max_connections_per_client`",
            "edge_limits"),
    Feature("services.*.autoscale", "`autoscale`", "autoscale"),
    Feature("services.*.autoscale.min", "`autoscale.min: 0` (scale to zero)", "scale_to_zero",
            gaps={"kubernetes": _K8S_ZERO}, when=_is(0)),
    Feature("services.*.autoscale.target_cpu_per_replica", "`autoscale.target_cpu_per_replica`",
            "autoscale", gaps={"swarm": _SWARM_CPU, "kubernetes": _K8S_CPU}),
)


def _walk(data: Any, parts: list[str], path: tuple[str | int, ...], item: dict[str, Any]
          ) -> Iterator[tuple[tuple[str | int, ...], Any, dict[str, Any]]]:
    if not parts:
        yield path, data, item
        return
    head, rest = parts[0], parts[1:]
    if isinstance(data, list) and head == "*":  # a list's items (routes.*.rate_limit)
        for index, value in enumerate(data):
            yield from _walk(value, rest, (*path, index), item)
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if isinstance(key, str) and not key.startswith("x-") and fnmatch.fnmatchcase(key, head):
            inner = value if len(path) == 1 and path[0] in ("services", "jobs") \
                and isinstance(value, dict) else item
            yield from _walk(value, rest, (*path, key), inner)


def uses(data: Any, feature: Feature) -> list[tuple[str | int, ...]]:
    """The paths at which the manifest as written uses `feature`."""
    return [path for path, value, item in _walk(data, feature.key.split("."), (), {})
            if feature.when(value, item)]


def check(loaded: LoadedManifest, engine: EngineName, dev: bool = False,
          note: Callable[[str], None] = lambda line: None,
          only: frozenset[str] | None = None) -> None:
    """Raise (all problems at once) when the manifest uses a key `engine` does not honour.
    `dev`: development keys (DEV_KEYS) are left out instead, with one `note` line each;
    `only`: check just these keys."""
    errors: list[ManifestError] = []
    for feature in FEATURES:
        gap = feature.gaps.get(engine)
        if only is not None and feature.key not in only:
            continue
        if gap is None:
            continue
        if dev and feature.key in DEV_KEYS:
            for path in uses(loaded.data, feature):
                dotted = ".".join(str(p) for p in path)
                note(str(loaded.error(dotted, f"a development key, ignored on {engine} (--dev)")))
            continue
        for path in uses(loaded.data, feature):
            dotted = ".".join(str(p) for p in path)
            errors.append(loaded.error(dotted, f"not supported on {engine}: {gap.why}; "
                                               f"{gap.instead}"))
    if errors:
        raise combine(errors)


def markdown_table() -> str:
    """The support table of docs/engines.md (generated; see tests/spec/test_support.py)."""
    lines = ["| key | " + " | ".join(ENGINES) + " | shown by |",
             "|---|" + "---|" * len(ENGINES) + "---|"]
    seen: set[str] = set()
    for feature in FEATURES:
        if feature.label in seen:
            continue
        seen.add(feature.label)
        cells = []
        for engine in ENGINES:
            gap = feature.gaps.get(engine)
            cells.append("yes" if gap is None else f"refused: {gap.why}; {gap.instead}")
        lines.append(f"| {feature.label} | " + " | ".join(cells)
                     + f" | `{feature.scenario}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
