"""Helpers for manifest tests: write YAML (and referenced files) into a tmp folder."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

WriteManifest = Callable[..., Path]


@pytest.fixture
def write_manifest(tmp_path: Path) -> WriteManifest:
    """write_manifest(yaml_text, files={"rel/path": "content"}) -> path of mso.yaml."""

    def write(text: str, files: dict[str, str | bytes] | None = None) -> Path:
        for rel, content in (files or {}).items():
            target = tmp_path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        path = tmp_path / "mso.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write
