"""The top-level `tracing:` key: sampling as a fraction or a percentage, a collector URL,
errors at file:line, and its place in the route table."""

from __future__ import annotations

from pathlib import Path

import pytest

from mso.controllers.routing import build_table
from mso.proxy.table import parse_table
from mso.spec.errors import ManifestError
from mso.spec.load import load_manifest

BASE = "app: t\nservices:\n  web: {run: [python3, app.py], ports: {http: 8000}}\n"


def load(tmp_path: Path, tracing: str) -> object:
    (tmp_path / "mso.yaml").write_text(BASE + tracing)
    return load_manifest(tmp_path / "mso.yaml", {}).manifest


@pytest.mark.parametrize("sample, fraction", [
    ("1%", 0.01), ("0.5%", 0.005), ("100%", 1.0), ("0", 0.0), ("0.25", 0.25), ("1", 1.0)])
def test_sample_is_a_fraction_or_a_percentage(tmp_path: Path, sample: str,
                                             fraction: float) -> None:
    m = load(tmp_path, f"tracing: {{sample: {sample!r}}}\n" if "%" in sample
             else f"tracing: {{sample: {sample}}}\n")
    assert m.tracing is not None  # type: ignore[attr-defined]
    assert m.tracing.sample == pytest.approx(fraction)  # type: ignore[attr-defined]
    assert m.tracing.endpoint is None  # type: ignore[attr-defined]


def test_defaults_to_one_percent_and_no_tracing_without_the_key(tmp_path: Path) -> None:
    assert load(tmp_path, "tracing: {}\n").tracing.sample == 0.01  # type: ignore[attr-defined]
    assert load(tmp_path, "").tracing is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("tracing, field, words", [
    ("tracing:\n  sample: 150%\n", "tracing.sample", "a percentage such as '1%'"),
    ("tracing:\n  sample: 2\n", "tracing.sample", "expected a fraction 0-1"),
    ("tracing:\n  sample: true\n", "tracing.sample", "expected a fraction 0-1"),
    ("tracing:\n  endpoint: localhost:4318\n", "tracing.endpoint", "http:// or https:// URL"),
    ("tracing:\n  endpont: http://x/\n", "tracing.endpont", ""),
])
def test_mistakes_are_reported_at_their_line(tmp_path: Path, tracing: str, field: str,
                                             words: str) -> None:
    with pytest.raises(ManifestError) as info:
        load(tmp_path, tracing)
    err = info.value.errors[0]
    assert (err.line, err.field) == (5, field)
    assert words in err.message


def test_the_route_table_carries_it_and_the_proxy_reads_it() -> None:
    raw = build_table(bind="127.0.0.1", gateway_port=8080, metrics_port=None, routes=[],
                      services=[], tracing={"endpoint": "http://127.0.0.1:4318/v1/traces",
                                            "sample": 0.01, "app": "shop"})
    settings = parse_table({**raw, "version": 1}).tracing
    assert settings is not None
    assert (settings.endpoint, settings.sample, settings.app) == (
        "http://127.0.0.1:4318/v1/traces", 0.01, "shop")
    plain = build_table(bind="127.0.0.1", gateway_port=8080, metrics_port=None, routes=[],
                        services=[])
    assert "tracing" not in plain and parse_table({**plain, "version": 1}).tracing is None


def test_deploy_reports_a_tracing_change() -> None:
    from mso.daemon.core import _app_changes
    old = {"gateway": {"bind": "127.0.0.1", "port": 8080}, "routes": []}
    on = {**old, "tracing": {"endpoint": "", "sample": 0.01}}
    (change,) = _app_changes(old, on)
    assert (change.service, change.change) == (
        "tracing", "0.01 of new traces sampled, to the dashboard only")
    (off,) = _app_changes(on, old)
    assert off.change == "off"
