"""Building and caching mso's images: the offline base, the gateway, and service images.

Every image is tagged with a digest of what went into it, so building again with the same
inputs is a cache hit (one `docker image inspect`). Builds use the legacy builder through
the Docker API: BuildKit needs a registry or network access for its frontends.

- base: `mso/base:<digest>`, from `rootfs.collect()` (host Python, libraries, shim);
- gateway: `mso/gateway:<digest>`, the base plus mso and the proxy's wheels (uvloop,
  httptools, prometheus_client), downloaded once on the host with `pip download` and
  installed in the image with `--no-index` (pip in containers cannot verify TLS here);
  `mso/gateway-proxy` (the Swarm gateway) holds only the modules `python -m mso.proxy`
  imports, so its digest, and the running gateway, change only when the proxy's code does;
- services: `image:` is used as is; `build:` runs `docker build` on the context;
  otherwise the app's folder (the manifest's) is copied onto the base image once per app
  and per content digest, and every `run:` service of the app shares that image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]
import docker.errors  # type: ignore[import-untyped]

import mso
from mso.engines.images import rootfs
from mso.releases.sources import private_files
from mso.spec.load import LoadedManifest
from mso.errors import Failed

GATEWAY_PACKAGES = ("uvloop", "httptools", "prometheus_client")
_SKIP_NAMES = {".mso", ".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".venv",
               "node_modules", ".hypothesis", ".tox"}


class ImageError(Failed):
    """An image could not be built (the message says which and why)."""


def _client(client: docker.DockerClient | None) -> docker.DockerClient:
    if client is not None:
        return client
    try:
        return docker.from_env(version="auto", timeout=600)
    except docker.errors.DockerException as exc:
        raise ImageError(f"cannot reach the Docker engine: {exc}") from exc


def _exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


#: The local engine's modules the shim shares (standard library only; see shim.py), with
#: the package files that make them importable beside it, under /opt/mso.
SHIM_SHARED = ("__init__.py", "engines/__init__.py", "engines/local/__init__.py",
               "engines/local/probes.py", "engines/local/backoff.py")


def _shim_files() -> dict[str, bytes]:
    """Path in the image -> content: the shim and the modules it shares."""
    package = Path(rootfs.__file__).parents[2]  # src/mso
    files = {rootfs.SHIM_PATH: Path(rootfs.__file__).with_name("shim.py").read_bytes()}
    home = str(Path(rootfs.SHIM_PATH).parent)
    for rel in SHIM_SHARED:
        files[f"{home}/mso/{rel}"] = (package / rel).read_bytes()
    return files


def _shim_source() -> bytes:
    """What the base image's tag depends on besides the runtime: the shim's files."""
    return b"".join(path.encode() + b"\0" + data + b"\0"
                    for path, data in sorted(_shim_files().items()))


def stat_key(paths: Iterable[Path]) -> str:
    """A digest of the paths' names, sizes and modification times (what the image tags
    already trust to tell a changed file), for `remembered`."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0-\n".encode())
    return h.hexdigest()


_REMEMBER = 8  # keys kept per kind


def remembered(kind: str, key: str, compute: Callable[[], Any]) -> Any:
    """`compute()`'s JSON value, kept in the image cache folder under `key` (a digest of
    what the value is made from): a deploy that changed nothing skips the work (`ldd`
    of the host's Python, reading mso's proxy with `ast`). An unreadable or unwritable
    cache only costs the work."""
    path = _cache_folder() / f"{kind}.json"
    try:
        known: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and key in known:
        return known[key]
    value = compute()
    kept = {k: v for k, v in known.items() if k != key} if isinstance(known, dict) else {}
    kept = dict(list(kept.items())[-(_REMEMBER - 1):], **{key: value})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(kept))
        temporary.replace(path)
    except OSError:
        pass
    return value


def _cache_folder() -> Path:
    return Path(os.environ.get("MSO_IMAGE_CACHE", Path.home() / ".cache/mso/images"))


_ROOTFS: list[tuple[float, rootfs.RootFs]] = []
ROOTFS_TTL = 10.0  # seconds one look at the host's Python serves (a CLI command's images)


def _host_rootfs() -> rootfs.RootFs:
    """`rootfs.collect()`, kept for a few seconds: one deploy asks for it once per image
    (about 0.3 s each on this machine)."""
    now = time.monotonic()
    if _ROOTFS and now - _ROOTFS[0][0] < ROOTFS_TTL:
        return _ROOTFS[0][1]
    fs = rootfs.collect(libraries=_libraries)
    _ROOTFS[:] = [(now, fs)]
    return fs


def _libraries(binaries: list[Path]) -> set[str]:
    """`rootfs.shared_libraries` (which files `ldd` names, not their content: the base
    image's tag reads that), remembered while the binaries, the dynamic linker's cache
    and LD_LIBRARY_PATH are unchanged."""
    key = stat_key([*binaries, Path("/etc/ld.so.cache")]) + \
        os.environ.get("LD_LIBRARY_PATH", "")
    return set(remembered("libraries", key,
                          lambda: sorted(rootfs.shared_libraries(binaries))))


def base_image_tag(fs: rootfs.RootFs | None = None) -> str:
    """The base image's tag, computed without Docker (what `ensure_base_image` makes)."""
    return f"mso/base:{(fs or _host_rootfs()).digest(_shim_source())[:16]}"


def ensure_base_image(client: docker.DockerClient | None = None) -> str:
    """The base image's tag, importing it first if it is not cached."""
    client = _client(client)
    fs = _host_rootfs()
    tag = base_image_tag(fs)
    if _exists(client, tag):
        return tag
    data = rootfs.write_tar(fs, _shim_files())
    changes = [f"ENV PATH={fs.path_env}", "ENV HOME=/root", "ENV LANG=C.UTF-8",
               "ENV PYTHONUNBUFFERED=1", "ENV PYTHONDONTWRITEBYTECODE=1", "WORKDIR /app",
               'CMD ["python3"]']
    repo, _, version = tag.partition(":")
    try:
        client.api.import_image_from_data(data, repository=repo, tag=version, changes=changes)
    except docker.errors.APIError as exc:
        raise ImageError(f"importing the base image failed: {exc.explanation or exc}") from exc
    return tag


def _build(client: docker.DockerClient, context: bytes, tag: str,
           buildargs: dict[str, str] | None = None) -> None:
    try:
        stream = client.api.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag,
                                  rm=True, forcerm=True, decode=True, buildargs=buildargs)
        _check_build(stream, tag)
    except docker.errors.APIError as exc:
        raise ImageError(f"building {tag} failed: {exc.explanation or exc}") from exc


def _check_build(stream: Iterable[dict[str, Any]], tag: str) -> None:
    tail: list[str] = []
    for chunk in stream:
        if "stream" in chunk:
            tail = (tail + [str(chunk["stream"]).rstrip()])[-20:]
        if "error" in chunk:
            detail = "\n".join(line for line in tail if line)
            raise ImageError(f"building {tag} failed: {chunk['error'].strip()}\n{detail}")


def _context(dockerfile: str, files: Iterable[tuple[Path, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for src, arc in files:
            tar.add(str(src), arcname=arc, recursive=False)
    return buf.getvalue()


def _tree(root: Path, skip: set[Path] = frozenset()) -> list[tuple[Path, str]]:  # type: ignore[assignment]
    """Files under root (sorted, relative names), without caches, state and `skip`."""
    out: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_NAMES)
        for name in sorted(files):
            path = Path(folder) / name
            if name.endswith((".pyc", ".pyo")) or path.resolve() in skip or not path.is_file():
                continue
            out.append((path, path.relative_to(root).as_posix()))
    return out


def _digest(files: list[tuple[Path, str]], *extra: str) -> str:
    h = hashlib.sha256("\0".join(extra).encode())
    for src, arc in files:
        h.update(arc.encode() + b"\0" + hashlib.sha256(src.read_bytes()).digest())
    return h.hexdigest()


def _wheel_cache(cache: Path | None) -> Path:
    return cache or Path(os.environ.get("MSO_WHEEL_CACHE", Path.home() / ".cache/mso/wheels"))


def cached_gateway_wheels(cache: Path | None = None) -> list[Path]:
    """The proxy's wheels already in the cache (never downloads)."""
    wanted = {name: metadata.version(name) for name in GATEWAY_PACKAGES}
    folder = _wheel_cache(cache)
    found = folder.glob("*.whl") if folder.is_dir() else iter(())
    return sorted(w for w in found
                  if any(w.name.startswith(f"{n}-{v}-") for n, v in wanted.items()))


def gateway_wheels(cache: Path | None = None) -> list[Path]:
    """The proxy's dependencies as wheels, pinned to the versions mso runs with."""
    cache = _wheel_cache(cache)
    cache.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in GATEWAY_PACKAGES]
    have = cached_gateway_wheels(cache)
    if len(have) < len(pins):
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary", ":all:",
                               "--no-deps", "-d", str(cache), *pins],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ImageError(f"pip download {' '.join(pins)} failed: {proc.stderr.strip()[-500:]}")
        have = cached_gateway_wheels(cache)
    return have


def proxy_modules(src: Path) -> set[str]:
    """The files (relative to mso's folder) that `python -m mso.proxy` can import: the
    whole `mso.proxy` package and, transitively, every `mso` module its files import
    (read with `ast`, so lazy imports inside functions count), with their packages'
    `__init__.py`. Remembered across runs while no `.py` file under `src` changed."""
    sources = sorted(p for p in src.rglob("*.py") if "__pycache__" not in p.parts)
    key = f"{src}\n{stat_key(sources)}"
    return set(remembered("proxy-modules", key, lambda: sorted(_proxy_modules(src))))


def _proxy_modules(src: Path) -> set[str]:
    import ast

    def file_of(module: str) -> str | None:
        rel = module.split(".")[1:]
        for cand in ("/".join(rel) + ".py", "/".join([*rel, "__init__.py"])):
            if cand and (src / cand).is_file():
                return cand
        return None

    todo = sorted(p.relative_to(src).as_posix() for p in (src / "proxy").glob("*.py"))
    seen: set[str] = {"__init__.py"}
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        parts = rel[:-3].split("/")
        package = ["mso", *parts[:-1]]  # what a relative import of this file starts from
        for i in range(1, len(parts)):
            todo.append("/".join([*parts[:i], "__init__.py"]))
        for node in ast.walk(ast.parse((src / rel).read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package[:len(package) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                if name == "mso" or name.startswith("mso."):
                    found = file_of(name)
                    if found is not None and found not in seen:
                        todo.append(found)
    return seen


def _gateway_files(wheels: list[Path], proxy_only: bool = False) -> list[tuple[Path, str]]:
    src = Path(mso.__file__).parent
    wanted = proxy_modules(src) if proxy_only else None
    files = [(p, f"lib/mso/{arc}") for p, arc in _tree(src) if p.suffix in (".py", ".typed")
             and (wanted is None or arc in wanted)]
    return files + [(w, f"wheels/{w.name}") for w in wheels]


def gateway_image_tag(base: str, wheels: list[Path], proxy_only: bool = False,
                      files: list[tuple[Path, str]] | None = None) -> str:
    """The gateway image's tag for this base and these wheels, computed without Docker.
    `proxy_only`: the image holds only what `python -m mso.proxy` imports (the Swarm
    gateway), so a change elsewhere in mso gives the same tag and restarts no gateway.
    `files`: `_gateway_files(wheels, proxy_only)`, when the caller has them already."""
    if files is None:
        files = _gateway_files(wheels, proxy_only)
    if proxy_only:
        # The base's in-container shim is no part of the proxy: only its runtime counts,
        # so a new shim (a new base) does not replace the gateway either.
        runtime = _host_rootfs().digest()
        return f"mso/gateway-proxy:{_digest(files, runtime)[:16]}"
    return f"mso/gateway:{_digest(files, base)[:16]}"


def ensure_gateway_image(client: docker.DockerClient | None = None,
                         proxy_only: bool = False) -> str:
    """The gateway image's tag (mso's proxy on the base image), building it if needed."""
    client = _client(client)
    base = ensure_base_image(client)
    wheels = gateway_wheels()
    files = _gateway_files(wheels, proxy_only)
    tag = gateway_image_tag(base, wheels, proxy_only, files)
    if _exists(client, tag):
        return tag
    install = ["python3", "-m", "pip", "install", "--no-index", "--no-cache-dir",
               "--find-links", "/opt/mso/wheels", *(f"/opt/mso/wheels/{w.name}" for w in wheels)]
    dockerfile = (f"FROM {base}\nCOPY wheels/ /opt/mso/wheels/\nRUN {json.dumps(install)}\n"
                  "COPY lib/ /opt/mso/lib/\nENV PYTHONPATH=/opt/mso/lib\n"
                  'CMD ["python3", "-m", "mso.proxy", "--control", "/run/mso/control.sock"]\n')
    _build(client, _context(dockerfile, files), tag)
    return tag


def app_image_tag(loaded: LoadedManifest, base: str) -> str:
    """The app image's tag on `base`, computed without Docker (what `app_image` makes)."""
    files = _tree(loaded.base_dir, private_files(loaded))
    return f"mso/{loaded.manifest.app}-src:{_digest(files, base)[:16]}"


def app_image(loaded: LoadedManifest, client: docker.DockerClient | None = None) -> str:
    """The app's folder on the base image (shared by every `run:` service of the app)."""
    client = _client(client)
    base = ensure_base_image(client)
    files = _tree(loaded.base_dir, private_files(loaded))
    tag = app_image_tag(loaded, base)
    if not _exists(client, tag):
        dockerfile = f"FROM {base}\nCOPY app/ /app/\nWORKDIR /app\n"
        _build(client, _context(dockerfile, [(p, f"app/{a}") for p, a in files]), tag)
    return tag


def build_service_image(loaded: LoadedManifest, service: str,
                        client: docker.DockerClient | None = None) -> str:
    """The image `service` runs: its `image:`, its `build:`, or the app image."""
    item = loaded.manifest.runnable(service)
    if item.image:
        return item.image
    if item.build is None:
        return app_image(loaded, client)
    client = _client(client)
    context = (loaded.base_dir / item.build.context).resolve()
    tag = build_image_tag(loaded, service)
    if _exists(client, tag):
        return tag
    try:
        _, logs = client.images.build(path=str(context), dockerfile=item.build.dockerfile,
                                      tag=tag, buildargs=dict(item.build.args),
                                      target=item.build.target, rm=True, forcerm=True)
    except docker.errors.BuildError as exc:
        tail = "\n".join(str(c.get("stream", "")).rstrip() for c in list(exc.build_log)[-10:])
        raise ImageError(f"building {service} from {context} failed: {exc.msg}\n{tail}") from exc
    except docker.errors.APIError as exc:
        raise ImageError(f"building {service} failed: {exc.explanation or exc}") from exc
    return tag


def build_image_tag(loaded: LoadedManifest, service: str) -> str:
    """The tag of a service's own `build:` image, computed without Docker."""
    build = loaded.manifest.runnable(service).build
    assert build is not None, f"{service} has no build:"
    files = _tree((loaded.base_dir / build.context).resolve())
    return f"mso/{loaded.manifest.app}-{service}:" + _digest(
        files, build.dockerfile, json.dumps(build.args, sort_keys=True), build.target or "")[:16]


def uses_shim(loaded: LoadedManifest, service: str) -> bool:
    """Whether the service runs under mso's shim (only images mso generated have it)."""
    item = loaded.manifest.runnable(service)
    return not item.image and item.build is None
