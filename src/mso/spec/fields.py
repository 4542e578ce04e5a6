"""Reusable field types and the base model for the manifest.

Each type validates itself with a message that says how to fix the value; shapes
users may write in short form (a string for a one-item list, numbers in `env`) are
normalized here so the models only ever see one shape.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo, WithJsonSchema, model_validator

from mso.spec.errors import LocatedError

__all__ = [
    "Argv",
    "EnvMap",
    "EnvName",
    "Name",
    "PathList",
    "PortName",
    "PortNumber",
    "RelPath",
    "SpecModel",
    "check_name",
]

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SpecModel(BaseModel):
    """Base for every manifest model: unknown keys are errors, instances are frozen.

    Keys starting with `x-` are ignored (as in compose), so users have a place for
    YAML anchors: `x-defaults: &defaults {...}` and later `<<: *defaults`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"patternProperties": {"^x-": {}}})

    @model_validator(mode="before")
    @classmethod
    def _drop_extensions(cls, value: Any) -> Any:
        if isinstance(value, dict) and any(isinstance(k, str) and k.startswith("x-") for k in value):
            return {k: v for k, v in value.items() if not (isinstance(k, str) and k.startswith("x-"))}
        return value


def check_name(value: str) -> str:
    """DNS-1123 label: what Kubernetes, Swarm and host names all accept."""
    if not DNS_LABEL.match(value) or len(value) > 63:
        hint = value.lower().replace("_", "-")
        fix = f" (e.g. {hint!r})" if DNS_LABEL.match(hint) and len(hint) <= 63 else ""
        raise ValueError(
            f"invalid name {value!r}: use lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit, at most 63 characters{fix}"
        )
    return value


def _check_port_name(value: str) -> str:
    if not PORT_NAME.match(value) or len(value) > 15 or not re.search(r"[a-z]", value):
        raise ValueError(
            f"invalid port name {value!r}: use at most 15 lower-case letters, digits and '-', "
            "with at least one letter (Kubernetes port-name rules)"
        )
    return value


def _check_port_number(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is out of range (1-65535)")
    return value


def _check_env_name(value: str) -> str:
    if not ENV_NAME.match(value):
        raise ValueError(f"invalid environment variable name {value!r}: use letters, digits and '_', not starting with a digit")
    return value


def _stringify_env(value: Any) -> Any:
    """Compose-style: numbers and booleans in `env` become strings."""
    if not isinstance(value, dict):
        return value
    out: dict[Any, Any] = {}
    empty = [
        ((key,), f"{key} has no value; write {key}: \"\" for an empty value or {key}: ${{{key}}} to pass it through")
        for key, item in value.items()
        if item is None
    ]
    if empty:
        raise LocatedError(empty)
    for key, item in value.items():
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, (int, float)):
            out[key] = str(item)
        else:
            out[key] = item
    return out


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _argv(value: Any) -> Any:
    """`run`: a string (shell) or a list of strings; numbers in the list become strings."""
    if isinstance(value, list):
        bad = [((i,), "expected a string") for i, v in enumerate(value) if not isinstance(v, (str, int, float)) or isinstance(v, bool)]
        if bad:
            raise LocatedError(bad)
        return [v if isinstance(v, str) else str(v) for v in value]
    if not isinstance(value, str):
        raise ValueError("run must be a list of arguments, e.g. [python3, -m, app] (or a string with shell: true)")
    return value


def _rel_path(value: str, info: ValidationInfo) -> str:
    """Paths are relative to the manifest's folder and must stay inside it."""
    if not value.strip():
        raise ValueError("path must not be empty")
    base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
    if os.path.isabs(value):
        if base is not None and _inside(PurePosixPath(os.path.normpath(value)), PurePosixPath(os.path.normpath(base))):
            return value
        raise ValueError(f"{value!r} is outside the manifest's folder; use a path relative to it")
    if os.path.normpath(value).split(os.sep)[0] == "..":
        raise ValueError(f"{value!r} escapes the manifest's folder; paths must stay inside it")
    return value


def _inside(path: PurePosixPath, base: PurePosixPath) -> bool:
    return path == base or base in path.parents


def _not_a_boolean(value: Any) -> Any:
    """YAML's `true` is an int to pydantic (1): `replicas: true` must not run one replica."""
    if isinstance(value, bool):
        raise ValueError("expected a whole number, not true/false")
    return value


def _check_bind_address(value: str) -> str:
    if value == "localhost":
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0 or ::)") from None
    return value


Count = Annotated[int, BeforeValidator(_not_a_boolean)]
"""A whole number that YAML's true/false cannot stand in for."""

BindAddress = Annotated[str, AfterValidator(_check_bind_address)]

Name = Annotated[str, AfterValidator(check_name)]
"""A DNS-1123 label (app, service and job names)."""

PortName = Annotated[str, AfterValidator(_check_port_name)]
PortNumber = Annotated[int, BeforeValidator(_not_a_boolean), AfterValidator(_check_port_number)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]

EnvMap = Annotated[
    dict[str, str],
    BeforeValidator(_stringify_env),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
            "description": "Environment variables; numbers and booleans are turned into strings.",
        }
    ),
]

Argv = Annotated[
    list[str] | str,
    BeforeValidator(_argv),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1},
                {"type": "string"},
            ],
            "description": "The command: an argv list, or a string run by /bin/sh when shell: true.",
        }
    ),
]

RelPath = Annotated[str, AfterValidator(_rel_path)]
"""A path relative to the manifest's folder that does not escape it."""

PathList = Annotated[
    list[RelPath],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]
"""One path or a list of paths (a single string is a one-item list); each must stay inside."""
