"""The Swarm gateway's image holds only what the proxy imports, so its tag moves only
when the proxy's code does (a new tag replaces the gateway task: a short outage)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import mso
from mso.engines.images import builder

SRC = Path(mso.__file__).parent


def test_the_closure_holds_the_proxy_and_what_it_imports_only() -> None:
    files = builder.proxy_modules(SRC)
    assert {"__init__.py", "proxy/__main__.py", "proxy/supervisor.py", "proxy/runtime.py",
            "errors.py", "ports.py"} <= files
    assert not any(f.startswith(("engines/", "cli", "daemon/", "store/")) for f in files)


def test_relative_and_lazy_imports_are_followed(tmp_path: Path) -> None:
    root = tmp_path / "mso"
    (root / "proxy").mkdir(parents=True)
    (root / "util").mkdir()
    (root / "__init__.py").write_text("")
    (root / "util" / "__init__.py").write_text("")
    (root / "util" / "clock.py").write_text("")
    (root / "unused.py").write_text("")
    (root / "errors.py").write_text("from mso.util import clock\n")
    (root / "proxy" / "__init__.py").write_text("")
    (root / "proxy" / "main.py").write_text(
        "from . import side\n\ndef f():\n    from ..errors import X\n")
    (root / "proxy" / "side.py").write_text("")
    assert builder.proxy_modules(root) == {
        "__init__.py", "proxy/__init__.py", "proxy/main.py", "proxy/side.py", "errors.py",
        "util/__init__.py", "util/clock.py"}


def test_the_tag_ignores_changes_outside_the_proxy(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "mso"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(mso, "__file__", str(copy / "__init__.py"))
    before = builder.gateway_image_tag("base", [], proxy_only=True)
    full = builder.gateway_image_tag("base", [])
    (copy / "engines" / "swarm" / "controller.py").write_text("# changed\n")
    assert builder.gateway_image_tag("base", [], proxy_only=True) == before
    assert builder.gateway_image_tag("base", []) != full
    (copy / "proxy" / "exchange.py").write_text("# changed\n")
    assert builder.gateway_image_tag("base", [], proxy_only=True) != before


def test_the_tag_ignores_the_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shim is in the base image, but the proxy never runs it."""
    before = builder.gateway_image_tag("mso/base:one", [], proxy_only=True)
    assert builder.gateway_image_tag("mso/base:two", [], proxy_only=True) == before
    monkeypatch.setattr(builder, "_shim_source", lambda: b"# another shim\n")
    assert builder.gateway_image_tag(builder.base_image_tag(), [], proxy_only=True) == before
