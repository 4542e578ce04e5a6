"""How the proxy's judge and the manifest's providers combine (mso.analysis.run).

The providers here are fakes behind the MetricProvider protocol: what is under test is
the combination, the freshness of a final measurement and the background sampling, not
HTTP (tests/analysis/test_providers.py and the real-Prometheus tests cover that).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mso.analysis.judge import AnalysisConfig
from mso.analysis.providers import Measurement, ProxyMetricsProvider, RolloutContext
from mso.analysis.run import AnalysisRun, combine, providers_from_spec

PASS = Measurement("pass", "fine", 0.0)
FAIL = Measurement("fail", "canary 0.3 > max 0.05 (stable 0)", 0.3, stable_value=0.0)
NODATA = Measurement("inconclusive", "query returned no data: q")
PROXY_WAIT = Measurement("inconclusive", "no regression detected so far; analysis continues")


def test_any_fail_fails_at_any_time_with_the_providers_reason() -> None:
    assert combine(PROXY_WAIT, [("prometheus 1", FAIL, False)], final=False) == \
        ("fail", "prometheus 1: canary 0.3 > max 0.05 (stable 0)")
    assert combine(Measurement("fail", "judge says no"), [("webhook 2", PASS, True)],
                   final=True) == ("fail", "judge says no")


@pytest.mark.parametrize("provider", [NODATA, None])
def test_no_data_is_never_a_promotion(provider: Measurement | None) -> None:
    verdict, reason = combine(PASS, [("prometheus 1", provider, True)], final=True)
    assert verdict == "inconclusive" and reason.startswith("prometheus 1: ")


def test_pass_needs_the_judge_and_a_fresh_pass_from_every_provider() -> None:
    assert combine(PASS, [("prometheus 1", PASS, True), ("webhook 2", PASS, True)],
                   final=True)[0] == "pass"
    stale = combine(PASS, [("prometheus 1", PASS, False)], final=True)
    assert stale == ("inconclusive", "prometheus 1: waiting for a measurement taken after "
                                     "the analysis duration ended")
    assert combine(PROXY_WAIT, [("prometheus 1", PASS, True)], final=True)[0] == \
        "inconclusive"
    # Before the end of the analysis nothing passes, whatever the providers say.
    assert combine(PROXY_WAIT, [("prometheus 1", PASS, False)], final=False) == \
        ("inconclusive", "no regression detected so far; analysis continues")


class Scripted:
    """A provider answering from a script; `gate` holds its answers until set."""

    kind = "fake"

    def __init__(self, *answers: Measurement) -> None:
        self.answers = list(answers)
        self.calls: list[bool] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def describe(self) -> str:
        return "scripted"

    async def sample(self, final: bool = False) -> Measurement:
        self.calls.append(final)
        await self.gate.wait()
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def snapshot(requests: int) -> dict[str, Any]:
    def ep(n: int) -> dict[str, Any]:
        return {"requests": n, "responses": {"5xx": 0}, "connect_errors": 0,
                "latency_buckets_ms": [10, 100], "latency_counts": [n, 0, 0]}
    return {"clusters": {"web/http": {"subsets": {
        "stable": {"endpoints": {"s": ep(requests)}},
        "canary": {"endpoints": {"c": ep(requests)}}}}}}


def proxy() -> ProxyMetricsProvider:
    count = {"n": 0}

    async def fetch() -> dict[str, Any]:
        count["n"] += 100
        return snapshot(count["n"])
    return ProxyMetricsProvider(fetch, "web/http", config=AnalysisConfig(min_samples=10))


def test_a_run_rolls_back_on_a_provider_fail_and_stays_failed() -> None:
    async def scenario() -> None:
        fake = Scripted(PASS, FAIL, PASS)
        run = AnalysisRun(proxy(), [("prometheus 1", fake)])
        first = await run.poll(final=False, step=1)
        assert first.verdict == "inconclusive"
        assert [p.name for p in first.providers] == ["proxy", "prometheus 1"]
        await run.settle()
        assert (await run.poll(final=False, step=1)).verdict == "inconclusive"  # PASS read
        await run.settle()
        failed = await run.poll(final=False, step=1)  # FAIL read
        assert failed.verdict == "fail" and failed.reason.startswith("prometheus 1: canary 0.3")
        assert [(r.name, r.phase) for r in failed.changed] == [("prometheus 1", "fail")]
        shown = failed.to_dict()["providers"][1]
        assert (shown["phase"], shown["value"], shown["stable_value"]) == ("fail", 0.3, 0.0)
        await run.settle()
        assert (await run.poll(final=False, step=1)).verdict == "fail"  # sticky
        run.close()
    asyncio.run(scenario())


def test_a_final_pass_needs_a_sample_started_after_the_duration_ended() -> None:
    async def scenario() -> None:
        fake = Scripted(PASS)
        run = AnalysisRun(proxy(), [("prometheus 1", fake)])
        await run.poll(final=False, step=1)   # proxy baseline; provider sample started
        await run.settle()
        held = await run.poll(final=True, step=1)  # harvests a non-final pass
        assert held.verdict == "inconclusive" and "taken after the analysis" in held.reason
        await run.settle()
        passed = await run.poll(final=True, step=1)
        assert passed.verdict == "pass", passed.reason
        assert fake.calls[:2] == [False, True]
        await run.settle()
        # A final sample of step 1 does not count for step 3's end.
        assert (await run.poll(final=True, step=3)).verdict == "inconclusive"
        run.close()
    asyncio.run(scenario())


def test_a_hung_provider_does_not_hold_up_the_poll() -> None:
    async def scenario() -> None:
        fake = Scripted(PASS)
        fake.gate.clear()
        run = AnalysisRun(proxy(), [("prometheus 1", fake)])
        for _ in range(3):
            outcome = await asyncio.wait_for(run.poll(final=True, step=0), timeout=1)
            assert outcome.verdict == "inconclusive"
            assert "prometheus 1: no measurement yet" in outcome.reason
        assert len(fake.calls) == 1  # one sample in flight at a time
        run.close()
    asyncio.run(scenario())


def test_providers_from_the_manifest() -> None:
    made = providers_from_spec(
        [{"prometheus": {"url": "http://u:pw@prom:9090", "query": 'x{s="{{subset}}"}',
                         "max": 0.5}},
         {"webhook": {"url": "https://hooks.example/check"}}],
        RolloutContext("web", 1, 2))
    assert [(name, p.kind, p.describe()) for name, p in made] == [
        ("prometheus 1", "prometheus", 'http://***@prom:9090 `x{s="{{subset}}"}`'),
        ("webhook 2", "webhook", "https://hooks.example/check")]
