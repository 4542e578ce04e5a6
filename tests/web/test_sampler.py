"""The dashboard's traffic history (mso.web.data.Sampler) over real proxy counters."""

from __future__ import annotations

import asyncio
from typing import Any

from mso.proxy.metrics import Registry
from mso.web.data import Sampler


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_point_a_second_per_subset_summed_over_ports() -> None:
    registry = Registry()
    clock = Clock()

    async def fetch() -> dict[str, Any]:
        return registry.snapshot({})

    sampler = Sampler(fetch, lambda: {"web/http": "web", "web/admin": "web", "db/pg": "db"},
                      clock)
    asyncio.run(sampler.sample_once())  # the baseline: no point yet
    assert sampler.series("web") == {}
    for _ in range(90):
        registry.get("web/http", "stable", "web-1").requests += 1
        registry.get("web/http", "stable", "web-1").observe(200, 0.004)
    for _ in range(10):
        registry.get("web/admin", "stable", "web-1").requests += 1
        registry.get("web/admin", "stable", "web-1").observe(500, 0.3)
    for _ in range(20):
        registry.get("web/http", "canary", "web-canary-1").requests += 1
        registry.get("web/http", "canary", "web-canary-1").observe(200, 0.001)
    clock.now += 2.0
    asyncio.run(sampler.sample_once())
    series = sampler.series("web")
    assert set(series) == {"stable", "canary"}
    (stable,), (canary,) = series["stable"], series["canary"]
    assert (stable["requests"], stable["errors"], stable["rate"]) == (100, 10, 50.0)
    assert stable["error_rate"] == 0.1 and stable["p99_ms"] is not None
    assert stable["p99_ms"] > 200 and stable["p50_ms"] < 5
    assert (canary["requests"], canary["errors"], canary["error_rate"]) == (20, 0, 0.0)
    total = sampler.summary("web")
    assert total["requests"] == 120 and total["errors"] == 10
    assert sampler.summary("web", "canary")["requests"] == 20
    assert sampler.series("web", after=clock.now) == {"stable": [], "canary": []}
    clock.now += 60
    assert sampler.summary("web")["requests"] == 0  # older than the summary's window


def test_a_proxy_that_does_not_answer_leaves_a_gap_and_says_why() -> None:
    async def fetch() -> dict[str, Any]:
        raise ConnectionRefusedError("proxy socket")

    sampler = Sampler(fetch, lambda: {"web/http": "web"}, Clock())
    asyncio.run(sampler.sample_once())
    assert "proxy metrics unavailable" in sampler.error and sampler.series("web") == {}
