"""The models used directly (as the controllers and engines will): shapes, helpers, errors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mso.spec.models import Manifest, Probe, Service, Step


def service(**fields: Any) -> Service:
    return Service.model_validate({"run": ["app"], **fields})


def test_port_short_and_long_forms() -> None:
    s = service(ports={"http": 8000, "db": {"port": 5432, "protocol": "tcp"}, "admin": {"port": 9000}})
    assert [(n, p.port, p.protocol) for n, p in s.ports.items()] == [
        ("http", 8000, "http"),
        ("db", 5432, "tcp"),
        ("admin", 9000, "http"),
    ]
    assert s.first_http_port() == "http"


def test_depends_on_list_means_started() -> None:
    assert service(depends_on=["db", "cache"]).depends_on == {"db": "started", "cache": "started"}


def test_depends_on_list_with_duplicates_is_refused() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        service(depends_on=["db", "db"])


def test_env_values_are_stringified_like_compose() -> None:
    assert service(env={"N": 3, "F": 1.5, "T": True, "S": "s"}).env == {"N": "3", "F": "1.5", "T": "true", "S": "s"}


def test_env_file_accepts_a_single_string() -> None:
    assert service(env_file=".env").env_file == [".env"]


def test_run_list_items_may_be_numbers() -> None:
    assert service(run=["sleep", 10]).run == ["sleep", "10"]


def test_shell_string_run() -> None:
    assert service(run="echo hi && sleep 1", shell=True).run == "echo hi && sleep 1"


@pytest.mark.parametrize(
    ("probe", "kind"),
    [({"http": "/ready"}, "http"), ({"tcp": "http"}, "tcp"), ({"exec": ["true"]}, "exec")],
)
def test_probe_kind(probe: dict[str, Any], kind: str) -> None:
    assert Probe.model_validate(probe).kind == kind


def test_probe_defaults_are_kubernetes_defaults() -> None:
    p = Probe.model_validate({"tcp": "http"})
    assert (p.period, p.timeout, p.failure_threshold, p.success_threshold, p.initial_delay) == (10.0, 1.0, 3, 1, 0.0)


def test_probe_port_defaults_to_the_first_http_port() -> None:
    s = service(ports={"db": {"port": 1, "protocol": "tcp"}, "web": 2}, health={"readiness": {"http": "/r"}})
    assert s.health.readiness is not None and s.probe_port(s.health.readiness) == "web"


@pytest.mark.parametrize(
    ("probe", "fragment"),
    [
        ({"http": "ready"}, "must start with '/'"),
        ({"tcp": "http", "port": "http"}, "port applies to http probes only"),
        ({"exec": []}, "exec must not be empty"),
        ({"exec": "pg_isready"}, "exec must be a list"),
        ({"tcp": "http", "period": 0}, "period must be greater than 0"),
        ({"tcp": "http", "timeout": "0s"}, "timeout must be greater than 0"),
    ],
)
def test_bad_probes(probe: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Probe.model_validate(probe)


def test_readiness_may_have_success_threshold_above_one() -> None:
    s = service(ports={"http": 1}, health={"readiness": {"http": "/r", "success_threshold": 2}})
    assert s.health.readiness is not None and s.health.readiness.success_threshold == 2


@pytest.mark.parametrize(
    ("step", "kind"),
    [
        ({"set_weight": 0}, "set_weight"),
        ({"pause": "30s"}, "pause"),
        ({"pause": {}}, "pause"),
        ({"pause": None}, "pause"),
        ({"pause": {"duration": "1m"}}, "pause"),
        ({"analysis": {"duration": "30s"}}, "analysis"),
    ],
)
def test_step_forms(step: dict[str, Any], kind: str) -> None:
    assert Step.model_validate(step).kind == kind


def test_pause_without_duration_is_indefinite() -> None:
    pause = Step.model_validate({"pause": {}}).pause
    assert pause is not None and pause.duration is None
    timed = Step.model_validate({"pause": "1m"}).pause
    assert timed is not None and timed.duration == 60.0


def test_max_surge_accepts_percentages() -> None:
    s = service(rollout={"max_surge": "25%", "max_unavailable": "1"})
    assert (s.rollout.max_surge, s.rollout.max_unavailable) == ("25%", 1)
    with pytest.raises(ValidationError, match="percentage"):
        service(rollout={"max_surge": "150%"})


def test_stop_signal_is_normalized() -> None:
    assert service(stop={"signal": "int"}).stop.signal == "SIGINT"
    with pytest.raises(ValidationError, match="unusable stop signal"):
        service(stop={"signal": "SIGKILL"})


def test_cpu_accepts_millicores() -> None:
    assert service(resources={"cpu": "250m"}).resources.cpu == 0.25
    with pytest.raises(ValidationError):
        service(resources={"cpu": 0})


def test_build_short_form() -> None:
    s = service(build="./web")
    assert s.build is not None and (s.build.context, s.build.dockerfile) == ("./web", "Dockerfile")


def test_secret_env_var_names() -> None:
    s = service(
        secrets={"db-password": {"env": "X", "as_env": True}, "key": {"env": "Y", "as_env": "API_KEY"}, "n": {"env": "Z"}}
    )
    assert s.secret_env_vars() == {"DB_PASSWORD": "db-password", "API_KEY": "key"}


def test_manifest_models_are_frozen_and_forbid_extra() -> None:
    m = Manifest.model_validate({"app": "a", "services": {"s": {"run": ["x"]}}})
    with pytest.raises(ValidationError):
        m.app = "b"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs"):
        Manifest.model_validate({"app": "a", "extra": 1})


def test_depends_on_a_completed_job_is_fine() -> None:
    m = Manifest.model_validate(
        {"app": "a", "services": {"s": {"run": ["x"], "depends_on": {"m": "completed"}}}, "jobs": {"m": {"run": ["m"]}}}
    )
    assert m.runnable("m").run == ["m"]


def test_completed_on_an_always_restarting_service_is_refused() -> None:
    with pytest.raises(ValidationError, match="never completes"):
        Manifest.model_validate(
            {"app": "a", "services": {"s": {"run": ["x"], "depends_on": {"t": "completed"}}, "t": {"run": ["t"]}}}
        )


def test_duplicate_routes_are_refused() -> None:
    with pytest.raises(ValidationError, match="always matches first"):
        Manifest.model_validate(
            {
                "app": "a",
                "routes": [{"service": "s"}, {"service": "s", "path": "/"}],
                "services": {"s": {"run": ["x"], "ports": {"http": 1}}},
            }
        )


def test_replicas_zero_is_allowed() -> None:
    assert service(replicas=0).replicas == 0
