"""`-o json` of ps, endpoints, releases and events: the shapes MANIFEST.md promises.

Fields may be added, but the listed ones must be present with the listed types, and the
values must agree with each other and with the real processes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest

from tests.cli.conftest import RUNNING_REPLICAS
from tests.e2e.harness import MsoApp, instance_processes, wait_for

pytestmark = pytest.mark.e2e

STATES = {"STARTING", "RUNNING", "READY", "BACKOFF", "FAILED", "STOPPING", "STOPPED"}
ADDRESS = re.compile(r"^127\.0\.0\.1:\d{1,5}$")


def assert_fields(obj: Any, fields: dict[str, type | tuple[type, ...]]) -> None:
    assert isinstance(obj, dict), obj
    for name, kind in fields.items():
        assert name in obj, f"{name} missing from {obj}"
        value = obj[name]
        # bool is an int in Python, but not in JSON: a bool where an int belongs is wrong.
        wrong_bool = isinstance(value, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,))
        assert isinstance(value, kind) and not wrong_bool, f"{name}={value!r} in {obj}"


def one_json_document(app: MsoApp, *args: str) -> Any:
    proc = app.cli(*args, "-o", "json")
    return json.loads(proc.stdout)  # raises on anything but exactly one JSON document


def test_ps_json_shape_and_values(running: MsoApp) -> None:
    data = one_json_document(running, "ps")
    assert_fields(data, {"app": str, "replicas": list})
    assert data["app"] == "clitest"
    replicas = data["replicas"]
    assert len(replicas) == RUNNING_REPLICAS
    for r in replicas:
        assert_fields(r, {"service": str, "replica": str, "release": int, "subset": str,
                          "state": str, "pid": int, "restarts": int})
        assert r["state"] in STATES and r["state"] == "READY"
        assert r["subset"] == "stable" and r["release"] >= 1
        assert r["replica"].startswith(r["service"] + "-")
        assert r["address"] is None or ADDRESS.match(r["address"]), r
    by_service = {r["service"]: r for r in replicas}
    assert by_service["ticker"]["address"] is None  # no ports, no address
    assert ADDRESS.match(by_service["echo"]["address"])
    live = set(instance_processes(running.instance or ""))
    assert {r["pid"] for r in replicas} <= live
    assert len({r["replica"] for r in replicas}) == len(replicas)


def test_endpoints_json_shape_and_values(running: MsoApp) -> None:
    data = one_json_document(running, "endpoints")
    assert_fields(data, {"gateway": str, "metrics": str, "services": dict})
    assert data["gateway"] == f"127.0.0.1:{running.gateway_port}"
    assert re.match(r"^http://127\.0\.0\.1:\d+/metrics$", data["metrics"])
    addresses = {r["replica"]: r["address"] for r in running.ps()}
    echo = data["services"]["echo"]
    assert_fields(echo, {"address": str, "endpoints": list})
    assert ADDRESS.match(echo["address"])
    assert echo["address"] not in addresses.values()  # stable address, not a replica's
    assert len(echo["endpoints"]) == 2
    for ep in echo["endpoints"]:
        assert_fields(ep, {"replica": str, "address": str, "subset": str, "weight": int,
                           "ready": bool})
        assert ep["address"] == addresses[ep["replica"]]
        assert ep["ready"] is True and ep["subset"] == "stable" and 0 <= ep["weight"] <= 100
    assert data["services"]["db"]["address"] != echo["address"]


def test_releases_json_shape(running: MsoApp) -> None:
    data = one_json_document(running, "releases", "echo")
    assert isinstance(data, list) and len(data) == 1
    for rel in data:
        assert_fields(rel, {"number": int, "spec_hash": str, "created": str, "outcome": str})
        assert rel["number"] == 1
        assert re.fullmatch(r"[0-9a-f]{16,}", rel["spec_hash"]), rel
        created = dt.datetime.fromisoformat(rel["created"])
        assert created.tzinfo is not None
        assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 3600
    echo_rel = {r["replica"]: r["release"] for r in running.replicas("echo")}
    assert set(echo_rel.values()) == {data[0]["number"]}


def test_events_json_is_a_list_of_typed_events_in_order(running: MsoApp) -> None:
    data = one_json_document(running, "events", "--tail", "1000")
    assert isinstance(data, list) and data
    for e in data:
        assert_fields(e, {"id": int, "ts": (int, float), "type": str, "message": str})
        assert e["service"] is None or isinstance(e["service"], str)
    ids = [e["id"] for e in data]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    types = {e["type"] for e in data}
    assert {"daemon.started", "release.created", "replica.state"} <= types
    ready = {e["replica"] for e in data
             if e["type"] == "replica.state" and e["message"].split(":")[0].endswith("READY")}
    assert {r["replica"] for r in running.ps()} <= ready


def test_events_filter_by_service_and_tail(running: MsoApp) -> None:
    db_only = one_json_document(running, "events", "--service", "db", "--tail", "1000")
    assert db_only and {e["service"] for e in db_only} == {"db"}
    everything = one_json_document(running, "events", "--tail", "100000")
    last_two = one_json_document(running, "events", "--tail", "2")
    assert len(last_two) == 2 and len(everything) > 2
    # The newest two, oldest first (a new event may have arrived in between).
    assert everything[-2]["id"] <= last_two[0]["id"] < last_two[1]["id"]


def test_initial_release_is_recorded_as_promoted_once_ready(running: MsoApp) -> None:
    assert running.all_ready(RUNNING_REPLICAS)
    wait_for(lambda: one_json_document(running, "releases", "db")[0]["outcome"]
             == "promoted", timeout=5, message="release 1 promoted")


def test_yaml_output_is_the_json_document(running: MsoApp) -> None:
    import yaml
    for args in (("ps",), ("endpoints",), ("releases", "echo"), ("rollout", "status", "echo")):
        as_json = running.json(*args)
        as_yaml = yaml.safe_load(running.cli(*args, "-o", "yaml").stdout)
        if args == ("ps",):  # restarts and reasons may move between the two reads
            assert [r["replica"] for r in as_yaml["replicas"]] == \
                [r["replica"] for r in as_json["replicas"]]
        else:
            assert as_yaml == as_json, args


def test_ps_watch_follows_until_its_reader_goes(running: MsoApp) -> None:
    import subprocess
    from tests.cli.conftest import clean_env, mso_argv
    proc = subprocess.Popen(mso_argv("ps", "-w", "--interval", "0.2", "-o", "json"),
                            cwd=running.folder, stdout=subprocess.PIPE, text=True,
                            env=clean_env())
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # one JSON document per line
    assert {r["service"] for r in first["replicas"]} >= {"echo"}
    proc.stdout.close()  # the reader goes away: `mso ps -w | head -1`
    assert proc.wait(timeout=20) == 0


def test_shell_completion_script_is_offered() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path
    mso = str(Path(sys.executable).with_name("mso"))  # the installed command, as users run it
    proc = subprocess.run([mso], env=dict(os.environ, _MSO_COMPLETE="bash_source"),
                          capture_output=True, text=True, timeout=60)
    assert "complete -o nosort -F _mso_completion mso" in proc.stdout, proc.stdout[-500:]
