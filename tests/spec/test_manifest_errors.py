"""ManifestError / ManifestErrors formatting."""

from __future__ import annotations

import pytest

from mso.spec.errors import LocatedError, ManifestError, ManifestErrors


def test_one_line_with_file_line_field_message() -> None:
    err = ManifestError("mso.yaml", 12, "services.web.ports.http", "port 70000 is out of range (1-65535)")
    assert str(err) == "mso.yaml:12: services.web.ports.http: port 70000 is out of range (1-65535)"
    assert err.errors == (err,)


def test_without_line_or_field() -> None:
    assert str(ManifestError("mso.yaml", None, "", "file not found")) == "mso.yaml: file not found"
    assert str(ManifestError("mso.yaml", 3, "", "bad")) == "mso.yaml:3: bad"


def test_many_errors_sorted_by_line_one_per_line_and_deduplicated() -> None:
    a = ManifestError("m", 9, "b", "second")
    b = ManifestError("m", 2, "a", "first")
    errs = ManifestErrors([a, b, a])
    assert str(errs).splitlines() == ["m:2: a: first", "m:9: b: second"]
    assert (errs.line, errs.field) == (2, "a")
    assert isinstance(errs, ManifestError)


def test_nested_errors_are_flattened() -> None:
    inner = ManifestErrors([ManifestError("m", 1, "x", "one"), ManifestError("m", 2, "y", "two")])
    outer = ManifestErrors([inner, ManifestError("m", 3, "z", "three")])
    assert [e.field for e in outer.errors] == ["x", "y", "z"]


def test_empty_error_list_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        ManifestErrors([])


def test_located_error_reads_as_a_plain_message() -> None:
    assert str(LocatedError([(("a", 0), "bad"), ((), "worse")])) == "a.0: bad; worse"
