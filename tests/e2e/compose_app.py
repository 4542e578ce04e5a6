"""Issue 17's compose app (tests/e2e/apps/compose_redis): a `build:` web service counting
its hits in a Redis (Debian's redis-server in a locally built image: no registry is
reachable), written to a folder so one imported manifest runs on every engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent / "apps" / "compose_redis"


def redis_context(folder: Path) -> None:
    """Debian's redis-server and redis-cli with the libraries they link."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.fail("redis-server/redis-tools are not installed (scripts/setup.sh installs "
                    "them with the test extras)")
    (folder / "bin").mkdir()
    (folder / "lib").mkdir()
    # redis-server is a link to redis-check-rdb, which picks its role from its name
    shutil.copy(Path(server).resolve(), folder / "bin" / "redis-server")
    shutil.copy(cli, folder / "bin" / "redis-cli")
    out = subprocess.run(["ldd", server, cli], capture_output=True, text=True, check=True).stdout
    for lib in {p.split()[2] for p in out.splitlines() if "=> /" in p}:
        shutil.copy(Path(lib).resolve(), folder / "lib" / Path(lib).name)


def write_compose_app(folder: Path, base_image: str, gateway_port: int,
                      version: str = "v1") -> Path:
    """The compose app in `folder` (its `.env` names the base image and the gateway port);
    returns the compose file."""
    shutil.copytree(APP, folder, dirs_exist_ok=True)
    (folder / "web" / "VERSION").write_text(f"{version}\n")
    redis_context(folder / "redis")
    (folder / ".env").write_text(f"BASE={base_image}\nGATEWAY_PORT={gateway_port}\n")
    return folder / "compose.yaml"


def hits(body: str) -> tuple[int, str]:
    """"hits N VERSION" -> (N, VERSION)."""
    word, count, version = body.split()
    assert word == "hits", body
    return int(count), version
