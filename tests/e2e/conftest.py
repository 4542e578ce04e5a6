"""Fixtures of the end-to-end tests; the harness itself is in harness.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ROOT, MsoApp


@pytest.fixture
def app(tmp_path: Path) -> Iterator[MsoApp]:
    folder = tmp_path / "app"
    folder.mkdir()
    mso_app = MsoApp(folder)
    try:
        yield mso_app
    finally:
        mso_app.teardown()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[MsoApp]:
    folder = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "shop", folder,
                    ignore=shutil.ignore_patterns(".mso", "__pycache__"))
    mso_app = MsoApp(folder)
    text = (folder / "mso.yaml").read_text()
    mso_app.manifest.write_text(text.replace("port: 8080", f"port: {mso_app.gateway_port}"))
    try:
        yield mso_app
    finally:
        mso_app.teardown()
