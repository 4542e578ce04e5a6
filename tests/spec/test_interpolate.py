"""Interpolation of ${VAR} forms in manifest strings."""

from __future__ import annotations

import pytest

from mso.spec.interpolate import InterpolationError, interpolate

ENV = {"SET": "value", "EMPTY": "", "OTHER": "x"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${SET}", "value"),
        ("a-${SET}-b", "a-value-b"),
        ("${EMPTY}", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${SET:-dflt}", "value"),
        ("${UNSET-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${UNSET:-}", ""),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("$$", "$"),
        ("$${SET}", "${SET}"),
        ("cost: $5", "cost: $5"),
        ("echo $HOME", "echo $HOME"),
        ("trailing $", "trailing $"),
        ("${UNSET:-${OTHER}}", "x"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${SET:-${ALSO_UNSET}}", "value"),  # defaults are expanded only when used
        ("${UNSET:-a}b}", "ab}"),
        ("${UNSET:-$$}", "$"),
        ("${SET}${OTHER}", "valuex"),
        ("${UNSET:-http://h:80/p}", "http://h:80/p"),
    ],
)
def test_interpolation_forms(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("${UNSET}", "variable UNSET is not set"),
        ("${UNSET:?tell me}", "variable UNSET: tell me"),
        ("${EMPTY:?}", "variable EMPTY is not set or empty"),
        ("${UNSET?}", "variable UNSET is not set"),
        ("${1BAD}", "invalid variable reference"),
        ("${}", "invalid variable reference"),
        ("${SET", "invalid variable reference to SET"),
        ("${UNSET:-open", "unclosed reference"),
        ("${SET!x}", "invalid variable reference to SET"),
    ],
)
def test_interpolation_errors_name_the_variable(text: str, fragment: str) -> None:
    with pytest.raises(InterpolationError, match=fragment.replace("?", r"\?")):
        interpolate(text, ENV)


def test_empty_but_set_passes_the_unset_only_check() -> None:
    assert interpolate("${EMPTY?must be set}", ENV) == ""


def test_interpolation_is_applied_to_values_not_keys(tmp_path: object) -> None:
    from mso.spec.interpolate import interpolate_tree
    from mso.spec.yaml_loader import LineMap

    data = {"${SET}": ["${SET}", {"k": "${OTHER}"}], "n": 3}
    assert interpolate_tree(data, ENV, "f", LineMap()) == {"${SET}": ["value", {"k": "x"}], "n": 3}
