"""Variable interpolation in manifest strings (and env files).

Supported forms, applied to every string *value* (never to keys):

=====================  =====================================================
`${VAR}`               value of VAR; **an error if VAR is unset** (compose warns
                       and substitutes ''; mso is stricter so a typo cannot
                       silently start a service with an empty setting)
`${VAR:-default}`      default when VAR is unset or empty
`${VAR-default}`       default only when VAR is unset
`${VAR:?message}`      error with message when VAR is unset or empty
`${VAR?message}`       error with message when VAR is unset
`${VAR:+alt}`          alt when VAR is set and non-empty, else ''
`${VAR+alt}`           alt when VAR is set, else ''
`$$`                   a literal `$`
=====================  =====================================================

Defaults may themselves contain `${...}` (`${A:-${B:-x}}`); they are expanded only when
used. A `$` not followed by `{` or `$` is kept as is, so shell commands such as
`sh -c 'echo $HOME'` reach the shell untouched (unlike compose, bare `$VAR` is not
interpolated).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mso.spec.errors import Loc, ManifestError, combine
from mso.spec.yaml_loader import LineMap

__all__ = ["InterpolationError", "interpolate", "interpolate_tree"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """A `${...}` that cannot be expanded; the message names the variable."""


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Expand `${...}` references in `text` from `environ`."""
    if "$" not in text:
        return text
    return _expand(text, environ)


def interpolate_tree(data: Any, environ: Mapping[str, str], file: str, lines: LineMap) -> Any:
    """Interpolate every string value in a loaded YAML tree; reports all errors at once."""
    errors: list[ManifestError] = []

    def walk(node: Any, loc: Loc) -> Any:
        if isinstance(node, str):
            try:
                return interpolate(node, environ)
            except InterpolationError as exc:
                errors.append(ManifestError(file, lines.line_of(loc), _dotted(loc), str(exc)))
                return node
        if isinstance(node, dict):
            return {k: walk(v, (*loc, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(node)]
        return node

    result = walk(data, ())
    if errors:
        raise combine(errors)
    return result


def _expand(text: str, environ: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        dollar = text.find("$", i)
        if dollar < 0:
            out.append(text[i:])
            break
        out.append(text[i:dollar])
        nxt = text[dollar + 1 : dollar + 2]
        if nxt == "$":
            out.append("$")
            i = dollar + 2
        elif nxt == "{":
            value, i = _braced(text, dollar + 2, environ)
            out.append(value)
        else:
            out.append("$")
            i = dollar + 1
    return "".join(out)


def _braced(text: str, start: int, environ: Mapping[str, str]) -> tuple[str, int]:
    """Expand the reference whose name starts at `start`; returns (value, index after `}`)."""
    match = _NAME.match(text, start)
    if match is None:
        snippet = text[start - 2 : start + 12]
        raise InterpolationError(f"invalid variable reference {snippet!r}: expected ${{NAME}} (use $$ for a literal $)")
    name = match.group()
    i = match.end()
    if text.startswith("}", i):
        if name not in environ:
            raise InterpolationError(
                f"variable {name} is not set (give a default with ${{{name}:-default}}, or write $$ for a literal $)"
            )
        return environ[name], i + 1
    op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
    if op is None:
        raise InterpolationError(f"invalid variable reference to {name}: expected one of }} :- - :? ? :+ +")
    arg_start = i + len(op)
    arg_end = _closing_brace(text, arg_start, name)
    return _apply(name, op, text[arg_start:arg_end], environ), arg_end + 1


def _apply(name: str, op: str, arg: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name)
    missing = value is None or (op.startswith(":") and value == "")
    if op in (":-", "-"):
        return _expand(arg, environ) if missing else str(value)
    if op in (":+", "+"):
        return "" if missing else _expand(arg, environ)
    if missing:  # ":?" / "?"
        detail = _expand(arg, environ) if arg else ("is not set or empty" if op == ":?" else "is not set")
        raise InterpolationError(f"variable {name}: {detail}" if arg else f"variable {name} {detail}")
    return str(value)


def _closing_brace(text: str, start: int, name: str) -> int:
    """Index of the `}` closing a reference, skipping nested `${...}` and `$$`."""
    depth = 0
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise InterpolationError(f"unclosed reference ${{{name}...: missing '}}'")


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)
