"""The benchmarks' one way of recording results: a benchmark owns one `## ` section of
docs/benchmarks.md and replaces it (or appends it) with its new report, leaving every
other section as it was."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_section(text: str, heading: str, report: str) -> str:
    """`text` with the section that starts with `heading` replaced by (or appended as)
    `report`; the section ends where the next `## ` heading starts."""
    report = report.rstrip("\n") + "\n"
    start = text.find(heading)
    if start == -1:
        return text.rstrip("\n") + "\n\n" + report
    nxt = text.find("\n## ", start + len(heading))
    rest = text[nxt + 1:] if nxt != -1 else ""
    return text[:start] + (report + "\n" + rest if rest else report)


def write_section(heading: str, report: str, docs: Path = DOCS) -> None:
    """Replace the section `heading` of `docs` (docs/benchmarks.md) with `report`."""
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    docs.write_text(replace_section(text, heading, report))
