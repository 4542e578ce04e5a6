"""mso.spec: the manifest pipeline.

load (YAML with line tracking) → interpolate (`${VAR}`) → validate (pydantic models and
cross-reference checks) → `LoadedManifest` (env, secrets, configs, spec hash).
Everything that goes wrong surfaces as `ManifestError` with file, line and field.
"""

from __future__ import annotations

from mso.spec.errors import ManifestError, ManifestErrors
from mso.spec.load import LoadedManifest, load_manifest
from mso.spec.models import Job, Manifest, Probe, Service
from mso.spec.schema import json_schema

__all__ = [
    "Job",
    "LoadedManifest",
    "Manifest",
    "ManifestError",
    "ManifestErrors",
    "Probe",
    "Service",
    "json_schema",
    "load_manifest",
]
