"""Procfiles: `web` gets a port and the route /, `release` becomes a job before every
service, other process types are workers; errors name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mso.importers import import_file, is_importable
from mso.spec.errors import ManifestError
from tests.importers.helpers import entry, round_trip

PROCFILE = """\
# the shop
web: gunicorn shop.wsgi --bind 0.0.0.0:$PORT
worker: celery -A shop worker
release: python manage.py migrate
clock_tick: python clock.py
"""


def test_a_procfile(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text(PROCFILE)
    assert is_importable(tmp_path / "Procfile")
    imported = import_file(tmp_path / "Procfile", {})
    data = imported.data
    assert data["routes"] == [{"path": "/", "service": "web"}]
    assert data["services"]["web"] == {"run": "gunicorn shop.wsgi --bind 0.0.0.0:$PORT",
                                       "shell": True, "ports": {"http": 5000}}
    assert data["services"]["worker"] == {"run": "celery -A shop worker", "shell": True}
    assert data["jobs"]["release"]["before"] == ["web", "worker", "clock-tick"]
    assert entry(imported, "release", "translated").line == 4
    assert "renamed" in entry(imported, "clock_tick").reason
    # `$PORT` reaches the shell: written `$$PORT`, read back as `$PORT`
    assert "$$PORT" in imported.yaml_text()
    loaded = round_trip(imported, tmp_path, ("local", "swarm"))
    assert loaded.manifest.services["web"].run == "gunicorn shop.wsgi --bind 0.0.0.0:$PORT"


@pytest.mark.parametrize("text, message", [
    ("web python app.py\n", "Procfile:1: expected `name: command`"),
    ("web: a\nweb: b\n", "Procfile:2: web: 'web' is also defined on line 1"),
    ("web:\n", "Procfile:1: web: the command is empty"),
    ("# nothing\n", "no process types"),
])
def test_a_broken_procfile(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "Procfile").write_text(text)
    with pytest.raises(ManifestError) as caught:
        import_file(tmp_path / "Procfile", {})
    assert message in str(caught.value)
