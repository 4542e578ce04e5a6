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
    assert not (tmp_path / native.BUILD_RECORD).exists()  # no record: mtimes decide


def _record(folder: Path, hashes: dict[str, str] | None = None) -> None:
    import hashlib
    import json
    (folder / native.BUILD_RECORD).write_text(json.dumps(hashes or {
        name: hashlib.sha256((folder / f"{name}.py").read_bytes()).hexdigest()
        for name in native.HOT}))


def test_a_recorded_build_is_judged_by_source_hash_not_mtime(tmp_path: Path) -> None:
    """A wheel unpacks every file with the time of the install, so a fresh `pip install .`
    used to look stale; the build records what it compiled instead."""
    _fake_build(tmp_path, age=-10)  # "older" by mtime, as after unpacking a wheel
    _record(tmp_path)
    assert native.choose({}, tmp_path) == (True, "compiled with mypyc")
    (tmp_path / "exchange.py").write_text("# edited after the build\n")
    compiled, why = native.choose({}, tmp_path)
    assert not compiled and why.startswith("compiled build is stale for exchange:")


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


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler here, so the proxy cannot be compiled")
def test_a_wheel_installed_elsewhere_runs_compiled(tmp_path: Path) -> None:
    """`pip install .` (a wheel, unpacked with new mtimes) gives the compiled proxy; it
    used to answer "compiled build is stale ... rerun pip install -e ." at once."""
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[2]
    tree = tmp_path / "tree"  # a copy: building in the clone would leave build/ there
    tree.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(repo / name, tree / name)
    shutil.copytree(repo / "src", tree / "src",
                    ignore=shutil.ignore_patterns("*.so", "native_build.json", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(tree)], check=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("mso-*.whl"))
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    probe = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "from mso.proxy import native; print(native.choose({}))", str(target)],
        capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "(True, 'compiled with mypyc')", probe.stderr
