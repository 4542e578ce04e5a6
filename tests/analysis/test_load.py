"""The synthetic load generator (mso.analysis.load) behind a fake Sender."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from mso.analysis.judge import AnalysisConfig
from mso.analysis.load import (LATENCY_BUCKETS_MS, SYNTHETIC_HEADER, LoadSpec, SyntheticLoad,
                               merge_windows)
from mso.analysis.providers import ProxyMetricsProvider
from mso.analysis.windows import SubsetWindow
from mso.proxy.metrics import LATENCY_BUCKETS_MS as PROXY_BUCKETS


class FakeSender:
    """Answers by URL: a 5xx for the canary's port, 200 for the stable's; `refuse`
    raises like a refused connection."""

    def __init__(self, status: Mapping[str, int], refuse: str = "") -> None:
        self.status = status
        self.refuse = refuse
        self.sent: list[tuple[str, str, dict[str, str]]] = []
        self.gate: asyncio.Event | None = None

    async def send(self, method: str, url: str, headers: Mapping[str, str],
                   timeout: float) -> int:
        self.sent.append((method, url, dict(headers)))
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse and self.refuse in url:
            raise ConnectionRefusedError(url)
        return next(code for prefix, code in self.status.items() if prefix in url)

    async def close(self) -> None:
        pass


async def fire(load: SyntheticLoad) -> None:
    await asyncio.gather(*load.fire())


TARGETS = {"stable": ["http://s1", "http://s2"], "canary": ["http://c1"]}


def test_buckets_are_the_proxys() -> None:
    assert LATENCY_BUCKETS_MS == PROXY_BUCKETS


def test_each_subset_gets_requests_round_robin_over_replicas_paths_and_methods() -> None:
    sender = FakeSender({"http://s": 200, "http://c": 503})
    spec = LoadSpec(rate=5, paths=("/a", "/b"), methods=("GET", "HEAD"),
                    headers={"x-probe": "yes"})
    load = SyntheticLoad(spec, lambda subset: TARGETS[subset], sender=sender)

    async def go() -> None:
        for _ in range(4):
            await asyncio.gather(*load.fire())
    asyncio.run(go())
    urls = [url for _, url, _ in sender.sent]
    assert urls.count("http://s1/a") + urls.count("http://s1/b") == 2
    assert sum(u.startswith("http://s2") for u in urls) == 2
    assert sum(u.startswith("http://c1") for u in urls) == 4
    assert {(m, u.rsplit("/", 1)[1]) for m, u, _ in sender.sent} == {
        ("GET", "a"), ("GET", "b"), ("HEAD", "a"), ("HEAD", "b")}
    assert all(h["x-probe"] == "yes" and h[SYNTHETIC_HEADER] == "1" for _, _, h in sender.sent)
    stable, canary = load.drain()
    assert (stable.requests, stable.errors, canary.requests, canary.errors) == (4, 0, 4, 4)
    assert stable.latency_buckets_ms == LATENCY_BUCKETS_MS and sum(stable.latency_counts) == 4
    assert load.summary()["canary"] == {"sent": 4, "errors": 4, "skipped": 0,
                                        "statuses": {"5xx": 4}}
    assert load.drain() == (SubsetWindow(0, 0), SubsetWindow(0, 0))  # drained


def test_refused_connections_are_errors_and_no_replica_means_no_request() -> None:
    sender = FakeSender({"http://s": 200}, refuse="http://c")
    load = SyntheticLoad(LoadSpec(), lambda subset: TARGETS[subset], sender=sender)
    asyncio.run(fire(load))
    assert load.summary()["canary"]["statuses"] == {"error": 1}
    empty = SyntheticLoad(LoadSpec(), lambda subset: [], sender=sender)
    assert empty.fire() == []


def test_a_saturated_subset_skips_instead_of_piling_up() -> None:
    sender = FakeSender({"http://s": 200, "http://c": 200})
    load = SyntheticLoad(LoadSpec(rate=2), lambda subset: TARGETS[subset], sender=sender)

    async def go() -> None:
        sender.gate = asyncio.Event()
        first = load.fire() + load.fire()
        await asyncio.sleep(0)
        assert load.fire() == []  # 2 in flight per subset at rate 2: skipped
        sender.gate.set()
        await asyncio.gather(*first)
    asyncio.run(go())
    assert load.summary()["stable"]["skipped"] == 1 and load.summary()["stable"]["sent"] == 2


def test_blue_green_maps_the_preview_to_the_judges_canary() -> None:
    sender = FakeSender({"http://s": 200, "http://p": 500})
    targets = {"stable": ["http://s1"], "preview": ["http://p1"]}
    load = SyntheticLoad(LoadSpec(), lambda subset: targets[subset],
                         {"stable": "stable", "canary": "preview"}, sender=sender)
    asyncio.run(fire(load))
    assert load.drain()[1].errors == 1


def test_start_paces_requests_and_stop_ends_them() -> None:
    sender = FakeSender({"http://s": 200, "http://c": 200})
    load = SyntheticLoad(LoadSpec(rate=200), lambda subset: TARGETS[subset], sender=sender)

    async def go() -> None:
        load.start()
        while len(sender.sent) < 20:
            await asyncio.sleep(0.005)
        load.stop()
        count = len(sender.sent)
        await asyncio.sleep(0.05)
        assert len(sender.sent) == count and not load.running
    asyncio.run(go())


def test_merge_windows_adds_counts() -> None:
    n = len(LATENCY_BUCKETS_MS) + 1
    a = SubsetWindow(3, 1, LATENCY_BUCKETS_MS, (1,) * 3 + (0,) * (n - 3))
    b = SubsetWindow(2, 0, LATENCY_BUCKETS_MS, (2,) + (0,) * (n - 1))
    assert merge_windows(a, b).latency_counts[:3] == (3, 1, 1)
    assert merge_windows(SubsetWindow(0, 0), b) == b
    assert merge_windows(a, SubsetWindow(0, 0)) == a


def test_synthetic_windows_reach_the_judge_of_a_service_without_user_traffic() -> None:
    """Zero user traffic, a failing canary: the proxy's judge fails it on mso's requests."""
    sender = FakeSender({"http://s": 200, "http://c": 500})
    load = SyntheticLoad(LoadSpec(), lambda subset: TARGETS[subset], sender=sender)

    async def idle() -> dict[str, object]:
        return {"clusters": {}}
    provider = ProxyMetricsProvider(idle, "web/http", config=AnalysisConfig(min_samples=20),
                                    extra=load.drain)

    async def go() -> str:
        assert (await provider.sample()).phase == "inconclusive"  # baseline
        for _ in range(40):
            await asyncio.gather(*load.fire())
        measured = await provider.sample()
        assert measured.verdict is not None and measured.verdict.canary.requests == 40
        return measured.phase
    assert asyncio.run(go()) == "fail"
