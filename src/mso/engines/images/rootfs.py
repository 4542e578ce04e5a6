"""The offline base image's root filesystem: the host's Python plus what it links against.

No registry is reachable from the machines mso targets, so the base image is made from
the host itself: the Python installation mso runs on (copied to the same path, so its
compiled-in prefix stays valid), the shared libraries `ldd` lists for it and for its
extension modules, `/bin/sh`, and mso's container shim. The result is a tar stream that
`docker import` turns into an image in about two seconds.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SHIM_PATH = "/opt/mso/shim.py"

# Big parts of the standard library no service needs; Tk also drags in X11.
_SKIP_DIRS = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip",
              "site-packages", "__phello__", "unittest/test"}
_SKIP_PREFIX = ("config-",)
# glibc's split-out libraries: wheels installed later (uvloop, httptools) link them.
_GLIBC_EXTRAS = ("libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
                 "libgcc_s.so.1", "libnss_files.so.2", "libnss_dns.so.2")
_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/lib64", "/lib")
_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")

_ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "hosts: files dns\npasswd: files\ngroup: files\n",
}


@dataclass(frozen=True)
class RootFs:
    """What goes into the base image, and the environment it needs."""

    python_home: Path
    files: list[tuple[Path, str]]  # (source on the host, path in the image without /)
    path_env: str
    #: (size, whole-second mtime) of each of `files`, read once by `collect` (a
    #: deploy digests the same few thousand files several times); empty: stat each time
    stats: tuple[tuple[int, int], ...] = ()

    def digest(self, extra: bytes = b"") -> str:
        """Identifies the content cheaply (paths, sizes, mtimes), for the cache tag."""
        h = hashlib.sha256(extra)
        stats = self.stats or tuple(_size_mtime(str(src)) for src, _ in self.files)
        for (_, arc), (size, mtime) in zip(self.files, stats, strict=True):
            h.update(f"{arc}\0{size}\0{mtime}\n".encode())
        return h.hexdigest()


def _size_mtime(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, int(st.st_mtime)


def python_home() -> Path:
    """The host Python installation (the base of a venv, not the venv)."""
    return Path(sys.base_prefix).resolve()


def _python_files(home: Path) -> Iterator[Path]:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    yield from (home / "bin" / name for name in (version, "python3", "python"))
    for lib in (home / "lib").glob("libpython*.so*"):
        yield lib
    stdlib = home / "lib" / version
    for root, dirs, files in os.walk(stdlib):
        rel = Path(root).relative_to(stdlib).as_posix()
        dirs[:] = [d for d in dirs if (f"{rel}/{d}" if rel != "." else d) not in _SKIP_DIRS
                   and not d.startswith(_SKIP_PREFIX)]
        for name in files:
            if not name.startswith("_tkinter"):
                yield Path(root) / name
    pip = stdlib / "site-packages" / "pip"
    for root, _dirs, files in os.walk(pip):
        yield from (Path(root) / name for name in files)


def shared_libraries(binaries: list[Path]) -> set[str]:
    """Every library path `ldd` lists for these ELF files (not-found ones are skipped)."""
    found: set[str] = set()
    for chunk in range(0, len(binaries), 200):
        proc = subprocess.run(["ldd", *map(str, binaries[chunk:chunk + 200])],
                              capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            match = _LDD_LINE.search(line)
            if match:
                found.add(match.group(1))
    return found


def collect(home: Path | None = None,
            libraries: Callable[[list[Path]], set[str]] = shared_libraries) -> RootFs:
    """Decide what the base image holds (reads the host, writes nothing)."""
    home = home or python_home()
    files: list[tuple[Path, str]] = []
    stats: list[tuple[int, int]] = []

    def add(path: Path, arc: str) -> None:
        try:
            stats.append(_size_mtime(str(path)))
        except OSError:
            return  # a dangling link
        files.append((path, arc))

    for path in _python_files(home):
        add(path, str(path).lstrip("/"))
    elves = [p for p, _ in files if p.suffix == ".so" or ".so." in p.name or p.parent.name == "bin"]
    sh = Path("/bin/sh").resolve()
    elves.append(sh)
    libs = libraries(elves)
    for name in _GLIBC_EXTRAS:
        where = next((d for d in _LIB_DIRS if Path(d, name).exists()), None)
        if where is not None:
            libs.add(f"{where}/{name}")
    for lib in sorted(libs):
        if not lib.startswith(str(home)):
            add(Path(lib), lib.lstrip("/"))
    add(sh, "bin/sh")
    path_env = f"{home}/bin:/usr/local/bin:/usr/bin:/bin"
    return RootFs(home, files, path_env, tuple(stats))


def write_tar(rootfs: RootFs, shim_files: dict[str, bytes]) -> bytes:
    """The image's root filesystem as an uncompressed tar (symlinks dereferenced), with
    `shim_files` (absolute path -> content: the shim and what it imports)."""
    buf = io.BytesIO()
    made = {"opt", "opt/mso"}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("tmp", "root", "app", "run", "opt/mso", "var/lib/mso/data"):
            info = tarfile.TarInfo(name)
            # The data folder too is everyone's (sticky, like /tmp): a service with
            # `user:` runs as a uid the image does not know, and must write its data.
            info.type, info.mode = tarfile.DIRTYPE, \
                0o1777 if name in ("tmp", "var/lib/mso/data") else 0o755
            tar.addfile(info)
        for name, text in _ETC.items():
            _add_bytes(tar, name, text.encode(), 0o644)
        for path in sorted(shim_files):
            for parent in reversed(PurePosixPath(path.lstrip("/")).parents[:-1]):
                if str(parent) not in made:  # opt/mso/mso, opt/mso/mso/engines, ...
                    made.add(str(parent))
                    info = tarfile.TarInfo(str(parent))
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
        for path, data in sorted(shim_files.items()):
            _add_bytes(tar, path.lstrip("/"), data, 0o755 if path == SHIM_PATH else 0o644)
        seen: set[str] = set()
        for src, arc in rootfs.files:
            if arc in seen:
                continue
            seen.add(arc)
            real = src.resolve()
            st = real.stat()
            info = tarfile.TarInfo(arc)
            info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o7777, int(st.st_mtime)
            with open(real, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))
