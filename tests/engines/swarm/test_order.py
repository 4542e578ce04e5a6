"""Swarm honours `rollout.strategy: recreate`, `jobs.*.timeout` and `depends_on:
{X: completed}` as the local engine does (pure parts; the conformance scenarios run them)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mso.engines.swarm import state
from mso.engines.swarm.controller import SwarmController, dependency_met
from mso.engines.swarm.engine import timed_out_jobs
from mso.engines.swarm.observe import ServiceObs, TaskObs
from mso.engines.swarm.spec import AppContext, ReleaseInput, service_spec
from mso.engines.swarm.state import SwarmPaths
from mso.store.records import Desired


def _task(state_: str, desired: str = "running") -> TaskObs:
    return TaskObs(id=f"t-{state_}", slot=1, node="n", release=1, state=state_,
                   desired=desired, address=None, error="", container="c", ready=False,
                   stopping=desired != "running", timestamp="")


def _service(*tasks: TaskObs, role: str = "main") -> ServiceObs:
    return ServiceObs(id="s1", name="app_prepare", service="prepare", role=role,  # type: ignore[arg-type]
                      subset="stable", release=1, deploy_hash="h", replicas=1, version=1,
                      tasks=tasks)


def test_completed_means_a_task_exited_zero() -> None:
    assert dependency_met(_service(_task("complete", desired="shutdown")), "completed")
    assert not dependency_met(_service(_task("running")), "completed")
    assert not dependency_met(_service(_task("failed", desired="shutdown")), "completed")


def _spec(strategy: str) -> dict[str, Any]:
    model = {"run": ["python3", "app.py"], "ports": {"http": 8000},
             "rollout": {"strategy": strategy}}
    return service_spec(AppContext("app", "app_net", "/tmp"),
                        ReleaseInput("web", 1, "hash", {"kind": "service", "model": model},
                                     "img", True), "main", 2, "stable").update_config


def test_recreate_stops_every_old_task_before_a_new_one_starts() -> None:
    assert _spec("recreate")["Order"] == "stop-first"
    assert _spec("recreate")["Parallelism"] == 0  # all at once: no old task left running
    assert _spec("rolling")["Order"] == "start-first"


class _Api:
    """Just what the deadline needs: the job's service and task, and their removal."""

    def __init__(self) -> None:
        self.removed: list[str] = []

    def services(self, app: str) -> list[dict[str, Any]]:
        return [{"ID": "s1", "Spec": {"Labels": {"mso.service": "prepare", "mso.role": "job"}}}]

    def tasks(self, ids: list[str]) -> list[dict[str, Any]]:
        return []

    def remove_service(self, service_id: str) -> None:
        self.removed.append(service_id)


def test_a_job_past_its_timeout_is_stopped_and_recorded(tmp_path: Path) -> None:
    now = [1000.0]
    api = _Api()
    controller = SwarmController(SwarmPaths(tmp_path / ".mso"), api=api,  # type: ignore[arg-type]
                                 clock=lambda: now[0])
    run = {"release": 1, "run": 0, "since": 1000.0}
    state.set_json(controller.store, state.JOBS_KEY, {"prepare": run})
    want = Desired("prepare", "job", 1, 1, 1)
    job = _service(_task("running"), role="job")

    asyncio.run(controller._job_deadline("app", "prepare", want, job, run, {"timeout": 2.0}))
    assert api.removed == []  # within its deadline
    now[0] = 1002.5
    asyncio.run(controller._job_deadline("app", "prepare", want, job, run, {"timeout": 2.0}))
    assert api.removed == ["s1"]
    rows = timed_out_jobs(controller.store, {"prepare": want})
    assert [r["reason"] for r in rows] == ["timed out after 2s (jobs.prepare.timeout)"]
    # The next deploy runs it again: a new run, the timeout forgotten.
    state.rerun_jobs(controller.store, {"prepare"})
    assert timed_out_jobs(controller.store, {"prepare": want}) == []
    assert state.job_runs(controller.store)["prepare"]["run"] == 1


def test_a_job_that_ended_has_no_deadline(tmp_path: Path) -> None:
    api = _Api()
    controller = SwarmController(SwarmPaths(tmp_path / ".mso"), api=api,  # type: ignore[arg-type]
                                 clock=lambda: 10_000.0)
    run = {"release": 1, "run": 0, "since": 0.0}
    done = _service(_task("complete", desired="shutdown"), role="job")
    asyncio.run(controller._job_deadline("app", "prepare", Desired("prepare", "job", 1, 1, 1),
                                         done, run, {"timeout": 2.0}))
    assert api.removed == []
    failed = _service(_task("failed", desired="shutdown"), role="job")
    asyncio.run(controller._job_deadline("app", "prepare", Desired("prepare", "job", 1, 1, 1),
                                         failed, run, {"timeout": 2.0}))
    assert api.removed == []  # a failed run already failed the deploy: kept for its logs
