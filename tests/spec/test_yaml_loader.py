"""YAML loading with line tracking and duplicate-key rejection."""

from __future__ import annotations

import pytest

from mso.spec.errors import ManifestError
from mso.spec.yaml_loader import load_yaml

TEXT = """\
app: shop
services:
  web:
    run:
      - python3
      - app.py
    ports: {http: 8000}
"""


def test_lines_of_keys_and_items_are_recorded() -> None:
    data, lines = load_yaml(TEXT, "mso.yaml")
    assert data["services"]["web"]["run"] == ["python3", "app.py"]
    assert lines.line_of(()) == 1
    assert lines.line_of(("app",)) == 1
    assert lines.line_of(("services", "web")) == 3
    assert lines.line_of(("services", "web", "run")) == 4
    assert lines.line_of(("services", "web", "run", 1)) == 6
    assert lines.line_of(("services", "web", "ports", "http")) == 7


def test_unknown_paths_fall_back_to_the_closest_ancestor() -> None:
    _, lines = load_yaml(TEXT, "mso.yaml")
    assert lines.line_of(("services", "web", "ports", "http", "port")) == 7
    assert lines.line_of(("nope",)) == 1


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "a"),
        ("x:\n  y: 1\n  y: 2\n", 3, "x.y"),
        ("x: {y: 1, y: 2}\n", 1, "x.y"),
        ("- {k: 1}\n- {k: 1, k: 2}\n", 2, "1.k"),
    ],
)
def test_duplicate_keys_are_rejected_with_their_line(text: str, line: int, field: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_yaml(text, "f.yaml")
    assert (info.value.line, info.value.field) == (line, field)
    assert "duplicate key" in info.value.message


def test_merge_key_overrides_are_not_duplicates() -> None:
    data, _ = load_yaml("base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  a: 9\n", "f.yaml")
    assert data["x"] == {"a": 9, "b": 2}


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(ManifestError) as info:
        load_yaml("a: 1\nb: [1, 2\nc: 3\n", "f.yaml")
    assert info.value.file == "f.yaml" and info.value.line is not None
    assert "YAML syntax error" in info.value.message and "column" in info.value.message


def test_complex_keys_are_rejected() -> None:
    with pytest.raises(ManifestError, match="mapping keys must be plain scalars"):
        load_yaml("? [a, b]\n: 1\n", "f.yaml")


def test_yaml_11_scalars_are_typed_like_pyyaml() -> None:
    data, _ = load_yaml("a: yes\nb: 010\nc: 1.5\nd: ~\ne: '8000'\n", "f.yaml")
    assert data == {"a": True, "b": 8, "c": 1.5, "d": None, "e": "8000"}


def test_keys_stay_as_written() -> None:
    data, lines = load_yaml("on: 1\nno: 2\n8000: 3\n1.0: 4\n", "f.yaml")
    assert data == {"on": 1, "no": 2, "8000": 3, "1.0": 4}
    assert lines.line_of(("8000",)) == 3


def test_int_and_bool_keys_do_not_collide() -> None:
    data, _ = load_yaml("1: a\ntrue: b\n", "f.yaml")
    assert data == {"1": "a", "true": "b"}
