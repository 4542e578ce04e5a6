"""Turn the rollout benchmark's measurements into the `## Rollouts (issue 4)` Markdown section.

Pure functions: `render` builds the section from a `Results`, `replace_section` swaps it
into docs/benchmarks.md, leaving every other section as it was.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import docs_section  # noqa: E402
from baselines import PeerEstimate
from measure import CanaryTrial, RollingUpdate, spread

SECTION = "## Rollouts (issue 4)"

RATE, WEIGHT, ERRORS = 200.0, 0.10, 0.05
DETECT_GOAL_S, FAILED_GOAL = 10.0, 20


@dataclass(frozen=True)
class Floor:
    confidence: float
    margin: float
    canary_requests: int | None


@dataclass(frozen=True)
class Results:
    canary: list[CanaryTrial]
    rolling: list[RollingUpdate]
    rolling_rate: float
    healthy: list[float]          # seconds from `mso deploy` to Promoted
    peers: list[PeerEstimate]
    floors: list[Floor]
    command: str
    minutes: float
    machine: str


def _s(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f} s"


def _n(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:g}"


def _f0(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0f}"


def _f1(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def _back(t: CanaryTrial, value: float) -> float:
    """A time to roll back exists only for trials that were rolled back."""
    return value if t.outcome == "RolledBack" else float("nan")


def canary_table(trials: Sequence[CanaryTrial]) -> list[str]:
    rows: list[tuple[str, list[float], Callable[[float], str]]] = [
        ("traffic on the canary, client: first to last canary answer",
         [_back(t, t.client_seconds) for t in trials], _s),
        ("traffic on the canary, events: `weight set` to `rollout.rolledback`",
         [_back(t, t.event_seconds) for t in trials], _s),
        ("`weight set` to `analysis.fail`", [t.analysis_failed - t.weight_set for t in trials], _s),
        ("failed user requests (non-2xx / connection errors)",
         [float(t.failed) for t in trials], _n),
        ("canary requests the judge had seen when it failed",
         [float(t.judge_canary_requests) for t in trials], _n),
        ("client request rate while the canary answered (req/s)",
         [t.rate for t in trials], _f0),
        ("share of those answered by the canary (%)",
         [100 * t.canary_share for t in trials], _f1),
    ]
    lines = ["| measure | runs | median | max |", "|---|---|---|---|",
             "| outcome | " + ", ".join(t.outcome for t in trials) + " | | |"]
    for label, values, fmt in rows:
        sp = spread(values)
        runs = ", ".join(fmt(v) for v in values)
        lines.append(f"| {label} | {runs} | {fmt(sp.median)} | {fmt(sp.max)} |")
    return lines


def goal_line(trials: Sequence[CanaryTrial]) -> str:
    seconds = spread([_back(t, t.client_seconds) for t in trials])
    failed = spread([float(t.failed) for t in trials])
    promoted = sum(t.outcome != "RolledBack" for t in trials)
    met_time = seconds.max < DETECT_GOAL_S and not promoted
    met_failed = failed.max < FAILED_GOAL
    verdict = "met" if met_time and met_failed else "NOT met"
    missed = (f" {promoted} of {len(trials)} bad canaries were not rolled back at all "
              "(the 60 s analysis ended without a fail verdict, so they were promoted)."
              if promoted else "")
    return (f"Goal (rolled back within {DETECT_GOAL_S:g} s, fewer than {FAILED_GOAL} failed user "
            f"requests): **{verdict}** — worst run {_s(seconds.max)} and "
            f"{_n(failed.max)} failed requests; median {_s(seconds.median)} and "
            f"{_n(failed.median)} (rolled-back runs only for times).{missed}")


def peer_table(trials: Sequence[CanaryTrial], peers: Sequence[PeerEstimate]) -> list[str]:
    ours = spread([_back(t, t.client_seconds) for t in trials]).median
    lines = ["| tool | settings | time to roll back | failed user requests | vs mso (median) |",
             "|---|---|---|---|---|"]
    mso_failed = spread([float(t.failed) for t in trials]).median
    lines.append(f"| mso (measured) | defaults, `interval: 1s` | {_s(ours)} | "
                 f"{_n(mso_failed)} | 1.0x |")
    for p in peers:
        ratio = f"{p.seconds / ours:.1f}x slower" if ours > 0 else "n/a"
        lines.append(f"| {p.tool} (arithmetic) | {p.settings} | ~{p.seconds:.0f} s | "
                     f"~{p.failed_requests(RATE, WEIGHT, ERRORS):.0f} | {ratio} |")
    return lines


def rolling_lines(updates: Sequence[RollingUpdate], rate: float) -> list[str]:
    failed = sum(u.failed for u in updates)
    total = sum(u.total for u in updates)
    secs = spread([u.seconds for u in updates])
    errors = [e for u in updates for e in u.errors][:5]
    per = ", ".join(f"{u.failed}/{u.total}" for u in updates)
    verdict = "met" if failed == 0 else "NOT met"
    return [f"{len(updates)} rolling updates (3 replicas, `max_surge: 1`, `max_unavailable: 0`) "
            f"under {rate:g} req/s. Each changes an env var, runs `mso deploy` and waits until "
            "all 3 replicas are READY on the new release and the rollout is Promoted.", "",
            f"- failed/total requests: **{failed}/{total}** (goal 0: **{verdict}**); per update: "
            f"{per}" + (f"; first errors: {'; '.join(errors)}" if errors else ""),
            f"- time per update (deploy to Promoted): median {_s(secs.median)}, "
            f"max {_s(secs.max)}"]


def floor_lines(floors: Sequence[Floor]) -> list[str]:
    lines = ["| confidence | `max_error_rate_increase` | fewest canary requests | "
             "at 20 canary req/s | user errors by then (5%) |", "|---|---|---|---|---|"]
    for f in floors:
        n = f.canary_requests
        at = "never" if n is None else f"{n / (RATE * WEIGHT):.1f} s"
        err = "n/a" if n is None else f"{n * ERRORS:.0f}"
        lines.append(f"| {f.confidence:g} | {f.margin:g} | {n if n is not None else '>20000'}"
                     f" | {at} | {err} |")
    return lines


def render(res: Results) -> str:
    lines = [SECTION, "",
             f"Reproduce: `{res.command}` (took {res.minutes:.1f} min here; always runs "
             f"`mso down`). {res.machine}", "",
             "The app is `tests/e2e/apps/echo.py` (3 replicas, readiness probe every 500 ms) "
             "behind mso's gateway; the load generator (`bench/rollouts/loadgen.py`, threads "
             "with keep-alive, paced) counts every non-2xx answer and connection error.", "",
             f"### Bad canary: 10% weight, {RATE:g} req/s, {ERRORS:.0%} errors on the canary", "",
             "Steps `set_weight: 10`, `analysis: {duration: 60s}`; analysis settings are the "
             "defaults (`interval: 1s`, `min_samples: 50`, `confidence: 0.99`, "
             "`max_error_rate_increase: 0.01`). Stable answers no errors. "
             f"{len(res.canary)} runs.", ""]
    lines += canary_table(res.canary)
    lines += ["", goal_line(res.canary), "",
              "Peers for the same canary (their rollback time is set by their check interval, "
              "so it is arithmetic, not measured; user errors = time x 200 req/s x 10% x 5%). "
              "Argo's documented example `successCondition: result >= 0.95` would not even "
              "catch a 5% canary reliably; the figures assume a condition that does.", ""]
    lines += peer_table(res.canary, res.peers)
    lines += ["", "What bounds mso's time: the judge gives no verdict before `min_samples` (50) "
              "requests per subset, i.e. 2.5 s of canary traffic at 20 req/s, and it reads the "
              "proxy once per `interval` (1 s). Since commit 9ed6bc9 (analysis: the margin "
              "filters the *estimated* increase) the e-process has usually rejected by then, so "
              "runs end at the first or second poll past 50 canary requests. Before that commit "
              "the margin was a gate on time-uniform confidence bounds (canary lower bound "
              "minus stable upper bound > margin, each at alpha/4); a first run of this "
              "benchmark then measured 29 s and 46 s to roll back (21 and 24 failed requests) "
              "and one 5% canary was *promoted*, because the 60 s analysis ended before that "
              "gate opened and the final verdict is `pass` whenever nothing was rejected. Even "
              "a canary showing exactly 5% errors (stable none) could not clear the old gate "
              "before:", ""]
    lines += floor_lines(res.floors)
    lines += ["", "### Rolling update under load", ""]
    lines += rolling_lines(res.rolling, res.rolling_rate)
    if res.healthy:
        sp = spread(res.healthy)
        lines += ["", "### Healthy canary, default analysis settings", "",
                  "Same steps (`set_weight: 10`, `analysis: {duration: 60s}`), no errors, "
                  f"{RATE:g} req/s: `mso deploy` to Promoted (stable replicas on the new "
                  f"release) took {', '.join(_s(v) for v in res.healthy)} (median "
                  f"{_s(sp.median)}); the 60 s analysis step is most of it."]
    return "\n".join(lines) + "\n"


def replace_section(text: str, report: str) -> str:
    """`text` with the section `SECTION` replaced by (or appended as) `report`."""
    return docs_section.replace_section(text, SECTION, report)
