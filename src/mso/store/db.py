"""The SQLite state store: desired state, releases, observed replicas, rollouts, events.

One connection per process, WAL mode, `synchronous=NORMAL`: a crash of the daemon loses at
most the last transaction, never corrupts the file. Every write is its own short
transaction so a `kill -9` between two writes leaves a consistent state.

A disk that refuses writes (full, read-only) is handled as mso.store.health describes:
events and replica states wait in memory and are written once it accepts them again
(`recover()`); every other write raises `StoreUnavailable` and changes nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag

from mso.store.health import (RETRY_PERIOD, HeldEvent, Pending, StoreHealth,
                              StoreUnavailable, filesystem_ready, is_disk_error)
from mso.store.records import Desired, Event, Release, ReplicaRecord
from mso.store.secretbox import PREFIX, SecretBox, SecretsKeyError

SCHEMA_VERSION = 1
MAX_EVENTS = 50_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
  service TEXT NOT NULL, number INTEGER NOT NULL, spec_hash TEXT NOT NULL,
  spec_json TEXT NOT NULL, created REAL NOT NULL, author TEXT NOT NULL,
  change TEXT NOT NULL, outcome TEXT NOT NULL, PRIMARY KEY (service, number));
CREATE TABLE IF NOT EXISTS release_secrets (
  service TEXT NOT NULL, number INTEGER NOT NULL, secrets_json TEXT NOT NULL,
  PRIMARY KEY (service, number));
CREATE TABLE IF NOT EXISTS desired (
  service TEXT PRIMARY KEY, kind TEXT NOT NULL, release INTEGER NOT NULL,
  replicas INTEGER NOT NULL, manifest_replicas INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS replicas (
  id TEXT PRIMARY KEY, service TEXT NOT NULL, ordinal INTEGER NOT NULL,
  release INTEGER NOT NULL, subset TEXT NOT NULL, state TEXT NOT NULL,
  pid INTEGER, start_time INTEGER, ports_json TEXT NOT NULL, restarts INTEGER NOT NULL,
  spec_hash TEXT NOT NULL, reason TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, type TEXT NOT NULL,
  service TEXT, replica TEXT, message TEXT NOT NULL, data_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  name TEXT NOT NULL, spec_hash TEXT NOT NULL, state TEXT NOT NULL, exit_code INTEGER,
  started REAL NOT NULL, finished REAL, PRIMARY KEY (name, spec_hash));
CREATE TABLE IF NOT EXISTS rollouts (
  service TEXT PRIMARY KEY, state_json TEXT NOT NULL, updated REAL NOT NULL);
"""


class Store:
    """Typed access to the state database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.health = StoreHealth()
        self.pending = Pending()
        # Secrets live in here: the file is private before SQLite writes a byte, and SQLite
        # gives its -wal and -shm files the database's mode. Files made by an older build
        # (database made 0644 and tightened after the WAL existed) are tightened too.
        self._box: SecretBox | None = None
        self.environ: Mapping[str, str] = os.environ  # where the secrets key is looked up
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreUnavailable(f"the state store {path} cannot be opened for writing "
                                   f"({exc.strerror or exc}): is {path.parent} on a "
                                   f"read-only filesystem?") from exc
        for existing in (path, *(path.with_name(path.name + x) for x in ("-wal", "-shm"))):
            try:
                existing.chmod(0o600)
            except FileNotFoundError:
                pass
        #: Opened read-only (`immutable`) because the disk had no room for the WAL's
        #: files: reconnected normally by `recover()` once it has.
        self._frozen = False
        self._db: sqlite3.Connection  # unset until connected (see _close_quietly)
        try:
            self._db = self._connect()
            if not self._has_schema():
                self._db.executescript(_SCHEMA)
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        except (sqlite3.Error, StoreUnavailable) as exc:
            self._open_unwritable(exc)

    def _connect(self, frozen: bool = False) -> sqlite3.Connection:
        if frozen:
            db = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, timeout=30.0,
                                 isolation_level=None, check_same_thread=False)
        else:
            db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                 check_same_thread=False)
        db.row_factory = sqlite3.Row
        try:
            if not frozen:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            db.close()
            raise
        return db

    def _has_schema(self) -> bool:
        names = {str(r[0]) for r in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
        return {"meta", "releases", "release_secrets", "desired", "replicas", "events",
                "jobs", "rollouts"} <= names

    def _open_unwritable(self, exc: Exception) -> None:
        """Opening on a disk that refuses writes (a daemon starting on a full disk): a
        store that has its tables serves reads and holds writes until the disk takes
        them (mso.store.health); one that does not cannot be used at all.

        A store closed cleanly has no -wal and -shm files, and a full disk has no room
        to make them, so SQLite cannot even read it in WAL mode: it is then read as
        `immutable` (safe: without a -wal file the database file is the whole state, and
        this daemon holds the app's lock) until `recover()` reconnects it."""
        cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
        if not isinstance(cause, sqlite3.Error) or not is_disk_error(cause):
            self._close_quietly()
            raise exc
        if self.health.writable:
            self.health.failed("the store's opening", cause)
        complete = False
        if getattr(self, "_db", None) is not None:
            try:
                complete = self._has_schema()
            except sqlite3.Error:
                pass
        wal = self.path.with_name(self.path.name + "-wal")
        if not complete and (not wal.exists() or wal.stat().st_size == 0):
            self._close_quietly()
            try:
                self._db = self._connect(frozen=True)
                self._frozen = True
                complete = self._has_schema()
            except sqlite3.Error:
                pass
        if not complete:
            self._close_quietly()
            raise StoreUnavailable(f"the state store {self.path} cannot be created ({cause}):"
                                   f" is the disk of {self.path.parent} full or read-only? "
                                   f"Free some space and start again") from cause

    def _close_quietly(self) -> None:
        db: sqlite3.Connection | None = getattr(self, "_db", None)
        if db is not None:
            db.close()
            del self._db

    def _thaw(self) -> bool:
        """Reconnect a store opened `immutable` (see `_open_unwritable`); False while
        the disk still refuses the WAL's files."""
        try:
            db = self._connect()
            db.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.Error as exc:
            self.health.waiting_for = f"the store cannot be reopened for writing: {exc}"
            return False
        self._db.close()
        self._db, self._frozen = db, False
        return True

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """The store of an app whose daemon is not running, for the read-only commands
        (`ps`, `logs`, `events`, `releases`, `rollout status` after `down` or a crash).

        Opened with SQLite's `mode=ro`: nothing is created, migrated or written, so a
        reader can never change what a later daemon finds. Raises `sqlite3.Error` when
        the file is not a readable state database.
        """
        store = cls.__new__(cls)
        store.path = path
        store.health = StoreHealth()
        store.pending = Pending()
        store._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0,
                                    isolation_level=None, check_same_thread=False)
        store._db.row_factory = sqlite3.Row
        try:
            store._db.execute("SELECT count(*) FROM meta").fetchone()  # fail now, not later
        except sqlite3.Error as exc:
            # A full or read-only disk has no room for the -shm file a WAL database
            # needs even to be read; closed cleanly (no -wal), the file is the whole state.
            wal = path.with_name(path.name + "-wal")
            store._db.close()
            if not is_disk_error(exc) or (wal.exists() and wal.stat().st_size):
                raise
            store._db = sqlite3.connect(f"file:{path}?immutable=1", uri=True,
                                        isolation_level=None, check_same_thread=False)
            store._db.row_factory = sqlite3.Row
            store._db.execute("SELECT count(*) FROM meta").fetchone()
        store._box = None
        store.environ = os.environ
        store._frozen = False
        return store

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (a full disk during COMMIT).
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._refused("a transaction", exc) from exc

    def _refused(self, what: str, exc: sqlite3.Error) -> Exception:
        """`StoreUnavailable` for a write the disk refused (noted once in `health`);
        any other SQLite error unchanged."""
        if not is_disk_error(exc):
            return exc
        self.health.failed(what, exc)
        return StoreUnavailable(f"the state store cannot be written ({exc}): is the disk "
                                f"of {self.path.parent} full or read-only? Nothing was "
                                f"changed; retry once it has space")

    def _write(self, what: str, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._refused(what, exc) from exc

    # -- a disk that refuses writes (mso.store.health) ------------------------------------
    def recover(self, force: bool = False) -> bool:
        """Write what was held while the disk refused writes; True once the store is
        writable (at once when it never stopped being). Tries at most once per
        RETRY_PERIOD (unless `force`) and only once the filesystem has room again."""
        if self.health.writable:
            return True
        now = time.monotonic()
        if not force and now - self.health.last_attempt < RETRY_PERIOD:
            return False
        self.health.last_attempt = now
        ready, why = filesystem_ready(self.path.parent)
        if not ready:
            self.health.waiting_for = why
            return False
        if self._frozen and not self._thaw():
            return False
        pending = self.pending
        since = min([self.health.since or time.time()] + [e.ts for e in pending.events[:1]])
        error = self.health.error
        try:
            with self.transaction() as db:
                for rid, rec in pending.replicas.items():
                    if rec is None:
                        db.execute("DELETE FROM replicas WHERE id=?", (rid,))
                    else:
                        self._upsert_replica(rec)
                self._insert_event(since, "store.unwritable",
                                   f"state store not writable: {error}; serving went on, "
                                   f"events and replica states were held in memory",
                                   None, None, {"error": error})
                for e in pending.events:
                    self._insert_event(e.ts, e.type, e.message, e.service, e.replica, e.data)
                lasted = time.time() - since
                held = len(pending.events) + len(pending.replicas)
                self._insert_event(
                    time.time(), "store.recovered",
                    f"state store writable again after {lasted:.1f}s; {held} held "
                    f"record(s) written" + (f", {pending.dropped_events} event(s) dropped "
                                            f"(too many to hold)" if pending.dropped_events
                                            else ""),
                    None, None, {"seconds": round(lasted, 3), "held": held,
                                 "dropped_events": pending.dropped_events})
        except StoreUnavailable as exc:
            self.health.waiting_for = str(exc.__cause__ or exc)
            return False
        self.pending = Pending()
        self.health.recovered(held)
        return True

    # -- meta -------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        if self.get_meta(key) == value:
            return  # a write that changes nothing is not made (nor refused by a full disk)
        self._write(f"meta {key}", "INSERT INTO meta(key, value) VALUES (?, ?) ON "
                    "CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    def delete_meta(self, key: str) -> None:
        self._write(f"meta {key}", "DELETE FROM meta WHERE key=?", (key,))

    # -- releases ---------------------------------------------------------------------
    def add_release(self, service: str, spec_hash: str, spec: dict[str, Any],
                    secrets: dict[str, str], author: str, change: str,
                    outcome: str = "pending") -> Release:
        with self.transaction() as db:
            row = db.execute("SELECT COALESCE(MAX(number), 0) AS n FROM releases "
                             "WHERE service=?", (service,)).fetchone()
            number = int(row["n"]) + 1
            created = time.time()
            # Not sorted: key order is meaning in a spec (the first port written is PORT).
            db.execute("INSERT INTO releases VALUES (?,?,?,?,?,?,?,?)",
                       (service, number, spec_hash, json.dumps(spec),
                        created, author, change, outcome))
            db.execute("INSERT INTO release_secrets VALUES (?,?,?)",
                       (service, number, self._seal(secrets, service, number)))
        return Release(service, number, spec_hash, spec, created, author, change, outcome)

    def releases(self, service: str) -> list[Release]:
        rows = self._db.execute("SELECT * FROM releases WHERE service=? ORDER BY number",
                                (service,)).fetchall()
        return [_release(r) for r in rows]

    def release(self, service: str, number: int) -> Release | None:
        row = self._db.execute("SELECT * FROM releases WHERE service=? AND number=?",
                               (service, number)).fetchone()
        return None if row is None else _release(row)

    def latest_release(self, service: str) -> Release | None:
        row = self._db.execute("SELECT * FROM releases WHERE service=? ORDER BY number "
                               "DESC LIMIT 1", (service,)).fetchone()
        return None if row is None else _release(row)

    def release_secrets(self, service: str, number: int) -> dict[str, str]:
        row = self._db.execute("SELECT secrets_json FROM release_secrets WHERE service=? "
                               "AND number=?", (service, number)).fetchone()
        return {} if row is None else self._open(str(row["secrets_json"]), service, number)

    # -- secrets at rest (mso.store.secretbox) ------------------------------------------
    def secrets_box(self) -> SecretBox:
        """The key of this database's secrets (loaded once; made for a new database).
        Raises `SecretsKeyError` when it is missing or not the right one."""
        if self._box is None:
            store_id = self.get_meta("store_id")
            if store_id is None:
                store_id = os.urandom(12).hex()
                self.set_meta("store_id", store_id)
            check = self.get_meta("secrets_key_check")
            box = SecretBox.load(store_id, check, self.path, self.environ)
            if check is None:
                self.set_meta("secrets_key_check", box.check)
            self._box = box
        return self._box

    def open_secrets(self) -> int:
        """Check the key at start-up and seal values an older mso kept in plain text;
        returns how many releases were migrated."""
        box = self.secrets_box()
        with self.transaction() as db:
            rows = db.execute("SELECT service, number, secrets_json FROM release_secrets "
                              "WHERE secrets_json NOT LIKE ?", (PREFIX + "%",)).fetchall()
            for row in rows:
                db.execute("UPDATE release_secrets SET secrets_json=? WHERE service=? AND "
                           "number=?", (box.seal(row["secrets_json"],
                                                 f"{row['service']}/{row['number']}"),
                                        row["service"], row["number"]))
        return len(rows)

    def rotate_secrets_key(self) -> int:
        """Re-seal every kept secret with a new key; returns the releases re-sealed."""
        old = self.secrets_box()
        store_id = self.get_meta("store_id")
        assert store_id is not None  # secrets_box() made it
        new, pending = SecretBox.rotate(store_id, self.environ)
        try:
            with self.transaction() as db:
                rows = db.execute("SELECT service, number, secrets_json FROM "
                                  "release_secrets").fetchall()
                for row in rows:
                    context = f"{row['service']}/{row['number']}"
                    value = str(row["secrets_json"])
                    plain = old.open(value, context) if value.startswith(PREFIX) else value
                    db.execute("UPDATE release_secrets SET secrets_json=? WHERE service=? "
                               "AND number=?", (new.seal(plain, context), row["service"],
                                                row["number"]))
                db.execute("INSERT INTO meta(key, value) VALUES ('secrets_key_check', ?) "
                           "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           (new.check,))
        except BaseException:
            pending.unlink(missing_ok=True)
            raise
        SecretBox.commit_rotation(pending)
        self._box = new
        return len(rows)

    def _seal(self, secrets: dict[str, str], service: str, number: int) -> str:
        return self.secrets_box().seal(json.dumps(secrets), f"{service}/{number}")

    def _open(self, value: str, service: str, number: int) -> dict[str, str]:
        if not value.startswith(PREFIX):  # kept in plain text by an older mso
            return dict(json.loads(value))
        try:
            return dict(json.loads(self.secrets_box().open(value, f"{service}/{number}")))
        except InvalidTag as exc:
            raise SecretsKeyError(f"the kept secrets of {service} release {number} in "
                                  f"{self.path} do not open with the secrets key (altered?)"
                                  ) from exc

    def set_release_outcome(self, service: str, number: int, outcome: str) -> None:
        self._write("a release outcome", "UPDATE releases SET outcome=? WHERE service=? "
                    "AND number=?", (outcome, service, number))

    def services_with_releases(self) -> list[str]:
        rows = self._db.execute("SELECT DISTINCT service FROM releases").fetchall()
        return sorted(str(r["service"]) for r in rows)

    # -- desired ----------------------------------------------------------------------
    def set_desired(self, desired: Desired) -> None:
        if self.desired().get(desired.service) == desired:
            return  # unchanged: `mso up` of the same manifest writes nothing
        self._write(
            "desired state", "INSERT INTO desired VALUES (?,?,?,?,?) ON CONFLICT(service) DO UPDATE SET "
            "kind=excluded.kind, release=excluded.release, replicas=excluded.replicas, "
            "manifest_replicas=excluded.manifest_replicas",
            (desired.service, desired.kind, desired.release, desired.replicas,
             desired.manifest_replicas))

    def desired(self) -> dict[str, Desired]:
        rows = self._db.execute("SELECT * FROM desired").fetchall()
        return {str(r["service"]): Desired(str(r["service"]), str(r["kind"]),
                                           int(r["release"]), int(r["replicas"]),
                                           int(r["manifest_replicas"])) for r in rows}

    def delete_desired(self, service: str) -> None:
        self._write("desired state", "DELETE FROM desired WHERE service=?", (service,))

    def clear_desired(self) -> None:
        self._write("desired state", "DELETE FROM desired")

    # -- replicas ---------------------------------------------------------------------
    def upsert_replica(self, rec: ReplicaRecord) -> None:
        """Record a replica's observed state; held in memory while the disk refuses."""
        rec.updated = time.time()
        if self.health.writable:
            try:
                self._upsert_replica(rec)
                return
            except sqlite3.Error as exc:
                if not is_disk_error(exc):
                    raise
                self.health.failed(f"replica {rec.id}", exc)
        self.pending.replicas[rec.id] = ReplicaRecord(**vars(rec))

    def _upsert_replica(self, rec: ReplicaRecord) -> None:
        self._db.execute(
            "INSERT INTO replicas VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO "
            "UPDATE SET service=excluded.service, ordinal=excluded.ordinal, "
            "release=excluded.release, subset=excluded.subset, state=excluded.state, "
            "pid=excluded.pid, start_time=excluded.start_time, "
            "ports_json=excluded.ports_json, restarts=excluded.restarts, "
            "spec_hash=excluded.spec_hash, reason=excluded.reason, updated=excluded.updated",
            (rec.id, rec.service, rec.ordinal, rec.release, rec.subset, rec.state, rec.pid,
             rec.start_time, json.dumps(rec.ports), rec.restarts, rec.spec_hash,
             rec.reason, rec.updated))

    def replicas(self) -> list[ReplicaRecord]:
        rows = self._db.execute("SELECT * FROM replicas ORDER BY service, ordinal").fetchall()
        return [ReplicaRecord(id=str(r["id"]), service=str(r["service"]),
                              ordinal=int(r["ordinal"]), release=int(r["release"]),
                              subset=str(r["subset"]), state=str(r["state"]),
                              pid=r["pid"], start_time=r["start_time"],
                              ports=dict(json.loads(r["ports_json"])),
                              restarts=int(r["restarts"]), spec_hash=str(r["spec_hash"]),
                              reason=str(r["reason"]), updated=float(r["updated"]))
                for r in rows]

    def delete_replica(self, replica_id: str) -> None:
        if self.health.writable:
            try:
                self._db.execute("DELETE FROM replicas WHERE id=?", (replica_id,))
                return
            except sqlite3.Error as exc:
                if not is_disk_error(exc):
                    raise
                self.health.failed(f"replica {replica_id}", exc)
        self.pending.replicas[replica_id] = None

    # -- jobs -------------------------------------------------------------------------
    def job_state(self, name: str, spec_hash: str) -> tuple[str, int | None] | None:
        row = self._db.execute("SELECT state, exit_code FROM jobs WHERE name=? AND "
                               "spec_hash=?", (name, spec_hash)).fetchone()
        return None if row is None else (str(row["state"]), row["exit_code"])

    def set_job_state(self, name: str, spec_hash: str, state: str,
                      exit_code: int | None = None) -> None:
        now = time.time()
        finished = now if state in ("succeeded", "failed") else None
        self._write(
            "a job state", "INSERT INTO jobs VALUES (?,?,?,?,?,?) ON CONFLICT(name, spec_hash) DO UPDATE "
            "SET state=excluded.state, exit_code=excluded.exit_code, "
            "finished=excluded.finished", (name, spec_hash, state, exit_code, now, finished))

    # -- rollouts ---------------------------------------------------------------------
    def get_rollout(self, service: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT state_json FROM rollouts WHERE service=?",
                               (service,)).fetchone()
        return None if row is None else dict(json.loads(row["state_json"]))

    def set_rollout(self, service: str, state: dict[str, Any]) -> None:
        self._write("a rollout", "INSERT INTO rollouts VALUES (?,?,?) ON CONFLICT(service) "
                    "DO UPDATE SET state_json=excluded.state_json, updated=excluded.updated",
                    (service, json.dumps(state, sort_keys=True), time.time()))

    def replace_rollout(self, service: str, state: dict[str, Any],
                        expected: dict[str, Any]) -> bool:
        """Compare-and-swap: write `state` only if the stored state is still `expected`
        (both are stored as sorted-key JSON, so equal states have equal text)."""
        cur = self._write(
            "a rollout", "UPDATE rollouts SET state_json=?, updated=? WHERE service=? AND state_json=?",
            (json.dumps(state, sort_keys=True), time.time(), service,
             json.dumps(expected, sort_keys=True)))
        if cur.rowcount == 1:
            return True
        if self.get_rollout(service) == expected:  # same state, other text (older writer)
            self.set_rollout(service, state)
            return True
        return False

    def delete_rollout(self, service: str) -> None:
        self._write("a rollout", "DELETE FROM rollouts WHERE service=?", (service,))

    # -- events -----------------------------------------------------------------------
    def add_event(self, type_: str, message: str, service: str | None = None,
                  replica: str | None = None, data: dict[str, Any] | None = None) -> Event:
        """Append an event; while the disk refuses writes it is held in memory (id 0)
        and written, with its own time, once it accepts them again."""
        ts = time.time()
        payload = data or {}
        if self.health.writable:
            try:
                event_id = self._insert_event(ts, type_, message, service, replica, payload)
                return Event(event_id, ts, type_, service, replica, message, payload)
            except sqlite3.Error as exc:
                if not is_disk_error(exc):
                    raise
                self.health.failed(f"event {type_}", exc)
        self.pending.hold_event(HeldEvent(ts, type_, message, service, replica, payload))
        return Event(0, ts, type_, service, replica, message, payload)

    def _insert_event(self, ts: float, type_: str, message: str, service: str | None,
                      replica: str | None, payload: dict[str, Any]) -> int:
        cur = self._db.execute(
            "INSERT INTO events(ts, type, service, replica, message, data_json) "
            "VALUES (?,?,?,?,?,?)", (ts, type_, service, replica, message,
                                     json.dumps(payload, default=str)))
        event_id = int(cur.lastrowid or 0)
        if event_id % 1000 == 0:
            self._db.execute("DELETE FROM events WHERE id <= ?", (event_id - MAX_EVENTS,))
        return event_id

    def events(self, after_id: int = 0, service: str | None = None,
               limit: int = 1000) -> list[Event]:
        query = "SELECT * FROM events WHERE id > ?"
        args: list[Any] = [after_id]
        if service:
            query += " AND service = ?"
            args.append(service)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        rows = self._db.execute(query, args).fetchall()
        return [Event(int(r["id"]), float(r["ts"]), str(r["type"]), r["service"],
                      r["replica"], str(r["message"]), dict(json.loads(r["data_json"])))
                for r in reversed(rows)]


def _release(row: sqlite3.Row) -> Release:
    return Release(str(row["service"]), int(row["number"]), str(row["spec_hash"]),
                   dict(json.loads(row["spec_json"])), float(row["created"]),
                   str(row["author"]), str(row["change"]), str(row["outcome"]))
