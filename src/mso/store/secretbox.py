"""Secret values at rest: encrypted in the state database with a key kept outside it.

The state database keeps each release's secret values, so that a rollback restores them.
They are sealed with AES-256-GCM (`cryptography`'s AEAD), the release (`service/number`)
as associated data, so a sealed value cannot be moved to another release. The key lives
outside `.mso/`, like Docker Swarm's autolock key:

* `MSO_SECRETS_KEY` (32 bytes, base64), when set: one key for every app of the caller;
* otherwise a key file per state database, `<store id>.key` (mode 0400, folder 0700) in
  `MSO_KEY_DIR`, else `$XDG_CONFIG_HOME/mso/keys`, else `~/.config/mso/keys`. The store
  id is a random name the database keeps in its `meta` table.

A copy of the database without the key reveals no secret value. The database keeps a
check value of its key (an HMAC of a fixed text): a missing or different key is a clear
error (`SecretsKeyError`), never a silent new key, which would make the old values
unreadable for good. A key is made only for a database that has none yet.

Rotation (`Store.rotate_secrets_key`) writes the new key next to the old one
(`<id>.key.new`), re-seals every value and records the new check value in one
transaction, then renames the new file over the old: a crash at any point leaves a key
that opens the database (`SecretBox.load` finishes an interrupted rename).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets as random
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mso.errors import Failed

PREFIX = "v1:"
_CHECK_TEXT = b"mso secrets key check v1"
KEY_ENV = "MSO_SECRETS_KEY"


class SecretsKeyError(Failed):
    """The key of the secrets at rest is missing, unreadable or not the right one."""


def key_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("MSO_KEY_DIR"):
        return Path(environ["MSO_KEY_DIR"])
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mso" / "keys"


def key_file(store_id: str, environ: Mapping[str, str]) -> Path:
    return key_dir(environ) / f"{store_id}.key"


def check_value(key: bytes) -> str:
    return hmac.new(key, _CHECK_TEXT, hashlib.sha256).hexdigest()[:32]


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise SecretsKeyError(f"{where} is not a secrets key (32 bytes, base64)")
    return key


def _write_key(path: Path, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, base64.b64encode(key) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class SecretBox:
    """Seals and opens secret values with one key."""

    def __init__(self, key: bytes, source: str) -> None:
        self._aead = AESGCM(key)
        self.key = key
        self.source = source  # where the key came from, for messages

    @property
    def check(self) -> str:
        return check_value(self.key)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = random.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, value: str, context: str) -> str:
        raw = base64.b64decode(value[len(PREFIX):])
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()

    @classmethod
    def load(cls, store_id: str, expected_check: str | None, db_path: Path,
             environ: Mapping[str, str]) -> SecretBox:
        """The key of the database `store_id`; made (as a key file) only when the database
        has no key yet (`expected_check` None) and none is given."""
        if environ.get(KEY_ENV):
            box = cls(_decode(environ[KEY_ENV], KEY_ENV), KEY_ENV)
        else:
            path = key_file(store_id, environ)
            pending = path.with_name(path.name + ".new")
            if pending.exists() and expected_check is not None:
                try:
                    candidate = _decode(pending.read_text(), str(pending))
                except (OSError, SecretsKeyError):
                    candidate = b""
                if candidate and check_value(candidate) == expected_check:
                    os.replace(pending, path)  # a rotation that stopped before its rename
            if path.exists():
                try:
                    text = path.read_text()
                except OSError as exc:
                    raise SecretsKeyError(f"cannot read the secrets key {path}: "
                                          f"{exc.strerror}") from exc
                box = cls(_decode(text, str(path)), str(path))
            elif expected_check is None:
                key = AESGCM.generate_key(bit_length=256)
                _write_key(path, key)
                return cls(key, str(path))
            else:
                raise SecretsKeyError(
                    f"the secrets in {db_path} are encrypted with a key that is not here: "
                    f"restore {path} (or set {KEY_ENV}); mso does not make a new one, which "
                    f"would leave the kept secrets unreadable")
        if expected_check is not None and not hmac.compare_digest(box.check, expected_check):
            raise SecretsKeyError(f"the secrets key from {box.source} is not the key the "
                                  f"secrets in {db_path} were encrypted with")
        return box

    @staticmethod
    def rotate(store_id: str, environ: Mapping[str, str]) -> tuple[SecretBox, Path]:
        """A new key, written as `<id>.key.new` (renamed by `commit_rotation`)."""
        if environ.get(KEY_ENV):
            raise SecretsKeyError(f"the secrets key comes from {KEY_ENV}, which mso cannot "
                                  f"rewrite: rotation works on key files (unset {KEY_ENV} "
                                  f"after saving its value as the key file)")
        path = key_file(store_id, environ)
        pending = path.with_name(path.name + ".new")
        pending.unlink(missing_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        _write_key(pending, key)
        return SecretBox(key, str(path)), pending

    @staticmethod
    def commit_rotation(pending: Path) -> None:
        os.replace(pending, pending.with_name(pending.name[:-len(".new")]))
