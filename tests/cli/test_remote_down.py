"""`mso down` on a remote engine needs only the manifest's names: a secret's variable or
file may be gone by then (a CI job's secret, a rotated file), and the app must still go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mso.cli import main

MANIFEST = """app: sec
services:
  web:
    run: [python3, -m, http.server]
    ports: {http: 8000}
    secrets:
      db.password: {env: MSO_TEST_GONE_SECRET, as_env: true}
      key: {file: ./missing-key}
"""


class FakeRemote:
    def __init__(self) -> None:
        self.downs: list[str] = []

    def down(self, loaded: Any) -> None:
        self.downs.append(loaded.manifest.app)


def test_down_on_swarm_works_without_the_secrets_that_starting_needs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    monkeypatch.delenv("MSO_TEST_GONE_SECRET", raising=False)
    fake = FakeRemote()
    monkeypatch.setattr(main, "remote", lambda name, opts: fake)
    runner = CliRunner()
    with pytest.raises(Exception, match="MSO_TEST_GONE_SECRET is not set"):
        main.load(str(tmp_path / "mso.yaml"))  # what `up` and `validate` need
    result = runner.invoke(main.cli, ["down", "--engine", "swarm",
                                      "-f", str(tmp_path / "mso.yaml")])
    assert result.exit_code == 0, result.output
    assert fake.downs == ["sec"]
