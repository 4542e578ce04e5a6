"""Where mso keeps its state for one app: `.mso/` beside the manifest.

Unix socket paths are limited to about 108 bytes, so sockets whose natural path would be
too long are placed under a short per-user runtime folder, keyed by a hash of the state
folder, and every client derives the same path from the same state folder.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

_MAX_SOCKET_PATH = 100


def _socket_path(state_dir: Path, name: str) -> Path:
    natural = state_dir / name
    if len(str(natural)) <= _MAX_SOCKET_PATH:
        return natural
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
    short_dir = Path("/tmp") / f"mso-{os.getuid()}"
    return short_dir / f"{digest}-{name}"


@dataclass(frozen=True)
class StatePaths:
    """Every file and socket of one app's control plane."""

    state_dir: Path

    @classmethod
    def for_manifest(cls, manifest_path: Path) -> StatePaths:
        return cls(manifest_path.resolve().parent / ".mso")

    @property
    def db(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def api_socket(self) -> Path:
        return _socket_path(self.state_dir, "api.sock")

    @property
    def proxy_socket(self) -> Path:
        return _socket_path(self.state_dir, "proxy.sock")

    @property
    def lock(self) -> Path:
        return self.state_dir / "daemon.lock"

    @property
    def daemon_log(self) -> Path:
        return self.state_dir / "daemon.log"

    @property
    def daemon_exit(self) -> Path:
        """`PID` of a daemon that ended as asked (down, detach): read by a keeper that
        adopted it and so cannot see its exit status (mso.daemon.keeper)."""
        return self.state_dir / "daemon.exit"

    @property
    def api_token(self) -> Path:
        return self.state_dir / "api-token"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "config"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def ensure(self) -> None:
        """Create the folders, private to the user: they hold secrets and sockets."""
        for folder in (self.state_dir, self.logs_dir, self.run_dir, self.secrets_dir,
                       self.config_dir, self.data_dir, self.api_socket.parent):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
