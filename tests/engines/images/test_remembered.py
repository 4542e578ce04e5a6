"""The image checks of a deploy that changed nothing skip their slow parts (ldd of the
host's Python, reading the proxy's imports): values remembered under a digest of the
files' names, sizes and modification times."""

from __future__ import annotations

from pathlib import Path

import pytest

from mso.engines.images import builder


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MSO_IMAGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_value_is_computed_once_per_key() -> None:
    calls: list[int] = []

    def compute() -> list[str]:
        calls.append(1)
        return ["a", "b"]

    assert builder.remembered("kind", "k1", compute) == ["a", "b"]
    assert builder.remembered("kind", "k1", compute) == ["a", "b"]
    assert len(calls) == 1
    assert builder.remembered("kind", "k2", compute) == ["a", "b"]
    assert len(calls) == 2


def test_a_changed_file_changes_the_key(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("x = 1\n")
    before = builder.stat_key([f])
    f.write_text("x = 22\n")
    assert builder.stat_key([f]) != before
    assert builder.stat_key([tmp_path / "missing.py"]) != before


def test_a_broken_or_unwritable_cache_only_costs_the_work(_cache: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    _cache.mkdir(parents=True)
    (_cache / "kind.json").write_text("{not json")
    assert builder.remembered("kind", "k", lambda: 7) == 7
    assert builder.remembered("kind", "k", lambda: 8) == 7  # rewritten whole
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("MSO_IMAGE_CACHE", str(blocked / "cache"))  # under a file
    assert builder.remembered("kind", "k", lambda: 9) == 9


def test_only_the_newest_keys_are_kept() -> None:
    for n in range(20):
        builder.remembered("kind", f"k{n}", lambda n=n: n)  # type: ignore[misc]
    calls: list[int] = []
    assert builder.remembered("kind", "k19", lambda: calls.append(1) or 0) == 19
    assert builder.remembered("kind", "k0", lambda: calls.append(1) or -1) == -1
    assert len(calls) == 1


def test_the_proxy_modules_are_read_again_when_a_file_changes(tmp_path: Path) -> None:
    root = tmp_path / "mso"
    (root / "proxy").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "other.py").write_text("")
    (root / "proxy" / "__init__.py").write_text("")
    assert builder.proxy_modules(root) == {"__init__.py", "proxy/__init__.py"}
    (root / "proxy" / "__init__.py").write_text("from mso import other\n")
    assert builder.proxy_modules(root) == {"__init__.py", "proxy/__init__.py", "other.py"}
