"""The mypyc build of the per-request modules: chosen when fresh, never when stale, and the
pure-Python modules still serve when it is off."""
from __future__ import annotations

import http.client
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import pytest

import mso.proxy
import mso.proxy.exchange
from mso.proxy import native

from .conftest import Proxy, http_table


def _fake_build(folder: Path, age: float) -> None:
    """Sources plus 'compiled' files `age` seconds newer (negative: older)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name in native.HOT:
        src = folder / f"{name}.py"
        src.write_text("")
        so = folder / f"{name}{suffix}"
        so.write_bytes(b"")
        t = src.stat().st_mtime + age
        os.utime(so, (t, t))


def test_fresh_build_is_chosen(tmp_path: Path) -> None:
    _fake_build(tmp_path, age=10)
    assert native.choose({}, tmp_path) == (True, "compiled with mypyc")


def test_source_edited_after_build_falls_back_to_python(tmp_path: Path) -> None:
    _fake_build(tmp_path, age=-10)
    compiled, why = native.choose({}, tmp_path)
    assert not compiled and "stale" in why and "pip install -e ." in why


def test_one_missing_module_means_none_compiled(tmp_path: Path) -> None:
    _fake_build(tmp_path, age=10)
    next(tmp_path.glob("exchange.*.so")).unlink()
    compiled, why = native.choose({}, tmp_path)
    assert not compiled and "exchange" in why


def test_pure_switch_overrides_a_fresh_build(tmp_path: Path) -> None:
    _fake_build(tmp_path, age=10)
    assert native.choose({"MSO_PROXY_PURE": "1"}, tmp_path) == (False, "MSO_PROXY_PURE=1")


def test_no_build_at_all_says_how_to_get_one(tmp_path: Path) -> None:
    compiled, why = native.choose({}, tmp_path)
    assert not compiled and "not compiled" in why


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler here, so the proxy cannot be compiled")
@pytest.mark.skipif(os.environ.get("MSO_PROXY_PURE") == "1", reason="MSO_PROXY_PURE=1 is set")
def test_installed_proxy_runs_compiled() -> None:
    # The benchmark figures are for the compiled build: with a compiler present, the
    # install (scripts/setup.sh) must have produced a fresh one.
    assert mso.proxy.COMPILED, native.REASON
    assert mso.proxy.exchange.__file__.endswith(sysconfig.get_config_var("EXT_SUFFIX"))


@pytest.mark.e2e
@pytest.mark.parametrize("pure", ["1", "0"])
def test_both_builds_proxy_requests(backends: Any, pure: str) -> None:
    proxy = Proxy(env={"MSO_PROXY_PURE": pure})
    try:
        ports = proxy.set_table(http_table({"web": {"stable": (100, [backends("b1")])}}))
        expected = "mypyc" if pure == "0" and native.choose({})[0] else "python"
        assert proxy.call("ping")["build"] == expected
        conn = http.client.HTTPConnection("127.0.0.1", ports["gw"], timeout=20)
        for _ in range(3):
            conn.request("GET", "/x")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
        conn.close()
    finally:
        proxy.stop()
