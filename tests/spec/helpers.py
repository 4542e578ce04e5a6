"""Shared helpers for the spec tests."""

from __future__ import annotations

import textwrap


def marked_line(text: str, marker: str = "# <-") -> int:
    """1-based line of the (dedented, left-stripped) YAML that carries `marker`."""
    lines = textwrap.dedent(text).lstrip("\n").splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if marker in line]
    assert len(hits) == 1, f"expected one {marker!r} marker, found {len(hits)}"
    return hits[0]
