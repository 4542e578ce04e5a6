"""YAML loading that remembers where every key and list item came from.

PyYAML's safe composer builds a node tree (with marks); we construct plain Python
values from it ourselves so we can (a) record the 1-based source line of every mapping
key and sequence item under its path, for error messages, and (b) reject duplicate
keys, which PyYAML silently lets the last one win. Merge keys (`<<: *base`) and
anchors work as usual; recursive aliases and alias bombs are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from mso.spec.errors import Loc, ManifestError

try:  # the C loader is much faster; same semantics
    from yaml import CSafeLoader as _Loader
    _C_LOADER = True
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]
    _C_LOADER = False

__all__ = ["LineMap", "load_yaml"]

# An alias can point at a big subtree; cap the number of nodes we expand so a few
# lines of anchors ("billion laughs") cannot eat the machine.
MAX_NODES = 200_000


@dataclass
class LineMap:
    """Source lines by path (tuple of keys / indexes); `()` is the document."""

    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of `loc`, or of its closest recorded ancestor."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None


def load_yaml(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse one YAML document; returns (data, line map). Raises ManifestError."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ManifestError(file, None, "", "the file is empty; it needs at least `app:` and `services:`")
        builder = _Builder(loader, file)
        data = builder.build(node, ())
        return data, builder.lines
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, file, text) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, file, text) from None
    except yaml.YAMLError as exc:
        raise ManifestError(file, None, "", f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.MarkedYAMLError, file: str, text: str = "") -> ManifestError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    col = f" (column {mark.column + 1})" if mark is not None else ""
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem:
        problem = f"{problem} ({exc.context})"
    if mark is not None and _tab_at(text, mark.line, mark.column):
        # PyYAML's words for it ("found character that cannot start any token") do not
        # say that the character is a tab, which is what it nearly always is.
        return ManifestError(file, line, "", f"a tab character{col}: YAML indents with "
                                             "spaces only; replace the tab with spaces")
    return ManifestError(file, line, "", f"YAML syntax error: {problem}{col}")


def _reader_error(exc: yaml.reader.ReaderError, file: str, text: str) -> ManifestError:
    """A character YAML does not allow (a control character, U+FFFE...): PyYAML's reader
    gives only an offset, in UTF-8 bytes with the C loader and in characters without."""
    if not _C_LOADER:
        before = text[:exc.position]
    else:
        before = text.encode("utf-8")[:exc.position].decode("utf-8", "replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
    return ManifestError(file, line, "", f"control character U+{char:04X} (column {column}): YAML "
                                         "does not allow it; remove it or write it as an escape "
                                         "in a double-quoted string (\"\\x07\")")


def _tab_at(text: str, line: int, column: int) -> bool:
    """Whether the error points at a tab, or at indentation that holds one."""
    lines = text.splitlines()
    if not 0 <= line < len(lines):
        return False
    row = lines[line]
    indent = row[:len(row) - len(row.lstrip(" \t"))]
    return (column < len(row) and row[column] == "\t") or \
        ("\t" in indent and column <= len(indent))


class _Builder:
    """Turns a composed node tree into dicts/lists/scalars, tracking lines."""

    def __init__(self, loader: Any, file: str) -> None:
        self.loader = loader
        self.file = file
        self.lines = LineMap()
        self._active: set[int] = set()
        self._count = 0

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            # Aliases share their anchor's node (and marks): the top-level entry being
            # expanded is the most precise place there is.
            raise ManifestError(self.file, self.lines.line_of(loc[:1]), _dotted(loc[:1]),
                                f"the document expands to more than {MAX_NODES} values (alias bomb?)")
        self.lines.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        if id(node) in self._active:
            raise ManifestError(self.file, node.start_mark.line + 1, _dotted(loc), "recursive YAML alias")
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self._item(child, loc, i) for i, child in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
        finally:
            self._active.discard(id(node))
        raise ManifestError(self.file, node.start_mark.line + 1, _dotted(loc), "unsupported YAML node")

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError, AttributeError):
            # an explicit tag the value does not fit (`!!float shop`, `!!timestamp x`)
            raise ManifestError(self.file, node.start_mark.line + 1, _dotted(loc),
                                f"{node.value[:60]!r} cannot be read as {_tag(node.tag)}") from None

    def _item(self, child: yaml.Node, loc: Loc, index: int) -> Any:
        self.lines.lines[(*loc, index)] = child.start_mark.line + 1
        return self.build(child, (*loc, index))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        self._check_duplicates(node, loc)
        # flatten_mapping puts merged (`<<`) pairs first, so explicit keys override them
        self.loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ManifestError(
                    self.file, key_node.start_mark.line + 1, _dotted(loc), "mapping keys must be plain scalars"
                )
            key = self._key(key_node)
            child = (*loc, key)
            self.lines.lines[child] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, child)
            # a key's own line wins over where its value starts (block values start below)
            self.lines.lines[child] = key_node.start_mark.line + 1
        return out

    def _key(self, node: yaml.ScalarNode) -> str:
        # Keys are names: keep what the user wrote, so `on:`/`no:` stay strings (YAML 1.1
        # would make them booleans) and `8000:` or `1.0:` are not turned into numbers.
        try:
            value = self.loader.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError, AttributeError):
            return str(node.value)  # `!!float gateway:` is still the key `gateway`
        return value if isinstance(value, str) else str(node.value)

    def _check_duplicates(self, node: yaml.MappingNode, loc: Loc) -> None:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._key(key_node)
            line = key_node.start_mark.line + 1
            first = seen.get(key)
            if first is not None:
                raise ManifestError(
                    self.file, line, _dotted((*loc, key)), f"duplicate key {key!r} (first defined on line {first})"
                )
            seen[key] = line


def _tag(tag: str) -> str:
    short = tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag
    return f"!!{short}" if short != tag else tag


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)
