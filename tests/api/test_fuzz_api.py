"""The daemon's REST API under schemathesis: requests generated from its own OpenAPI
schema (valid and invalid), sent over real HTTP to a real daemon's TCP port with the
token. Every answer must be a declared status with a schema-conformant JSON body, never a
5xx; the daemon must keep serving its app throughout.

Left out of the generated calls: `POST /v1/down` (it ends the daemon the test talks to),
`POST /v1/services/{service}/run` (it runs the generated argv as a program) and the
followers (`follow=true` streams until the daemon stops); each has hand-written tests in
test_app.py and tests/e2e.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings

from mso.paths import StatePaths
from tests.e2e.harness import MsoApp, free_port, wait_for

pytestmark = pytest.mark.e2e

MANIFEST = """
app: fuzzapi
gateway: {port: GATEWAY_PORT}
routes: [{path: /, service: echo}]
services:
  echo:
    run: [PYTHON, ECHO_APP]
    ports: {http: 8000}
"""
EXAMPLES = int(os.environ.get("MSO_API_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MsoApp, int, str]]:
    app = MsoApp(tmp_path_factory.mktemp("fuzzapi"))
    app.write(MANIFEST)
    port = free_port()
    try:
        app.cli("up", "-d", "--api-port", str(port))
        app.instance = app.status()["instance"]
        token = StatePaths.for_manifest(app.manifest).api_token.read_text().strip()
        yield app, port, token
    finally:
        app.teardown()


def test_generated_requests_get_declared_answers(fuzzed_app: tuple[MsoApp, int, str]) -> None:
    """Per operation, EXAMPLES generated cases (schemathesis' pytest plugin does not run
    under pytest 9 yet, so the operations are driven with Hypothesis here)."""
    _, port, token = fuzzed_app
    auth = {"Authorization": f"Bearer {token}"}
    schema = (schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json",
                                            headers=auth)
              .exclude(path="/v1/down").exclude(path="/v1/services/{service}/run"))
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            if isinstance(case.query, dict) and \
                    str(case.query.get("follow")).lower() in ("true", "1"):
                case.query["follow"] = "false"
            # A request valid by the schema may still name a manifest that is not there
            # (422 with the reason): that check does not apply to this API.
            case.call_and_validate(headers=auth, timeout=30,
                                   excluded_checks=[positive_data_acceptance])

        try:
            check()
        except BaseException as exc:  # every operation is tried; all failures reported
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 10
    assert not failures, "\n\n".join(failures)


def test_the_app_still_serves_after_the_fuzzing(fuzzed_app: tuple[MsoApp, int, str]) -> None:
    app, _, _ = fuzzed_app
    wait_for(lambda: app.get("/")[0] == 200, message="the app answers through the gateway")
