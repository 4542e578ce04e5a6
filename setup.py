"""Build hook: compile the proxy's per-request modules with mypyc (see docs/architecture.md).

Everything else is configured in pyproject.toml.  The modules below are ordinary typed
Python; mypyc turns them into C extensions, which takes the proxy's per-request Python
work from ~5.6 to ~3.3 µs (bench/proxy/micro.py).  Compilation is optional: without a C
compiler, or with MSO_COMPILE=0, the same modules run as plain Python.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: Written next to the compiled modules: the sha256 of each source they were built from.
#: mso.proxy.native compares it with the installed sources (mtimes mean nothing once a
#: wheel is unpacked, so a plain `pip install .` judged its fresh build stale).
BUILD_RECORD = "native_build.json"

HOT_MODULES = [
    "src/mso/proxy/accesslog.py",
    "src/mso/proxy/balancer.py",
    "src/mso/proxy/exchange.py",
    "src/mso/proxy/http_server.py",
    "src/mso/proxy/limits.py",
    "src/mso/proxy/metrics.py",
    "src/mso/proxy/response_head.py",
    "src/mso/proxy/safety.py",
    "src/mso/proxy/tcp.py",
    "src/mso/proxy/upstream.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("MSO_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("setup.py: mypyc not available; the proxy runs as plain Python", file=sys.stderr)
        return []
    # No config file: the project's mypy config loads the pydantic plugin, which the
    # isolated build environment does not have; these modules do not need it.
    exts = mypycify(["--config-file=", "--ignore-missing-imports", "--follow-imports=silent",
                     "--python-version=3.11", *HOT_MODULES],
                    opt_level="3", group_name="mso_proxy")
    for ext in exts:
        ext.optional = True  # no compiler: fall back to the pure-Python modules
    return list(exts)


class RecordingBuildExt(build_ext):
    """build_ext that also records which sources the compiled modules were built from."""

    def run(self) -> None:
        super().run()
        built = [m for m in HOT_MODULES
                 if any(e.name.endswith("." + Path(m).stem) for e in self.extensions)]
        if not built:
            return
        record = {Path(m).stem: hashlib.sha256(Path(m).read_bytes()).hexdigest()
                  for m in built}
        folder = Path("src/mso/proxy") if self.inplace else \
            Path(self.build_lib) / "mso" / "proxy"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / BUILD_RECORD).write_text(json.dumps(record, indent=1) + "\n")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": RecordingBuildExt})
