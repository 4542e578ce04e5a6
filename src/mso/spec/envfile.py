"""Parser for `env_file` files (dotenv format).

Accepted, one per line: `KEY=VALUE`, `export KEY=VALUE`, blank lines and `# comments`.
Values may be

* unquoted: surrounding spaces are trimmed and ` #...` starts a comment;
* `'single quoted'`: taken literally, no interpolation;
* `"double quoted"`: `\\n \\t \\" \\\\ \\$` escapes, and interpolation.

Unquoted and double-quoted values are interpolated like the manifest (`${VAR}`,
`${VAR:-default}`...), looking first at keys defined earlier in the same file, then at
mso's environment. Errors name the env file and line.
"""

from __future__ import annotations

import re
from collections import ChainMap
from collections.abc import Iterator, Mapping

from mso.spec.errors import ManifestError
from mso.spec.interpolate import InterpolationError, interpolate

__all__ = ["matched_lines", "parse_env_file"]

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}


def parse_env_file(text: str, file: str, environ: Mapping[str, str]) -> dict[str, str]:
    """KEY -> value from dotenv text; raises ManifestError pointing at the bad line."""
    values: dict[str, str] = {}
    lookup = ChainMap(values, dict(environ))
    for number, match in matched_lines(text, _LINE, file, "expected KEY=VALUE (a name of letters, digits and '_')"):
        key, rest = match.group(1), match.group(2)
        try:
            values[key] = _value(rest, lookup)
        except (ValueError, InterpolationError) as exc:
            raise ManifestError(file, number, key, str(exc)) from None
    return values


def matched_lines(text: str, pattern: re.Pattern[str], file: str,
                  problem: str) -> Iterator[tuple[int, re.Match[str]]]:
    """(line number, match) of each line that is not blank or a `#` comment (dotenv files,
    Procfiles); a line the pattern does not match is `file:line: problem`."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = pattern.match(line)
        if match is None:
            raise ManifestError(file, number, "", problem)
        yield number, match


def _value(rest: str, lookup: Mapping[str, str]) -> str:
    if rest.startswith("'"):
        end = rest.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single quote")
        _only_comment(rest[end + 1 :])
        return rest[1:end]
    if rest.startswith('"'):
        body, tail = _double_quoted(rest)
        _only_comment(tail)
        return interpolate(body, lookup)
    comment = re.search(r"\s#", rest)
    if comment is not None:
        rest = rest[: comment.start()]
    return interpolate(rest.strip(), lookup)


def _double_quoted(rest: str) -> tuple[str, str]:
    """Body (with literal `$` doubled for the interpolator) and what follows the quote."""
    out: list[str] = []
    i = 1
    while i < len(rest):
        char = rest[i]
        if char == "\\" and i + 1 < len(rest):
            nxt = rest[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        if char == '"':
            return "".join(out), rest[i + 1 :]
        out.append(char)
        i += 1
    raise ValueError("unterminated double quote")


def _only_comment(tail: str) -> None:
    tail = tail.strip()
    if tail and not tail.startswith("#"):
        # the text itself is not echoed: env files hold secrets
        raise ValueError("unexpected text after the closing quote")
