"""Which API version each kind uses on a target Kubernetes version (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_VERSION = "1.29"


class VersionError(ValueError):
    """A target version mso cannot parse or does not support."""


@dataclass(frozen=True)
class ApiVersions:
    minor: int
    pdb: str
    hpa: str

    @property
    def hpa_v2(self) -> bool:
        return self.hpa in ("autoscaling/v2", "autoscaling/v2beta2")


def parse_minor(version: str | None) -> int:
    """`1.29`, `v1.29.3` or `1.29.0` -> 29 (default: DEFAULT_VERSION)."""
    text = (version or DEFAULT_VERSION).strip().lstrip("v")
    match = re.match(r"^1\.(\d+)(\.\d+)?$", text)
    if match is None:
        raise VersionError(f"bad Kubernetes version {version!r}; use e.g. 1.29")
    minor = int(match.group(1))
    if minor < 16:
        raise VersionError(f"Kubernetes {text} is too old; mso supports 1.16 and newer")
    return minor


def api_versions(version: str | None) -> ApiVersions:
    minor = parse_minor(version)
    # policy/v1 PodDisruptionBudget is GA from 1.21; v1beta1 is gone in 1.25.
    pdb = "policy/v1" if minor >= 21 else "policy/v1beta1"
    # autoscaling/v2 is GA from 1.23; v2beta2 (1.12-1.25) before it.
    hpa = "autoscaling/v2" if minor >= 23 else "autoscaling/v2beta2"
    return ApiVersions(minor, pdb, hpa)
