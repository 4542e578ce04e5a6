"""mso.spec: the manifest pipeline.

load (YAML with line tracking) → interpolate (`${VAR}`) → validate (pydantic models and
cross-reference checks) → `LoadedManifest` (env, secrets, configs, spec hash).
Everything that goes wrong surfaces as `ManifestError` with file, line and field.

The names below are imported on first use (PEP 562): importing `mso.spec.errors` or
`mso.spec.support` must not pay for the pydantic models, which a command such as
`mso ps` never needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mso.spec.errors import ManifestError, ManifestErrors
    from mso.spec.load import LoadedManifest, load_manifest
    from mso.spec.models import Job, Manifest, Probe, Service
    from mso.spec.schema import json_schema

_WHERE = {
    "ManifestError": "mso.spec.errors", "ManifestErrors": "mso.spec.errors",
    "LoadedManifest": "mso.spec.load", "load_manifest": "mso.spec.load",
    "Job": "mso.spec.models", "Manifest": "mso.spec.models", "Probe": "mso.spec.models",
    "Service": "mso.spec.models", "json_schema": "mso.spec.schema",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mso.spec' has no attribute {name!r}")
    return getattr(import_module(module), name)
