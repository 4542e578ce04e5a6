"""The manifest's JSON Schema (`mso schema`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mso.spec.schema import json_schema

EXAMPLE = Path(__file__).parent / "data" / "example.yaml"


def test_schema_is_json_and_describes_the_top_level() -> None:
    schema = json.loads(json.dumps(json_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"app", "engine", "gateway", "routes", "services", "jobs", "engines", "tracing"}
    assert schema["required"] == ["app"]
    assert schema["properties"]["app"]["description"]


def test_every_service_field_has_a_description() -> None:
    service = json_schema()["$defs"]["Service"]["properties"]
    missing = [name for name, prop in service.items() if not prop.get("description")]
    assert missing == []


def test_short_forms_are_in_the_schema() -> None:
    defs = json_schema()["$defs"]
    ports = defs["Service"]["properties"]["ports"]["additionalProperties"]
    assert {"type": "integer"} in ports["anyOf"]
    assert "array" in json.dumps(defs["Service"]["properties"]["depends_on"])
    assert "pattern" in json.dumps(defs["Probe"]["properties"]["period"])


def _validate(schema: dict[str, Any], instance: Any) -> list[str]:
    """Validate with jsonschema: in-process if importable, else with the system python3."""
    try:
        import jsonschema  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        python = shutil.which("python3")
        if python is None:
            pytest.skip("jsonschema is not available")
        code = (
            "import json,sys\ntry:\n import jsonschema\nexcept ImportError:\n sys.exit(77)\n"
            "s,i=json.load(sys.stdin)\ncls=jsonschema.validators.validator_for(s)\ncls.check_schema(s)\n"
            "print(json.dumps([e.message for e in cls(s).iter_errors(i)]))"
        )
        out = subprocess.run([python, "-c", code], input=json.dumps([schema, instance]), capture_output=True, text=True, timeout=60)
        if out.returncode == 77:
            pytest.skip("jsonschema is not available")
        assert out.returncode == 0, out.stderr
        return list(json.loads(out.stdout))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return [e.message for e in cls(schema).iter_errors(instance)]


def test_schema_is_valid_and_accepts_the_documented_example() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert _validate(json_schema(), example) == []


def test_schema_rejects_unknown_keys() -> None:
    errors = _validate(json_schema(), {"app": "shop", "services": {"web": {"run": ["x"], "replica": 2}}})
    assert errors
