"""Swarm tasks of `run:` services under the shim's supervision: the command carries the
probes, restart policy, backoff and stop settings; the Docker healthcheck only reads the
shim's status; a task whose shim says `not ready` leaves the gateway's rotation."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from mso.engines.images import SHIM_PATH, shim, supervision
from mso.engines.swarm.diagnose import shim_crash_loop, slot_problem, slot_view
from mso.engines.swarm.observe import ServiceObs, TaskObs, not_ready, watched, without_unready
from mso.engines.swarm.spec import NEVER_UNHEALTHY, ReleaseInput, command, healthcheck

_NOW = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
PROBE = {"period": 0.5, "timeout": 0.2, "failure_threshold": 2, "success_threshold": 2,
         "initial_delay": 1.0}
MODEL: dict[str, Any] = {
    "run": ["python3", "app.py"], "ports": {"http": 8000, "admin": 9000},
    "health": {"startup": {"tcp": "admin", **PROBE}, "readiness": {"http": "/ready", **PROBE},
               "liveness": {"exec": ["true"], **PROBE}},
    "restart": "on-failure", "backoff": {"initial": 0.2, "max": 0.8, "reset_after": 60.0},
    "stop": {"signal": "SIGINT", "grace": 5.0},
    "secrets": {"token": {"as_env": True}}}


def _flags(argv: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    head = argv[3:argv.index("--")]
    for flag, value in zip(head[::2], head[1::2]):
        out.setdefault(flag, []).append(value)
    return out


def test_the_command_hands_the_shim_what_the_local_supervisor_gets() -> None:
    rel = ReleaseInput("web", 1, "h", {"model": MODEL}, "img", shim=True)
    argv = command(rel)
    assert argv[:3] == ["python3", SHIM_PATH, "run"]
    assert argv[argv.index("--") + 1:] == ["python3", "app.py"]
    flags = _flags(argv)
    assert flags["--ports"] == ["8000,9000"] and "--forward" not in flags
    assert flags["--restart"] == ["on-failure"] and flags["--backoff"] == ["0.2,0.8,60"]
    assert flags["--stop-signal"] == ["SIGINT"] and flags["--stop-grace"] == ["5"]
    assert flags["--secret-env"] == ["TOKEN=token"]
    probes = {p.split("=", 1)[0]: json.loads(p.split("=", 1)[1]) for p in flags["--probe"]}
    assert probes["startup"] == {"kind": "tcp", "target": "9000", "port": 9000, **PROBE}
    assert probes["readiness"]["port"] == 8000 and probes["readiness"]["target"] == "/ready"
    assert probes["liveness"]["kind"] == "exec" and probes["liveness"]["port"] is None


def test_a_job_ends_with_its_process() -> None:
    job = {"run": ["python3", "migrate.py"], "timeout": 60.0}
    flags = _flags(command(ReleaseInput("migrate", 1, "h", {"model": job}, "img", shim=True)))
    assert flags["--restart"] == ["never"] and "--probe" not in flags


def test_the_healthcheck_reads_the_status_and_never_makes_the_task_unhealthy() -> None:
    check = healthcheck(MODEL, shim=True)
    assert check is not None
    assert check["Test"] == ["CMD", *supervision.STATUS_CHECK]
    assert check["Retries"] == NEVER_UNHEALTHY
    assert check["Interval"] == 500_000_000  # the readiness period: how soon gating follows
    assert check["StartPeriod"] == 15_000_000_000  # the startup budget, at least 15 s
    # Without probes: ready once the first port accepts; the check still sees crash loops.
    plain = healthcheck({"ports": {"http": 8000}}, shim=True)
    assert plain is not None and plain["Interval"] == 2_000_000_000
    # Without the shim only an exec probe can be the check (nothing else to probe with).
    assert healthcheck(MODEL, shim=False) is None


def _task(container: str, ready: bool = True, shim_status: bool = True) -> TaskObs:
    return TaskObs(id=container, slot=1, node="n", release=1, state="running",
                   desired="running", address="10.0.0.2", error="", container=container,
                   ready=ready, stopping=False, timestamp="", shim_status=shim_status)


def test_a_task_whose_shim_says_not_ready_is_not_ready() -> None:
    obs = [ServiceObs(id="s", name="app_web", service="web", role="main", subset="stable",
                      release=1, deploy_hash="h", replicas=3, version=1,
                      tasks=(_task("a"), _task("b"), _task("c", shim_status=False)))]
    assert watched(obs) == ["a", "b"]
    said = {"a": {"Log": [{"ExitCode": 0, "Output": "ready\n"},
                          {"ExitCode": 0, "Output": "not ready: readiness probe failed: "
                                                    "HTTP GET /ready returned 503\n"}]},
            "b": {"Log": [{"ExitCode": 0, "Output": "ready\n"}]}}
    unready = {c for c, health in said.items() if not_ready(health)}
    assert unready == {"a"} and not not_ready(None)
    after = without_unready(obs, unready)
    assert [t.ready for t in after[0].tasks] == [False, True, True]
    assert without_unready(obs, set()) is obs


def test_a_crash_loop_inside_the_container_is_a_problem_at_once() -> None:
    said = "exited with status 1, 3 times in a row without becoming ready; " \
           "restarting in 0.8s"
    health = {"Log": [{"ExitCode": 1, "Output": f"not ready: {shim.CRASH_LOOP}{said}\n"}]}
    assert shim_crash_loop(health) == said
    assert shim_crash_loop({"Log": [{"ExitCode": 1, "Output": "not ready: started"}]}) == ""
    task = {"ID": "t", "Slot": 1, "DesiredState": "running", "CreatedAt": _NOW,
            "Status": {"State": "starting", "Timestamp": _NOW},
            "Spec": {"ContainerSpec": {"Healthcheck": healthcheck(MODEL, shim=True)}}}
    problem = slot_problem([task], "any", time.time(), health)
    assert problem is not None and problem.kind == "crash_loop"
    assert problem.message == f"{said}; mso's shim keeps restarting it"
    view = slot_view([task], "any", time.time(), health)
    assert view is not None and view.state == "BACKOFF" and view.reason == problem.message


def test_user_is_the_containers_user_and_owns_its_secret_files() -> None:
    from mso.engines.swarm.spec import AppContext, SecretRef, container_spec, with_ids
    from mso.spec.users import remote_id
    ctx = AppContext("app", "app_net", "/tmp")
    refs = [SecretRef("s", "token", b"x", False), SecretRef("c", "conf.ini", b"y", True)]

    def files(user: str) -> tuple[str | None, list[Any]]:
        rel = ReleaseInput("web", 1, "h", {"model": {**MODEL, "user": user}, "env": {}},
                           "img", shim=True)
        spec = container_spec(ctx, rel, "main")
        out = with_ids({"ContainerSpec": spec}, refs, {"s": "id1", "c": "id2"})["ContainerSpec"]
        return spec.get("User"), [out["Secrets"][0]["File"], out["Configs"][0]["File"]]

    user, (secret, config) = files("999")
    assert user == "999:999"
    assert (secret["UID"], secret["GID"], secret["Mode"]) == ("999", "999", 0o400)
    assert config["UID"] == "999" and config["Mode"] == 0o444
    uid = str(remote_id("app", "web"))
    assert files("dynamic")[0] == f"{uid}:{uid}"
    # A name is resolved in the image only: the secret is then readable by any user there.
    user, (secret, _) = files("postgres")
    assert user == "postgres" and (secret["UID"], secret["Mode"]) == ("0", 0o444)
