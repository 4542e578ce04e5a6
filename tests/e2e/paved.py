"""A fresh app made with `mso new service` (issue 18), for the tests on every engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def paved_app(folder: Path, app: str, gateway_port: int, template: str = "python-http") -> Path:
    """FOLDER/mso.yaml with one service `api` from TEMPLATE, and the template's own test
    run (it must pass before anything is deployed)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "mso.yaml"
    manifest.write_text(f"app: {app}\ngateway: {{port: {gateway_port}}}\n")
    made = subprocess.run([sys.executable, "-m", "mso", "new", "service", "api", "--template",
                           template], cwd=folder, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    own = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=folder / "api",
                         capture_output=True, text=True, timeout=120)
    assert own.returncode == 0, own.stdout + own.stderr
    return manifest


def set_greeting(manifest: Path, greeting: str) -> None:
    """A new release: the service's config changes (the rest of the file is kept)."""
    current = yaml.safe_load(manifest.read_text())["services"]["api"]["env"]["GREETING"]
    manifest.write_text(manifest.read_text().replace(f"GREETING: {current}", f"GREETING: {greeting}"))
