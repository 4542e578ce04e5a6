"""Every feature of the support table names a conformance scenario that exists."""

from __future__ import annotations

from mso.spec import support
from tests.conformance import test_scenarios  # noqa: F401  (registers the scenarios)
from tests.conformance.conftest import SCENARIOS


def test_every_feature_has_its_scenario() -> None:
    missing = sorted({f.scenario for f in support.FEATURES} - set(SCENARIOS))
    assert missing == [], f"features without a conformance scenario: {missing}"


def test_every_scenario_runs_on_every_engine() -> None:
    # The `target` fixture is parametrized over all engines; a scenario that took an
    # engine list of its own could quietly leave one out.
    import inspect
    for name, function in SCENARIOS.items():
        fn = getattr(test_scenarios, function)
        assert list(inspect.signature(fn).parameters)[0] == "target", name
