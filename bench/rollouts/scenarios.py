"""The rollout benchmark's scenarios, each on a real mso app under real load.

* `bad_canaries`: a 5%-error canary at 10% weight, repeated; then, on the same app, an
  optional healthy canary timed to promotion.
* `rolling_updates`: env-var changes rolled over 3 replicas under load.

Every scenario brings its app down on the way out, whatever happened.
"""

from __future__ import annotations

import time
from pathlib import Path

from driver import App, manifest, wait_for
from loadgen import Load
from measure import CanaryTrial, RollingUpdate, canary_trial, rolling_update

CANARY = """
strategy: canary
progress_deadline: 2m
steps:
  - set_weight: 10
  - analysis: {duration: 60s}
analysis: {interval: 1s}
"""

ROLLING = """
strategy: rolling
max_surge: 1
max_unavailable: 0
"""


def _more_traffic(load: Load, requests: int, timeout: float = 30.0) -> None:
    """Wait until the client has sent `requests` more (so the tail of a change is seen)."""
    target = load.count() + requests
    wait_for(lambda: load.count() >= target, timeout, f"{requests} more requests")


def _deploy(app: App, text: str) -> int:
    """Apply `text`; returns the release the new rollout goes to."""
    before = app.rollout().get("to_release") or 0
    app.write(text)
    app.cli("deploy")
    st = wait_for(lambda: ((r := app.rollout()).get("to_release") or 0) > before and r, 30,
                  "the new rollout to start")
    return int(st["to_release"])


def _threads(rate: float) -> int:
    # Enough keep-alive connections that ~100 ms answers on a loaded box keep the pace.
    return max(4, int(rate // 10))


def _one_bad_canary(folder: Path, n: int, rate: float) -> CanaryTrial:
    """A fresh app per trial: a bad canary that slips through must not poison the next."""
    with App(folder) as app:
        app.write(manifest(gateway_port=app.gateway_port, rollout=CANARY, greeting="v1"))
        app.up()
        with Load(app.gateway_port, rate=rate, threads=_threads(rate)) as load:
            _more_traffic(load, int(rate))
            after = app.last_event_id()
            mark = load.count()
            release = _deploy(app, manifest(gateway_port=app.gateway_port, rollout=CANARY,
                                            greeting=f"bad{n}", error_rate=0.05))
            st = wait_for(lambda: (r := app.rollout())["phase"] in ("RolledBack", "Promoted",
                                                                    "Failed") and r,
                          150, "the bad canary to finish")
            stable = int(st["from_release"] if st["phase"] != "Promoted" else release)
            wait_for(lambda: app.settled(stable, 3), 60, "the replicas to settle")
            _more_traffic(load, int(rate))
            samples = load.snapshot()[mark:]
            events = [e for e in app.events(after=after) if e["service"] == "echo"]
    return canary_trial(samples, events, release, str(st["phase"]))


def bad_canaries(folder: Path, runs: int, healthy_runs: int, rate: float = 200.0,
                 log: bool = True) -> tuple[list[CanaryTrial], list[float]]:
    trials: list[CanaryTrial] = []
    for n in range(1, runs + 1):
        trial = _one_bad_canary(folder / f"bad{n}", n, rate)
        trials.append(trial)
        if log:
            print(f"  bad canary {n}: {trial.outcome}; canary answered for "
                  f"{trial.client_seconds:.1f} s (events {trial.event_seconds:.1f} s), "
                  f"{trial.failed}/{trial.total} failed, judge saw "
                  f"{trial.judge_canary_requests} canary requests, client "
                  f"{trial.rate:.0f} req/s, canary share {trial.canary_share:.1%}", flush=True)
    healthy: list[float] = []
    if healthy_runs:
        with App(folder / "healthy") as app:
            app.write(manifest(gateway_port=app.gateway_port, rollout=CANARY, greeting="v1"))
            app.up()
            with Load(app.gateway_port, rate=rate, threads=_threads(rate)):
                for n in range(1, healthy_runs + 1):
                    healthy.append(_one_healthy(app, n))
                    if log:
                        print(f"  healthy canary {n}: promoted after {healthy[-1]:.1f} s",
                              flush=True)
    return trials, healthy


def _one_healthy(app: App, n: int) -> float:
    release = _deploy(app, manifest(gateway_port=app.gateway_port, rollout=CANARY,
                                    greeting=f"good{n}"))
    st = wait_for(lambda: (r := app.rollout())["phase"] in ("RolledBack", "Promoted",
                                                            "Failed") and r,
                  240, "the healthy canary to finish")
    if st["phase"] != "Promoted":
        raise RuntimeError(f"healthy canary ended {st['phase']}: {st.get('reason')}")
    wait_for(lambda: app.settled(release, 3), 60, "stable on the new release")
    return float(st["finished"]) - float(st["started"])


def rolling_updates(folder: Path, updates: int, rate: float = 300.0,
                    log: bool = True) -> list[RollingUpdate]:
    results: list[RollingUpdate] = []
    with App(folder) as app:
        app.write(manifest(gateway_port=app.gateway_port, rollout=ROLLING, greeting="r0"))
        app.up()
        with Load(app.gateway_port, rate=rate, threads=_threads(rate)) as load:
            _more_traffic(load, int(rate))
            for n in range(1, updates + 1):
                mark = load.count()
                started = time.monotonic()
                release = _deploy(app, manifest(gateway_port=app.gateway_port,
                                                rollout=ROLLING, greeting=f"r{n}"))
                wait_for(lambda: app.rollout()["phase"] == "Promoted"
                         and app.settled(release, 3), 120, f"update {n} to finish")
                seconds = time.monotonic() - started
                _more_traffic(load, int(rate) // 2)
                results.append(rolling_update(load.snapshot()[mark:], seconds))
                if log:
                    r = results[-1]
                    print(f"  rolling update {n}: {r.failed}/{r.total} failed, "
                          f"{r.seconds:.1f} s", flush=True)
    return results
