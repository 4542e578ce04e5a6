"""What makes a Swarm deploy quick without waiting less for what matters: depends_on
conditions read as the local engine reads them, and Docker 25's start interval."""

from __future__ import annotations

from mso.engines.swarm.controller import dependency_met
from mso.engines.swarm.observe import ServiceObs, TaskObs
from mso.engines.swarm.spec import healthcheck, supports_start_interval

MODEL = {"ports": {"http": 8000},
         "health": {"readiness": {"http": "/ready", "period": 1.0, "timeout": 1.0,
                                  "failure_threshold": 3}}}


def _task(state: str, desired: str = "running") -> TaskObs:
    return TaskObs(id=state, slot=1, node="n", release=1, state=state, desired=desired,
                   address="10.0.0.2" if state == "running" else None, error="",
                   container="c", ready=state == "running" and desired == "running",
                   stopping=desired != "running", timestamp="")


def _service(*tasks: TaskObs) -> ServiceObs:
    return ServiceObs(id="s", name="app_db", service="db", role="main", subset="stable",
                      release=1, deploy_hash="h", replicas=1, version=1, tasks=tasks)


def test_started_means_a_container_runs_even_before_its_healthcheck_passed() -> None:
    starting = _service(_task("starting"))
    assert dependency_met(starting, "started")
    assert not dependency_met(starting, "healthy")
    assert not dependency_met(_service(_task("preparing")), "started")
    assert not dependency_met(_service(_task("starting", desired="shutdown")), "started")
    assert not dependency_met(None, "started")


def test_healthy_means_a_ready_task() -> None:
    running = _service(_task("running"))
    assert dependency_met(running, "healthy") and dependency_met(running, "started")


def test_docker_25_checks_often_until_the_first_check_passes() -> None:
    old = healthcheck(MODEL, shim=True)
    new = healthcheck(MODEL, shim=True, start_interval=True)
    assert old is not None and new is not None
    assert "StartInterval" not in old
    assert new["StartInterval"] == 250_000_000 and new["Interval"] == 1_000_000_000
    assert {k: v for k, v in new.items() if k != "StartInterval"} == old


def test_the_start_interval_needs_api_1_44() -> None:
    assert not supports_start_interval("1.41")
    assert supports_start_interval("1.44") and supports_start_interval("1.51")
    assert supports_start_interval("2.0")
    assert not supports_start_interval("") and not supports_start_interval("x.y")
