"""Turn pydantic ValidationErrors into clean, located ManifestErrors.

Pydantic locations mix data keys with schema tags (`function-after[...]`, union member
names such as `str`, `[key]`); we walk the user's data alongside the location and keep
only the segments that exist there, so `services.web.ports.http` stays what the user
wrote even when a short form (`http: 8000`) was expanded. Messages lose pydantic's
prefixes, URLs and input dumps; unknown keys get a "did you mean" suggestion.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mso.spec.errors import Loc, LocatedError, ManifestError, combine
from mso.spec.yaml_loader import LineMap

__all__ = ["locate", "translate"]

_TYPE_WORDS = {
    "bool": "true or false",
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "dict": "a mapping",
    "list": "a list",
    "model": "a mapping",
}


def translate(exc: ValidationError, data: Any, file: str, lines: LineMap, root: type[BaseModel]) -> ManifestError:
    """One ManifestError (or ManifestErrors) for everything in `exc`."""
    found: dict[Loc, list[str]] = {}
    for err in exc.errors(include_url=False):
        ctx_error = (err.get("ctx") or {}).get("error")
        base = clean_loc(data, err["loc"], keep_last=err["type"] == "missing")
        if isinstance(ctx_error, LocatedError):
            for sub, message in ctx_error.issues:
                found.setdefault((*base, *sub), []).append(message)
        else:
            found.setdefault(base, []).append(_message(err, base, root))
    errors = [
        ManifestError(file, locate(data, lines, loc), _dotted(loc), _merge(messages)) for loc, messages in found.items()
    ]
    return combine(errors)


def clean_loc(data: Any, loc: tuple[int | str, ...], *, keep_last: bool = False) -> Loc:
    """The part of a pydantic location that names keys/indexes present in `data`."""
    out: list[int | str] = []
    node = data
    for i, seg in enumerate(loc):
        if isinstance(node, Mapping) and seg in node:
            node = node[seg]
            out.append(seg)
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            node = node[seg]
            out.append(seg)
        elif keep_last and i == len(loc) - 1:
            out.append(seg)
    return tuple(out)


def locate(data: Any, lines: LineMap, loc: Loc) -> int | None:
    """Source line of `loc`; a name given in list form (`depends_on: [db]`) finds its item."""
    resolved: list[int | str] = []
    node = data
    for seg in loc:
        if isinstance(node, Mapping) and seg not in node and str(seg) in node:
            seg = str(seg)
        if isinstance(node, list) and isinstance(seg, str) and seg.isdigit():
            seg = int(seg)
        if isinstance(node, Mapping) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            node = node[seg]
        elif isinstance(node, list) and seg in node:
            seg = node.index(seg)
            node = node[seg]
        else:
            break
        resolved.append(seg)
    return lines.line_of(tuple(resolved))


def _message(err: ErrorDetails, loc: Loc, root: type[BaseModel]) -> str:
    kind = err["type"]
    msg = err["msg"]
    if kind == "extra_forbidden":
        return _unknown_key(loc, root)
    if kind == "missing":
        return "required key is missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    base = kind.split("_")[0]
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"expected {_TYPE_WORDS.get(base, base)}{_got(err['input'], show_value=False)}"
    if msg.startswith("Input should be "):
        msg = "must be " + msg[len("Input should be ") :]
        if kind in ("literal_error", "enum"):
            msg = "must be one of " + msg[len("must be ") :]
    return msg + _got(err["input"], show_value=True)


def _got(value: Any, *, show_value: bool) -> str:
    # values are shown only when short scalars: they may come from interpolated env vars
    if show_value and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f" (got {value})"
    if show_value and isinstance(value, str) and len(value) <= 40:
        return f" (got {value!r})"
    if show_value:
        return ""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a mapping"}
    name = "nothing" if value is None else names.get(type(value), type(value).__name__)
    return f", got {name}"


def _merge(messages: list[str]) -> str:
    """Union members each report; say it once: 'expected true or false or a string'."""
    unique = list(dict.fromkeys(messages))
    if len(unique) > 1 and all(m.startswith("expected ") for m in unique):
        wanted = [m[len("expected ") :].split(", got ")[0] for m in unique]
        got = unique[0].split(", got ")[1] if ", got " in unique[0] else None
        return "expected " + " or ".join(dict.fromkeys(wanted)) + (f", got {got}" if got else "")
    return "; ".join(unique)


def _unknown_key(loc: Loc, root: type[BaseModel]) -> str:
    key = str(loc[-1]) if loc else "?"
    model = _model_at(root, loc[:-1])
    if model is None:
        return f"unknown key {key!r}"
    fields = list(model.model_fields)
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r} (valid keys: {', '.join(fields)})"


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at `loc` (walking field annotations)."""
    current: Any = root
    pending = list(loc)
    while True:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not pending:
                return current
            field = current.model_fields.get(str(pending.pop(0)))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (dict, list):
            if not pending:
                return None
            pending.pop(0)
            current = typing.get_args(current)[-1]
        else:
            return None


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional/Union down to the model, dict or list inside."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if _is_container(a)]
            if not members:
                return tp
            tp = members[0]
        else:
            return tp


def _is_container(tp: Any) -> bool:
    tp = typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return True
    return typing.get_origin(tp) in (dict, list)


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)
