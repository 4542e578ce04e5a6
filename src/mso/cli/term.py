"""Tables and a few styles for the terminal, without a rendering library.

The CLI printed through rich, whose import alone cost more than the 150 ms a command
like `mso ps` may take in all (issue 16). What the CLI needs is small: left-aligned
columns two spaces apart with a bold header, a last column that folds instead of being
cut, and a handful of styles. Styles are written as a tiny subset of rich's markup
(`[bold]...[/]`, `[dim]`, `[green]`, `[red]`, `[yellow]`, `[magenta]`, `[bold red]`), so
`escape()` must wrap any text that may contain `[`. Colours only on a terminal, and
never with `NO_COLOR` set (no-color.org); piped output is plain, whole lines.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from typing import TextIO

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33",
          "magenta": "35", "bold red": "1;31"}
_TOKEN = re.compile(r"\\\[|\[(/|" + "|".join(sorted(_CODES, key=len, reverse=True)) + r")\]")


def escape(text: str) -> str:
    """`text` shown as is, even where it holds `[`."""
    return text.replace("[", "\\[")


def _render(markup: str, color: bool) -> str:
    out: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(markup):
        out.append(markup[pos:match.start()])
        token = match.group(0)
        if token == "\\[":
            out.append("[")
        elif color:
            name = match.group(1)
            out.append("\x1b[0m" if name == "/" else f"\x1b[{_CODES[name]}m")
        pos = match.end()
    out.append(markup[pos:])
    return "".join(out)


def visible(markup: str) -> str:
    """The text a markup string shows (for widths)."""
    return _render(markup, color=False)


def _wants_color(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


class Console:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def print(self, markup: object = "") -> None:
        text = markup.render(self.stream) if isinstance(markup, Table) else str(markup)
        if not isinstance(markup, Table):
            text = _render(text, _wants_color(self.stream))
        self.stream.write(text + "\n")


class Table:
    """Columns of markup cells; the last column folds on a narrow terminal."""

    def __init__(self, *columns: str) -> None:
        self.columns = list(columns)
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def render(self, stream: TextIO) -> str:
        color = _wants_color(stream)
        header = [f"[bold]{escape(c)}[/]" for c in self.columns]
        rows = [header, *self.rows]
        widths = [max(len(visible(row[i])) for row in rows) for i in range(len(self.columns))]
        last = len(self.columns) - 1
        room = None
        if stream.isatty():
            used = sum(widths[:last]) + 2 * last
            room = max(20, shutil.get_terminal_size().columns - used)
        lines = []
        for row in rows:
            cells = [_render(cell, color) + " " * (widths[i] - len(visible(cell)))
                     for i, cell in enumerate(row[:last])]
            tail = visible(row[last])
            if room is not None and len(tail) > room:  # fold, never cut
                pieces = textwrap.wrap(tail, room) or [""]
                indent = " " * (sum(widths[:last]) + 2 * last)
                lines.append("  ".join([*cells, pieces[0]]).rstrip())
                lines.extend((indent + piece).rstrip() for piece in pieces[1:])
                continue
            lines.append("  ".join([*cells, _render(row[last], color)]).rstrip())
        return "\n".join(lines)
