"""Errors raised while loading a manifest.

Exception tree::

    ManifestError            one problem: file, line, dotted field path, message
    └── ManifestErrors       several problems found in one pass (validation reports
                             all it can at once); behaves like its first error

Everything `mso.spec.load_manifest` raises is a `ManifestError`, so the CLI maps it to
exit code 2 and prints `str(exc)`: one line per problem, never a traceback, never a
secret value.
"""

from __future__ import annotations

from mso.errors import UsageError

from collections.abc import Iterable, Sequence

__all__ = ["ManifestError", "ManifestErrors", "LocatedError", "Loc"]

Loc = tuple[str | int, ...]


class ManifestError(UsageError):
    """One problem in a manifest (or in a file it references).

    `field` is a dotted path such as `services.web.ports.http` ('' for the whole
    file); `line` is 1-based, or None when no line applies (file not found...).
    """

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"

    @property
    def errors(self) -> tuple[ManifestError, ...]:
        """All problems carried by this exception (just itself here)."""
        return (self,)

    def __str__(self) -> str:
        return self._format()


class ManifestErrors(ManifestError):
    """Several problems; `str()` has one line per problem, sorted by line.

    The scalar attributes (`file`, `line`, `field`, `message`) are the first
    problem's, so code that handles a single `ManifestError` keeps working.
    """

    def __init__(self, errors: Iterable[ManifestError]) -> None:
        flat: list[ManifestError] = []
        for err in errors:
            flat.extend(err.errors)
        if not flat:
            raise ValueError("ManifestErrors needs at least one error")
        flat = _dedupe(sorted(flat, key=_sort_key))
        self._errors = tuple(flat)
        first = flat[0]
        super().__init__(first.file, first.line, first.field, first.message)

    @property
    def errors(self) -> tuple[ManifestError, ...]:
        return self._errors

    def _format(self) -> str:
        return "\n".join(e._format() for e in self._errors)


def combine(errors: Sequence[ManifestError]) -> ManifestError:
    """One exception for one or many problems."""
    if len(errors) == 1 and not isinstance(errors[0], ManifestErrors):
        return errors[0]
    return ManifestErrors(errors)


def _sort_key(err: ManifestError) -> tuple[str, int, str]:
    return (err.file, err.line if err.line is not None else 0, err.field)


def _dedupe(errors: list[ManifestError]) -> list[ManifestError]:
    seen: set[str] = set()
    out: list[ManifestError] = []
    for err in errors:
        text = err._format()
        if text not in seen:
            seen.add(text)
            out.append(err)
    return out


class LocatedError(ValueError):
    """Raised inside model validators to point at fields below the model.

    Pydantic gives a model-level validator's error the model's location only; the
    error translator looks for this exception in the error context and reports each
    issue at `model location + issue location` instead. Outside mso (plain
    pydantic use) it still reads as a normal ValueError message.
    """

    def __init__(self, issues: Sequence[tuple[Loc, str]]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(_join(loc, msg) for loc, msg in self.issues))

    @classmethod
    def at(cls, loc: Loc, message: str) -> LocatedError:
        return cls([(loc, message)])


def _join(loc: Loc, message: str) -> str:
    path = ".".join(str(p) for p in loc)
    return f"{path}: {message}" if path else message
