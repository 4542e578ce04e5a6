"""The `user:` key: its forms, errors at file:line, the dynamic user's name and remote
uid, and the checks `mso up` makes on the embedded engine (mso.spec.users)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mso.spec import support, users
from mso.spec.errors import ManifestError
from mso.spec.load import load_manifest

BASE = "app: t\nservices:\n  web:\n    run: [python3, app.py]\n"


def loaded(tmp_path: Path, user: str) -> object:
    (tmp_path / "mso.yaml").write_text(BASE + f"    user: {user}\n")
    return load_manifest(tmp_path / "mso.yaml", {})


@pytest.mark.parametrize("written, stored", [
    ("postgres", "postgres"), ("postgres:ssl-cert", "postgres:ssl-cert"), ("999", "999"),
    ('"999:998"', "999:998"), ("dynamic", "dynamic"), ("www-data", "www-data")])
def test_forms(tmp_path: Path, written: str, stored: str) -> None:
    assert loaded(tmp_path, written).manifest.services["web"].user == stored  # type: ignore[attr-defined]


@pytest.mark.parametrize("written", ['"a b"', "dynamic:staff", '"x:"', '":1"', "-1"])
def test_bad_forms_are_refused_at_their_line(tmp_path: Path, written: str) -> None:
    with pytest.raises(ManifestError) as err:
        loaded(tmp_path, written)
    assert ":5: services.web.user" in str(err.value), str(err.value)


def test_dynamic_name_fits_useradd_and_remote_id_is_stable() -> None:
    name = users.dynamic_name("a-very-long-application-name", "and-a-long-service")
    assert name.startswith("mso-a-very-long") and len(name) == 32
    assert users.remote_id("app", "web") == users.remote_id("app", "web")
    assert users.remote_id("app", "web") != users.remote_id("app", "db")
    assert users.remote_ids("app", "web", "999") == ("999", "999")
    assert users.remote_ids("app", "web", "pg:ssl") == ("pg", "ssl")


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, names are looked up")
def test_as_root_a_user_missing_here_is_refused_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as err:
        users.check_local(loaded(tmp_path, "no-such-user-here"))  # type: ignore[arg-type]
    assert "mso.yaml:5: services.web.user: no user 'no-such-user-here'" in str(err.value)
    users.check_local(loaded(tmp_path, "nobody"))  # type: ignore[arg-type]
    users.check_local(loaded(tmp_path, "dynamic"))  # type: ignore[arg-type]


def test_kubernetes_refuses_a_name_and_takes_numbers(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as err:
        support.check(loaded(tmp_path, "postgres"), "kubernetes")  # type: ignore[arg-type]
    assert "services.web.user: not supported on kubernetes" in str(err.value)
    for ok in ("999", '"999:999"', "dynamic"):
        support.check(loaded(tmp_path, ok), "kubernetes")  # type: ignore[arg-type]
    support.check(loaded(tmp_path, "postgres"), "swarm")  # type: ignore[arg-type]
