"""Fuzzed manifests (issue 15): success or a `file:line` error, never a traceback.

The CI share of bench/fuzz/manifests.py (which runs 10,000 cases): a bounded, derandomized
number of cases from each source of tests/fuzz/manifests.py, so a run is repeatable and
takes well under a minute; and a few of them through `mso validate` in a subprocess.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mso.spec.schema import json_schema

from . import manifests as fz

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fz.workdir(tmp_path_factory.mktemp("fuzz"))


@FUZZ
@given(data=fz.schema_documents(json_schema()))
def test_manifests_from_the_schema(work: Path, data: bytes) -> None:
    path = work / "fuzz.yaml"
    path.write_bytes(data)
    fz.check(path)


@FUZZ
@given(data=fz.mutated_examples())
def test_mutated_example_manifests(work: Path, data: bytes) -> None:
    path = work / "fuzz.yaml"
    path.write_bytes(data)
    fz.check(path)


def test_the_schema_strategy_follows_the_schema() -> None:
    """The generator is faithful: what it draws inside the bounds validates against the
    schema itself (so 'from the schema' means something), and a good share of it loads."""
    import jsonschema
    schema = json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    seen = {"valid": 0, "total": 0}

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fz.from_schema(schema))
    def draw(doc: object) -> None:
        seen["total"] += 1
        seen["valid"] += validator.is_valid(doc)

    draw()
    assert seen["valid"] >= seen["total"] // 4, seen


def test_the_example_seeds_are_found_and_valid(work: Path) -> None:
    assert len(fz.SEEDS) >= 4  # examples/shop, the spec example, docs/manifest.md, README.md
    path = work / "seed.yaml"
    valid = 0
    for text in fz.SEEDS:
        path.write_text(text)
        valid += fz.check(path).valid
    assert valid >= 3


@settings(max_examples=4, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.one_of(fz.mutated_examples(), fz.schema_documents(json_schema())))
def test_mso_validate_never_shows_a_traceback(work: Path, data: bytes) -> None:
    """The CLI boundary: exit 0 or 2, `mso: FILE:LINE: ...`, no traceback."""
    path = work / "cli.yaml"
    path.write_bytes(data)
    env = {**os.environ, **fz.ENVIRON, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "mso", "validate", str(path)], cwd=work,
                          capture_output=True, text=True, env=env, timeout=120)
    assert fz.cli_problem(proc.returncode, proc.stderr, path) is None, proc.stderr


@pytest.mark.parametrize("data", [
    b"app: shop\nservices:\n  web: {run: [a\x07]}\n",
    b"app: shop\nservices: {web: {run: " + b"[" * 100000 + b"]" * 100000 + b"}}\n",
    b"\xff\xfeapp: shop\n",
], ids=["control character", "deep nesting", "utf-16 bom"])
def test_mso_validate_on_known_hard_cases(work: Path, data: bytes) -> None:
    path = work / "hard.yaml"
    path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-m", "mso", "validate", str(path)], cwd=work,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 2 and fz.cli_problem(proc.returncode, proc.stderr, path) is None, \
        proc.stderr
