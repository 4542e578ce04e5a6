"""Local docker images for the Kubernetes engine, built without any registry.

- the runtime image `mso-runtime:<tag>`: this machine's Python interpreter and standard
  library with the shared libraries they load (collected with `ldd`), plus mso and its
  dependencies, `docker import`ed from a tarball; the gateway and the bridge sidecar run
  it, and it is the base of app images;
- the app image `mso-<app>:<tag>`: the runtime plus the manifest's folder at /app, for
  services without `image:` (they run with `imagePullPolicy: Never`).

Tags are content hashes, so an unchanged input is never rebuilt. Written here because
the shared `mso.engines.images` module had not landed; it is the minimum this engine needs.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

import mso

_SKIP_DIRS = {".mso", ".git", "__pycache__", ".venv", "node_modules", ".mypy_cache",
              ".pytest_cache", ".hypothesis"}
_SKIP_SITE = ("mypy", "hypothesis", "kubernetes", "pytest", "_pytest", "pip", "setuptools",
              "black", "ruff", "pygments", "mypyc")
_TOOLS = ("/bin/sh", "/bin/dash", "/bin/sleep", "/usr/bin/env", "/bin/cat")


class ImageError(Exception):
    """docker failed to build or import an image."""


def _docker(*args: str, stdin: bytes | None = None) -> str:
    try:
        done = subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(f"docker {args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise ImageError(f"docker {args[0]} failed: {done.stderr.decode(errors='replace').strip()[-400:]}")
    return done.stdout.decode()


def image_exists(ref: str) -> bool:
    try:
        _docker("image", "inspect", ref)
    except ImageError:
        return False
    return True


def _tree_files(root: Path, bytecode: bool = False) -> list[Path]:
    """Files under `root`; with `bytecode`, compiled modules too (the runtime keeps them:
    without them every container start recompiles the standard library)."""
    skip = _SKIP_DIRS - {"__pycache__"} if bytecode else _SKIP_DIRS
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.endswith(".egg-info"))
        files += [Path(folder, n) for n in sorted(names) if bytecode or not n.endswith(".pyc")]
    return files


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in _tree_files(root):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        try:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            continue
    return h.hexdigest()[:12]


def _site_dirs() -> list[Path]:
    return [Path(sysconfig.get_paths()["purelib"])]


def _libraries(binaries: list[str]) -> set[str]:
    libs: set[str] = set()
    for chunk in range(0, len(binaries), 200):
        out = subprocess.run(["ldd", *binaries[chunk:chunk + 200]], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts else ""
            if path.startswith("/"):
                libs.add(path)
    return libs


def _runtime_members() -> list[tuple[str, str]]:
    """(host path, path in image) for everything the runtime image holds."""
    python = os.path.realpath(sys.executable)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    members = [(python, python)]
    members += [(str(p), str(p)) for p in _tree_files(stdlib, bytecode=True)
                if "site-packages" not in p.parts and "test" not in p.parts[len(stdlib.parts):][:1]]
    tools = [os.path.realpath(t) for t in _TOOLS if os.path.exists(t)]
    members += [(t, t) for t in tools]
    for site in _site_dirs():
        for path in _tree_files(site, bytecode=True):
            top = path.relative_to(site).parts[0]
            if not top.lower().startswith(_SKIP_SITE) and not top.endswith(".pth"):
                members.append((str(path), f"/opt/mso/site/{path.relative_to(site)}"))
    package = Path(mso.__file__).parent
    members += [(str(p), f"/opt/mso/site/mso/{p.relative_to(package)}") for p in _tree_files(package, bytecode=True)]
    binaries = [h for h, _ in members if h.endswith(".so") or h in tools or h == python]
    have = {h for h, _ in members}
    members += [(lib, lib) for lib in sorted(_libraries(binaries)) if lib not in have]
    return members


def runtime_tag() -> str:
    h = hashlib.sha256()
    for host, inside in _runtime_members():
        try:
            st = os.stat(host)
        except OSError:
            continue
        h.update(f"{inside}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:12]


_MERGED = (("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/"), ("/lib/", "/usr/lib/"),
           ("/lib64/", "/usr/lib64/"))


def _usr(path: str) -> str:
    """Debian's merged /usr: /lib/x is /usr/lib/x (the image links /lib -> usr/lib)."""
    for old, new in _MERGED:
        if path.startswith(old):
            return new + path[len(old):]
    return path


def _layout(members: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """(files: path in image -> host path, links: path in image -> target), deduplicated."""
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    for host, inside in members:
        if not os.path.exists(host):
            continue
        real = os.path.realpath(host)
        if inside == host:  # a host path: keep it at its real place, link the name used
            files[_usr(real)] = real
            if _usr(host) != _usr(real):
                links[_usr(host)] = _usr(real)
        else:
            files[inside] = real
    python = os.path.realpath(sys.executable)
    for alias, target in (("/usr/bin/sh", "/usr/bin/dash"), ("/usr/bin/python3", python),
                          ("/usr/bin/python", python)):
        if alias not in files:
            links[alias] = target
    for path in list(links):
        if path in files:
            del links[path]
    return files, links


def _runtime_tar(members: list[tuple[str, str]]) -> bytes:
    files, links = _layout(members)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("tmp", "etc", "usr", "usr/bin", "usr/lib", "usr/lib64", "app", "var",
                       "var/lib", "var/lib/mso"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        for top in ("bin", "sbin", "lib", "lib64"):
            info = tarfile.TarInfo(top)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{top}"
            tar.addfile(info)
        # hosts: files only. Without nsswitch.conf glibc asks DNS first, and the lab has
        # no DNS server: nothing may leave the machine.
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n"),
                           ("etc/nsswitch.conf", "hosts: files\nnetworks: files\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for inside, host in sorted(files.items()):
            tar.add(host, arcname=inside.lstrip("/"), recursive=False)
        for inside, target in sorted(links.items()):
            info = tarfile.TarInfo(inside.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def ensure_runtime() -> str:
    """Build (once per content) and return the runtime image reference."""
    ref = f"mso-runtime:{runtime_tag()}"
    if image_exists(ref):
        return ref
    data = _runtime_tar(_runtime_members())
    _docker("import", "-c", "ENV PYTHONPATH=/opt/mso/site", "-c",
            "ENV PATH=/usr/local/bin:/usr/bin:/bin", "-c", "WORKDIR /app", "-", ref, stdin=data)
    return ref


def app_image_ref(app: str, base_dir: Path, runtime: str) -> str:
    tag = hashlib.sha256(f"{tree_hash(base_dir)}{runtime}".encode()).hexdigest()[:12]
    return f"mso-{app}:{tag}"


def ensure_app_image(app: str, base_dir: Path, runtime: str) -> str:
    """The manifest's folder on top of the runtime image, at /app."""
    ref = app_image_ref(app, base_dir, runtime)
    if image_exists(ref):
        return ref
    with tempfile.TemporaryDirectory(prefix="mso-image-") as tmp:
        context = Path(tmp)
        with tarfile.open(context / "app.tar", "w") as tar:
            for path in _tree_files(base_dir):
                tar.add(str(path), arcname=str(path.relative_to(base_dir)), recursive=False)
        (context / "Dockerfile").write_text(f"FROM {runtime}\nADD app.tar /app/\nWORKDIR /app\n")
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        done = subprocess.run(["docker", "build", "-q", "-t", ref, str(context)],
                              capture_output=True, env=env, timeout=600)
        if done.returncode != 0:
            raise ImageError(f"docker build failed: {done.stderr.decode(errors='replace')[-400:]}")
    return ref


def ensure_build(app: str, service: str, base_dir: Path, context: str, dockerfile: str,
                 args: dict[str, str], target: str | None) -> str:
    """A service's own `build:` (its Dockerfile, its context)."""
    root = base_dir / context
    ref = f"mso-{app}-{service}:{tree_hash(root)}"
    if image_exists(ref):
        return ref
    cmd = ["build", "-q", "-t", ref, "-f", str(root / dockerfile)]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if target:
        cmd += ["--target", target]
    _docker(*cmd, str(root))
    return ref
