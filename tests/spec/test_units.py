"""Durations and sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mso.spec.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30.5s", 90.5),
        ("1.5h", 5400.0),
        (" 10s ", 10.0),
        ("10", 10.0),
        ("0.5", 0.5),
        (10, 10.0),
        (2.5, 2.5),
        ("0s", 0.0),
        ("1h0m0s5ms", 3600.005),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["10 parsecs", "", "s", "1x", "-5s", "-1", "1h 30m", "ms", True, None, [1], float("inf")])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256Mi", 256 * 1024**2),
        ("1Gi", 1024**3),
        ("512M", 512 * 10**6),
        ("1G", 10**9),
        ("100k", 100_000),
        ("64Ki", 65536),
        ("1.5Gi", 3 * 1024**3 // 2),
        ("256MiB", 256 * 1024**2),
        ("1024", 1024),
        (4096, 4096),
        (4096.0, 4096),
    ],
)
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["512m", "1g", "1 parsec", "K", "-1Mi", -1, 1.5, True, None, "1ki"])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_docker_style_lowercase_units_get_a_hint() -> None:
    with pytest.raises(ValueError, match="Mi/Gi are binary"):
        parse_size("512m")


@given(st.integers(min_value=0, max_value=10 * 24 * 3600 * 1000))
def test_duration_round_trips_through_its_text_form(millis: int) -> None:
    seconds = millis / 1000
    text = format_duration(seconds)
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-9)


@given(
    st.integers(min_value=0, max_value=48),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=999),
)
def test_compound_durations_add_up(h: int, m: int, s: int, ms: int) -> None:
    text = f"{h}h{m}m{s}s{ms}ms"
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


def test_format_duration_is_short() -> None:
    assert [format_duration(x) for x in (0, 0.25, 2, 90.5, 5400)] == ["0s", "250ms", "2s", "1m30.5s", "1h30m"]
