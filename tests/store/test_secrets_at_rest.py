"""Secret values kept for rollback are encrypted at rest, with a key outside the database
(mso.store.secretbox): a copy of the database reveals nothing, a missing or wrong key is a
clear error and never a silent new key, older plain-text state is migrated, and a key
rotation re-seals everything."""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from mso.store.db import Store
from mso.store.secretbox import SecretsKeyError, key_file

VALUE = "hunter2-very-secret"


def store(path: Path, config: Path, **extra: str) -> Store:
    s = Store(path)
    s.environ = {"MSO_KEY_DIR": str(config / "keys"), **extra}
    return s


def release(s: Store, service: str = "api", value: str = VALUE) -> int:
    return s.add_release(service, "h", {"model": {}}, {"DB_PASSWORD": value}, "test",
                         "first").number


def test_values_round_trip_and_the_file_holds_no_plain_value(tmp_path: Path) -> None:
    s = store(tmp_path / "state.db", tmp_path / "config")
    n = release(s)
    assert s.release_secrets("api", n) == {"DB_PASSWORD": VALUE}
    s.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert VALUE.encode() not in raw and b"DB_PASSWORD" not in raw
    keys = list((tmp_path / "config" / "keys").iterdir())
    assert len(keys) == 1 and oct(keys[0].stat().st_mode & 0o777) == "0o400"
    assert oct((tmp_path / "config" / "keys").stat().st_mode & 0o777) == "0o700"


def test_a_copied_database_without_its_key_reveals_nothing(tmp_path: Path) -> None:
    s = store(tmp_path / "state.db", tmp_path / "config")
    n = release(s)
    s.close()
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    shutil.copy2(tmp_path / "state.db", elsewhere / "state.db")
    copy = store(elsewhere / "state.db", tmp_path / "other-config")
    with pytest.raises(SecretsKeyError, match="encrypted with a key that is not here: "
                                              "restore .*keys/.*\\.key"):
        copy.release_secrets("api", n)
    with pytest.raises(SecretsKeyError):
        copy.open_secrets()
    assert not (tmp_path / "other-config").exists()  # no new key was made


def test_a_wrong_key_is_refused(tmp_path: Path) -> None:
    s = store(tmp_path / "state.db", tmp_path / "config",
              MSO_SECRETS_KEY=base64.b64encode(b"k" * 32).decode())
    release(s)
    s.close()
    other = store(tmp_path / "state.db", tmp_path / "config",
                  MSO_SECRETS_KEY=base64.b64encode(b"x" * 32).decode())
    with pytest.raises(SecretsKeyError, match="not the key the secrets"):
        other.open_secrets()
    bad = store(tmp_path / "state.db", tmp_path / "config", MSO_SECRETS_KEY="short")
    with pytest.raises(SecretsKeyError, match="is not a secrets key"):
        bad.open_secrets()


def test_plain_values_of_an_older_mso_are_sealed_at_start(tmp_path: Path) -> None:
    s = store(tmp_path / "state.db", tmp_path / "config")
    n = release(s)
    s.close()
    db = sqlite3.connect(tmp_path / "state.db")  # as an older mso wrote it
    db.execute("UPDATE release_secrets SET secrets_json=?", ('{"DB_PASSWORD": "old"}',))
    db.execute("DELETE FROM meta WHERE key IN ('secrets_key_check', 'store_id')")
    db.commit()
    db.close()
    shutil.rmtree(tmp_path / "config")
    again = store(tmp_path / "state.db", tmp_path / "config")
    assert again.open_secrets() == 1
    assert again.release_secrets("api", n) == {"DB_PASSWORD": "old"}
    assert again.open_secrets() == 0
    again.close()
    assert b'"old"' not in (tmp_path / "state.db").read_bytes()


def test_a_value_moved_to_another_release_does_not_open(tmp_path: Path) -> None:
    s = store(tmp_path / "state.db", tmp_path / "config")
    first, second = release(s, value="one"), release(s, value="two")
    sealed = s._db.execute("SELECT secrets_json FROM release_secrets WHERE number=?",
                           (first,)).fetchone()[0]
    s._db.execute("UPDATE release_secrets SET secrets_json=? WHERE number=?",
                  (sealed, second))
    with pytest.raises(SecretsKeyError, match="release 2 .* do not open"):
        s.release_secrets("api", second)


def test_rotation_re_seals_and_the_old_key_no_longer_opens(tmp_path: Path) -> None:
    s = store(tmp_path / "state.db", tmp_path / "config")
    numbers = [release(s, value=f"v{i}") for i in range(3)]
    store_id = s.get_meta("store_id")
    assert store_id is not None
    path = key_file(store_id, s.environ)
    old_key = path.read_bytes()
    assert s.rotate_secrets_key() == 3
    assert path.read_bytes() != old_key and not path.with_name(path.name + ".new").exists()
    assert [s.release_secrets("api", n)["DB_PASSWORD"] for n in numbers] == ["v0", "v1", "v2"]
    s.close()
    fresh = store(tmp_path / "state.db", tmp_path / "config")
    assert fresh.release_secrets("api", numbers[0]) == {"DB_PASSWORD": "v0"}
    os.chmod(path, 0o600)
    path.write_bytes(old_key)
    stale = store(tmp_path / "state.db", tmp_path / "config")
    with pytest.raises(SecretsKeyError, match="not the key"):
        stale.open_secrets()


def test_a_rotation_stopped_before_its_rename_is_finished_on_the_next_open(
        tmp_path: Path) -> None:
    s = store(tmp_path / "state.db", tmp_path / "config")
    n = release(s)
    store_id = s.get_meta("store_id")
    assert store_id is not None
    path = key_file(store_id, s.environ)
    s.rotate_secrets_key()
    s.close()
    # As if the process died between the database's commit and the rename: the new key
    # is still `.new`, the old one in place.
    new_key = path.read_bytes()
    path.rename(path.with_name(path.name + ".new"))
    from mso.store.secretbox import _write_key
    _write_key(path, os.urandom(32))
    again = store(tmp_path / "state.db", tmp_path / "config")
    assert again.release_secrets("api", n) == {"DB_PASSWORD": VALUE}
    assert path.read_bytes() == new_key
