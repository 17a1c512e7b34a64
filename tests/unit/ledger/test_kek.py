"""ledger._kek: subject secrets and ids are never in the database in the clear, and an erasure makes
every surviving copy (WAL, archives, backups) undecryptable, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import text

from ledger._kek import BUCKETS, BucketKey, KekFile, KekState, kek_path
from ledger.api import Ledger
from ledger.errors import InputError, StorageError
from ledger.privacy import SubjectKey, SubjectKeys
from tests.conftest import make_ledger

ZOE = "zoe.unique-subject@example.com"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def led(any_url: str) -> Iterator[Ledger]:
    ledger = make_ledger(any_url)
    yield ledger
    ledger.close()


def _kp(led: Ledger, home: Path) -> Path:
    """The ledger's KEK file in ``home`` (named by its genesis leaf hash)."""
    return kek_path(home, led.get(0).leaf_hash.hex())


def _rows(led: Ledger) -> list[dict[str, Any]]:
    with led.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM subject_keys"))]


def _unwrap_all(state: KekState, row: dict[str, Any]) -> tuple[bytes, str] | None:
    """What anybody holding ``state`` could get out of a (backed-up) row: try every key of its bucket."""
    for gen, key in state.keys[row["kek_bucket"]].items():
        try:
            return BucketKey.of(row["kek_bucket"], gen, key).unwrap(row["key_id"], bytes(row["secret"]))
        except StorageError:
            continue
    return None


def _same_bucket(state: KekState, subject: str, n: int) -> list[str]:
    """``n`` other subject ids that fall in ``subject``'s bucket."""
    want, out, i = state.bucket_of("s:" + subject), [], 0
    while len(out) < n:
        i += 1
        if state.bucket_of(f"s:neighbour-{i}") == want:
            out.append(f"neighbour-{i}")
    return out


def test_the_database_holds_no_subject_id_or_secret_in_the_clear(led: Ledger, home: Path) -> None:
    keys = SubjectKeys(led, home)
    key = keys.for_subject(ZOE)
    keys.many_for_subjects(["amy", "bo"])
    keys.for_deployment("credit@production")
    state = KekFile(_kp(led, home)).load()
    (row,) = [r for r in _rows(led) if r["key_id"] == key.key_id]
    secret, subject = BucketKey.of(row["kek_bucket"], row["kek_gen"],
                                   state.keys[row["kek_bucket"]][row["kek_gen"]]).unwrap(key.key_id, row["secret"])
    assert subject == ZOE and SubjectKey.of(key.key_id, secret) == key  # the format as documented
    dump = repr(_rows(led)).encode()
    assert ZOE.encode() not in dump and secret not in dump and secret.hex().encode() not in dump
    assert all(r["subject"] is None for r in _rows(led))
    assert os.stat(_kp(led, home)).st_mode & 0o777 == 0o600


def test_a_backup_taken_before_an_erasure_cannot_be_opened_with_the_kek_after_it(led: Ledger, home: Path) -> None:
    keys = SubjectKeys(led, home)
    state = KekFile(_kp(led, home)).load()
    zoe = keys.for_subject(ZOE)
    neighbours = {s: keys.for_subject(s) for s in _same_bucket(state, ZOE, 3)}
    backup = {r["key_id"]: r for r in _rows(led)}  # what WAL, archives and backups keep
    old = backup[zoe.key_id]
    assert _unwrap_all(KekFile(_kp(led, home)).load(), old) is not None  # before: the backup opens
    keys.erase(ZOE, request_ref="DSR-1", legal_ground="GDPR Art. 17", reason="r", actor="dpo@example.com")
    after = KekFile(_kp(led, home)).load()
    assert _unwrap_all(after, old) is None  # after: nothing in the file opens it
    assert list(after.keys[old["kek_bucket"]]) == [old["kek_gen"] + 1]  # the old generation is gone
    for gen, k in after.keys[old["kek_bucket"]].items():  # nor can a candidate id be confirmed by its tag
        assert BucketKey.of(old["kek_bucket"], gen, k).tag(ZOE) != old["tag"]
    assert keys.rewrapped == len(neighbours)
    for s, key in neighbours.items():  # the bucket's live keys survive, re-wrapped
        assert keys.for_subject(s) == key and SubjectKeys(led, home).for_subject(s) == key
        assert _unwrap_all(after, backup[key.key_id]) is None  # their old rows are dead copies too
    assert led.verify().ok


def test_another_process_keeps_reading_and_creating_across_a_rotation(led: Ledger, home: Path) -> None:
    reader, eraser = SubjectKeys(led, home), SubjectKeys(led, home)
    state = KekFile(_kp(led, home)).load()
    a, b = _same_bucket(state, ZOE, 2)
    key_a = reader.for_subject(a)  # the reader caches generation 1
    eraser.for_subject(ZOE)
    eraser.erase(ZOE, request_ref="DSR-2", legal_ground="x", reason="r", actor="dpo@example.com")
    assert reader.for_subject(a) == key_a  # stale cache: notices the new generation, reads again
    key_b = reader.for_subject(b)  # created under the current generation, readable by everyone
    assert eraser.for_subject(b) == key_b and reader.many_for_subjects([a, b]) == {a: key_a, b: key_b}


def test_concurrent_creation_and_erasure_lose_no_live_key(any_url: str, home: Path) -> None:
    led = make_ledger(any_url)
    try:
        first = SubjectKeys(led, home)
        state = KekFile(_kp(led, home)).load()
        victims = _same_bucket(state, "victim", 6)
        for v in victims:
            first.for_subject(v)
        made: dict[str, SubjectKey] = {}
        errors: list[BaseException] = []

        def create(worker: int) -> None:
            keys = SubjectKeys(led, home)
            try:
                for i in range(40):
                    s = f"w{worker}-{i}"
                    made[s] = keys.for_subject(s)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for v in victims:  # rotate while they create
            first.erase(v, request_ref="DSR", legal_ground="x", reason="r", actor="dpo@example.com")
        for t in threads:
            t.join()
        assert not errors
        fresh = SubjectKeys(led, home)
        assert {s: fresh.for_subject(s) for s in made} == made  # one key each, all still readable
        assert all(fresh.status(first.for_subject(v).key_id) == "live" for v in victims[:1])
    finally:
        led.close()


def test_a_missing_kek_file_fails_closed_and_writes_nothing(led: Ledger, home: Path) -> None:
    SubjectKeys(led, home).for_subject("amy")
    before = _rows(led)
    _kp(led, home).rename(home / "elsewhere")
    with pytest.raises(InputError, match=r"subjects-[0-9a-f]{16}.kek is missing.*restore the file"):
        SubjectKeys(led, home).for_subject("bo")
    with pytest.raises(InputError, match="is missing"):
        SubjectKeys(led, home).erase("amy", request_ref="r", legal_ground="x", reason="r", actor="dpo")
    assert _rows(led) == before and led.head_size() == 1


def test_two_ledgers_sharing_a_home_keep_separate_kek_files(led: Ledger, home: Path, tmp_path: Path) -> None:
    """The reviewer's case: URL ledgers run from one directory share a home. An erasure in one must not
    retire a generation the other uses, and one ledger's file is never used for the other."""
    other = make_ledger(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        mine, theirs = SubjectKeys(led, home), SubjectKeys(other, home)
        assert mine.kek_path != theirs.kek_path and mine.kek_path.parent == theirs.kek_path.parent
        state = KekFile(mine.kek_path).load()
        (bob,) = _same_bucket(state, ZOE, 1)  # same bucket number in both ledgers' files
        bob_key = theirs.for_subject(bob)
        mine.for_subject(ZOE)
        mine.erase(ZOE, request_ref="DSR", legal_ground="x", reason="r", actor="dpo@example.com")
        assert SubjectKeys(other, home).for_subject(bob) == bob_key
        mine.kek_path.unlink()
        theirs.kek_path.rename(mine.kek_path)  # the other ledger's file under this ledger's name
        with pytest.raises(InputError, match="key-encryption key of another ledger"):
            SubjectKeys(led, home)
    finally:
        other.close()


@pytest.mark.parametrize("damage", ["mode", "json", "bucket", "empty-bucket", "symlink", "symlinked-dir", "stale"])
def test_a_damaged_exposed_or_stale_kek_file_is_refused_and_left_alone(led: Ledger, home: Path, damage: str) -> None:
    keys = SubjectKeys(led, home)
    keys.for_subject("amy")
    path = _kp(led, home)
    if damage == "mode":
        path.chmod(0o644)
        match = "readable or writable by group or others"
    elif damage in ("json", "bucket", "empty-bucket"):
        doc = json.loads(path.read_bytes())
        if damage == "bucket":
            del doc["keys"]["7"]
        else:
            doc["keys"]["7"] = {}
        path.write_bytes(b"{not json" if damage == "json" else json.dumps(doc).encode())
        match = "invalid JSON" if damage == "json" else f"{BUCKETS} non-empty buckets"
    elif damage == "symlink":
        path.rename(home / "real.kek")
        path.symlink_to(home / "real.kek")
        match = "the subject key-encryption key: .*symbolic link.*plain file"
    elif damage == "symlinked-dir":
        (home / "keys").rename(home / "real-keys")
        (home / "keys").symlink_to(home / "real-keys")
        match = "keys is a symbolic link"
    else:  # an out-of-date copy from before an erasure rotated a bucket
        old = path.read_bytes()
        keys.erase("amy", request_ref="DSR", legal_ground="x", reason="r", actor="dpo@example.com")
        path.write_bytes(old)
        match = "lacks generation 2 of bucket .* out-of-date copy"
    before = path.read_bytes() if not path.parent.is_symlink() else b""
    with pytest.raises(InputError, match=match):
        SubjectKeys(led, home).for_subject("amy")
    if damage == "stale":
        assert path.read_bytes() == before  # not pruned into an empty bucket


def test_a_rotation_that_fails_in_the_database_keeps_every_key_and_is_finished_later(
        sqlite_url: str, home: Path) -> None:
    led = make_ledger(sqlite_url)
    try:
        keys = SubjectKeys(led, home)
        state = KekFile(_kp(led, home)).load()
        (n,) = _same_bucket(state, ZOE, 1)
        zoe, nb = keys.for_subject(ZOE), keys.for_subject(n)
        with led.store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE UPDATE ON subject_kek "
                                 "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        with pytest.raises(StorageError, match=r"erase --finish"):
            keys.erase(ZOE, request_ref="DSR", legal_ground="x", reason="r", actor="dpo@example.com")
        assert SubjectKeys(led, home).for_subject(n) == nb and keys.status(zoe.key_id) == "live"
        with led.store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse")
        assert SubjectKeys(led, home).finish_erasures() == [zoe.key_id]
        assert keys.status(zoe.key_id) == "erased" and keys.for_subject(n) == nb
        bucket = state.bucket_of("s:" + ZOE)
        # generation 2 was written by the failed attempt (and ``keys`` still holds it): never reused
        assert list(KekFile(_kp(led, home)).load().keys[bucket]) == [3]
    finally:
        led.close()


def test_version_2_rows_are_wrapped_when_the_kek_is_first_opened(
        sqlite_url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ledger.api as api
    import ledger.schema as schema

    secret = bytes(range(32))
    with monkeypatch.context() as m:  # a ledger of release 2, with one plaintext subject key
        m.setattr("ledger._store.MIGRATIONS", schema.MIGRATIONS[:2])
        m.setattr("ledger._store.SCHEMA_VERSION", 2)
        m.setattr(api, "SCHEMA_VERSION", 2)
        old = make_ledger(sqlite_url)
        with old.store.engine.begin() as conn:
            conn.execute(text("INSERT INTO subject_keys (key_id, subject, secret, created_us) "
                              "VALUES ('sk-legacy', 'gina@example.com', :s, 1)"), {"s": secret})
        old.close()
    with Ledger.open(sqlite_url) as led:
        keys = SubjectKeys(led, home)
        assert keys.for_subject("gina@example.com") == SubjectKey.of("sk-legacy", secret)
        (row,) = _rows(led)
        assert row["subject"] is None and bytes(row["secret"]) != secret and row["kek_gen"] == 1
        path = Path(sqlite_url.removeprefix("sqlite:///"))
        blobs = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
        assert secret not in blobs and b"gina@example.com" not in blobs


def test_a_wrapped_secret_is_bound_to_its_key_id() -> None:
    bk = BucketKey.of(3, 1, b"\x05" * 32)
    wrapped = bk.wrap("sk-a", b"\x01" * 32, "amy")
    assert bk.unwrap("sk-a", wrapped) == (b"\x01" * 32, "amy")
    with pytest.raises(StorageError, match="does not decrypt"):  # a row's secret moved under another key id
        bk.unwrap("sk-b", wrapped)
    with pytest.raises(InvalidTag):
        bk.aead.decrypt(wrapped[:12], wrapped[12:], b"sk-b")


@pytest.mark.postgres
def test_on_postgresql_the_erased_secret_and_subject_id_are_not_in_the_wal(pg_url: str, home: Path) -> None:
    """The reviewer's reproduction: WAL segments keep old row images that VACUUM cannot reach."""
    import psycopg
    from sqlalchemy.engine import make_url

    led = make_ledger(pg_url)
    try:
        keys = SubjectKeys(led, home)
        zoe = keys.for_subject(ZOE)
        state = KekFile(_kp(led, home)).load()
        (row,) = [r for r in _rows(led) if r["key_id"] == zoe.key_id]
        secret, _ = BucketKey.of(row["kek_bucket"], 1, state.keys[row["kek_bucket"]][1]).unwrap(
            zoe.key_id, row["secret"])
        keys.erase(ZOE, request_ref="DSR", legal_ground="x", reason="r", actor="dpo@example.com")
        u = make_url(pg_url)
        with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database) as conn:
            conn.execute("CHECKPOINT")
            data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
        wal = Path(data_dir) / "pg_wal"
        if not os.access(wal, os.R_OK | os.X_OK):
            pytest.skip(f"{wal} is not readable by this user: run as root or postgres to scan the WAL")
        for seg in wal.iterdir():
            if seg.is_file():
                blob = seg.read_bytes()
                assert secret not in blob and ZOE.encode() not in blob, seg
        assert _unwrap_all(KekFile(_kp(led, home)).load(), row) is None
    finally:
        led.close()


def test_a_rotation_stopped_before_the_old_generation_left_the_file_is_finished_at_the_next_open(
        led: Ledger, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between the database commit and the prune: the erased key's old generation must not stay
    in the file (with it, a pre-erasure backup opens). Any later open of the key table prunes it."""
    from ledger._keytable import KeyTable

    keys = SubjectKeys(led, home)
    zoe = keys.for_subject(ZOE)
    (old,) = [r for r in _rows(led) if r["key_id"] == zoe.key_id]
    real, calls = KeyTable._prune, []

    def killed(self: KeyTable, state: KekState) -> None:
        calls.append(1)
        if len(calls) == 1:  # erase's own finish_erasures, before the rotation
            return real(self, state)
        raise KeyboardInterrupt  # the process dies here, after the rotation committed

    monkeypatch.setattr(KeyTable, "_prune", killed)
    with pytest.raises(KeyboardInterrupt):
        keys.erase(ZOE, request_ref="DSR", legal_ground="x", reason="r", actor="dpo@example.com")
    monkeypatch.setattr(KeyTable, "_prune", real)
    assert keys.status(zoe.key_id) == "erased" and calls
    assert _unwrap_all(KekFile(_kp(led, home)).load(), old) is not None  # the window the reviewer found
    SubjectKeys(led, home)  # any next open (a server start, a CLI command)
    assert _unwrap_all(KekFile(_kp(led, home)).load(), old) is None
    (after,) = [r for r in _rows(led) if r["key_id"] == zoe.key_id]
    assert after["kek_bucket"] is None and after["kek_gen"] is None and after["tag"] is None  # no bucket hint


def test_an_erasure_whose_kek_file_cannot_be_written_says_how_to_finish(
        led: Ledger, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    keys = SubjectKeys(led, home)
    zoe = keys.for_subject(ZOE)

    def full(self: KekFile, state: KekState) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(KekFile, "replace", full)
    with pytest.raises(StorageError, match=r"No space left on device.*recorded at seq \d+.*erase --finish"):
        keys.erase(ZOE, request_ref="DSR", legal_ground="x", reason="r", actor="dpo@example.com")
    assert keys.status(zoe.key_id) == "live"
    monkeypatch.undo()
    assert SubjectKeys(led, home).finish_erasures() == [zoe.key_id]
    assert keys.status(zoe.key_id) == "erased"


def test_concurrent_bulk_creation_of_the_same_subjects_gives_one_key_each(any_url: str, home: Path) -> None:
    """``many_for_subjects`` from several threads over overlapping subjects: a creation that loses the race
    (the unique tag, raised by the driver's executemany) is retried and reads the winner's key."""
    led = make_ledger(any_url)
    try:
        subjects = [f"bulk-{i}" for i in range(300)]
        got: list[dict[str, SubjectKey]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(3)

        def create(worker: int) -> None:
            keys = SubjectKeys(led, home)
            try:
                start.wait()
                got.append(keys.many_for_subjects(subjects[worker * 50 :] + subjects[: worker * 50]))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(got) == 3 and got[0] == got[1] == got[2] and len(got[0]) == 300
        assert SubjectKeys(led, home).many_for_subjects(subjects) == got[0]
    finally:
        led.close()


def test_key_writes_on_sqlite_use_a_large_page_cache_and_give_the_connection_its_own_back(
        sqlite_url: str, home: Path) -> None:
    led = make_ledger(sqlite_url)
    try:
        table = SubjectKeys(led, home)._table
        with table.writing() as conn:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            assert dbapi.execute("PRAGMA cache_size").fetchone()[0] == -65536
        assert dbapi.execute("PRAGMA cache_size").fetchone()[0] == -2000
        with pytest.raises(RuntimeError), table.writing() as conn:  # and when the transaction fails
            dbapi = conn.connection.dbapi_connection
            raise RuntimeError("refused")
        assert dbapi is not None and dbapi.execute("PRAGMA cache_size").fetchone()[0] == -2000
    finally:
        led.close()
