"""JSON Schema of the manifest, for `mso schema` and editor autocompletion."""

from __future__ import annotations

from typing import Any

from mso.spec.models import Manifest

__all__ = ["SCHEMA_DIALECT", "json_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12), describing what users may write.

    Short forms (`http: 8000`, `depends_on: [db]`, `pause: 30s`, durations and sizes as
    strings) are part of the schema, so editors accept everything mso accepts.
    """
    schema = Manifest.model_json_schema(mode="validation", ref_template="#/$defs/{model}")
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": "https://mso.dev/schema/mso.yaml.json",
        "title": "mso manifest (mso.yaml)",
        **{k: v for k, v in schema.items() if k != "title"},
    }
