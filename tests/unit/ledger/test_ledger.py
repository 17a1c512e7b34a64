"""The Ledger API on a real SQLite file: append, read, verify, and refusals."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ledger import events, merkle
from ledger.api import Ledger
from ledger.errors import InputError, IntegrityError, LedgerNotFound, StorageError
from ledger.schema import SCHEMA_VERSION
from ledger.view import LedgerView
from tests.conftest import ORIGIN, TEST_SIGNER, make_ledger
from tests.helpers import dataset_event, policy_event


def test_init_writes_a_genesis_entry_naming_origin_and_key(ledger: Ledger) -> None:
    genesis = ledger.get(0)
    assert genesis.kind == "ledger.created"
    assert genesis.payload["origin"] == ORIGIN
    assert genesis.payload["verifier_key"] == TEST_SIGNER.verifier_key
    assert genesis.data["prev"] == "0" * 64


def test_append_returns_contiguous_receipts_and_links_prev(ledger: Ledger) -> None:
    receipts = [ledger.append(policy_event(i)) for i in range(5)]
    assert [r.seq for r in receipts] == [1, 2, 3, 4, 5]
    for r in receipts:
        entry = ledger.get(r.seq)
        assert entry.leaf_hash == r.leaf_hash == merkle.leaf_hash(entry.raw)
        assert entry.data["prev"] == ledger.get(r.seq - 1).leaf_hash.hex()


def test_timestamps_never_decrease(ledger: Ledger) -> None:
    ledger.append_many([policy_event(i) for i in range(50)])
    stamps = [e.ts for e in ledger.iter()]
    assert stamps == sorted(stamps)


def test_head_root_equals_the_rfc6962_root_of_all_entries(ledger: Ledger) -> None:
    ledger.append_many([dataset_event(i) for i in range(37)])
    leaves = [merkle.leaf_hash(e.raw) for e in ledger.iter()]
    head = ledger.head()
    assert head.size == 38
    assert head.root == merkle.root_of(leaves)
    assert ledger.verify().root == head.root


def test_append_many_is_atomic_when_the_database_fails_midway(sqlite_url: str) -> None:
    led = make_ledger(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER boom BEFORE INSERT ON entries WHEN NEW.seq = 4 "
                   "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    with pytest.raises(IntegrityError, match="injected failure"):
        led.append_many([policy_event(i) for i in range(10)])
    assert led.head().size == 1
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER boom")
    assert [r.seq for r in led.append_many([policy_event(i) for i in range(3)])] == [1, 2, 3]
    assert led.verify().ok
    led.close()


def test_append_many_of_nothing_writes_nothing(ledger: Ledger) -> None:
    assert ledger.append_many([]) == []
    assert ledger.head().size == 1


def test_threads_share_group_commits_without_gaps(ledger: Ledger) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(100):
                ledger.append(policy_event(t * 1000 + i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = [e.seq for e in ledger.iter()]
    assert seqs == list(range(801))
    assert ledger.verify().ok


def test_get_of_a_missing_seq_is_an_input_error(ledger: Ledger) -> None:
    with pytest.raises(InputError, match="seq 9: no such entry"):
        ledger.get(9)


def test_iter_filters_by_kind_subject_and_range(ledger: Ledger) -> None:
    ledger.append_many([policy_event(0), dataset_event(0), policy_event(1), dataset_event(1)])
    assert [e.seq for e in ledger.iter(kind="dataset.registered")] == [2, 4]
    assert [e.seq for e in ledger.iter(kind=["ledger.created", "policy.published"])] == [0, 1, 3]
    assert [e.seq for e in ledger.iter(subject="policy:p1")] == [3]
    assert [e.seq for e in ledger.iter(start=2, limit=2)] == [2, 3]


def test_iter_time_bounds_are_inclusive_exclusive(ledger: Ledger) -> None:
    ledger.append(policy_event(0))
    ledger.append(policy_event(1))
    ledger.append(policy_event(2))
    t1, t2 = ledger.get(2).ts, ledger.get(3).ts
    assert [e.seq for e in ledger.iter(since=t1)] == [2, 3]
    assert [e.seq for e in ledger.iter(since=t1, until=t2)] == [2]
    assert list(ledger.iter(until="2000-01-01T00:00:00Z")) == []


def test_iter_refuses_a_time_without_timezone(ledger: Ledger) -> None:
    with pytest.raises(InputError, match="since: .* no timezone"):
        list(ledger.iter(since="2026-01-01T00:00:00"))


def test_stored_entries_revalidate_against_their_models(ledger: Ledger) -> None:
    ledger.append(dataset_event(5))
    ev = ledger.get(1).event()
    assert ev.payload == dataset_event(5).payload
    assert ledger.verify(deep=True).ok


def test_open_of_a_missing_ledger_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(LedgerNotFound, match="run 'mlledger init'"):
        Ledger.open(str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()


def test_open_of_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(LedgerNotFound, match="is not an mlledger ledger"):
        Ledger.open(f"sqlite:///{path}")


def test_open_of_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 200)
    with pytest.raises(StorageError, match="cannot read"):
        Ledger.open(f"sqlite:///{path}")


def test_open_of_a_ledger_from_a_newer_release_is_refused(sqlite_url: str) -> None:
    make_ledger(sqlite_url).close()
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE mlledger_meta SET value = '99' WHERE key = 'schema_version'"))
    engine.dispose()
    with pytest.raises(StorageError, match="schema version 99, newer than"):
        Ledger.open(sqlite_url)


def test_init_over_an_existing_ledger_is_refused_and_keeps_it(sqlite_url: str) -> None:
    led = make_ledger(sqlite_url)
    led.append(policy_event())
    led.close()
    with pytest.raises(InputError, match="already exists"):
        make_ledger(sqlite_url)
    with Ledger.open(sqlite_url) as again:
        assert again.head().size == 2


def test_init_refuses_a_bad_origin(sqlite_url: str) -> None:
    with pytest.raises(InputError, match="origin"):
        Ledger.init(sqlite_url, origin="has space", verifier_key=TEST_SIGNER.verifier_key)


@pytest.mark.parametrize("url", ["sqlite://", "mysql://x/y", "not a url://"])
def test_unsupported_locations_are_refused(url: str) -> None:
    with pytest.raises(LedgerNotFound):
        Ledger.open(url)


def test_schema_version_is_recorded(ledger: Ledger) -> None:
    with ledger.store.engine.connect() as conn:
        value = conn.execute(text("SELECT value FROM mlledger_meta WHERE key='schema_version'")).scalar()
    assert value == str(SCHEMA_VERSION)


def test_older_schema_is_migrated_on_open(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger made at version N opens under a release with version N+1 and is upgraded."""
    import ledger.api as api
    import ledger.schema as schema

    make_ledger(sqlite_url).close()

    def add_notes_table(conn: object) -> None:
        conn.execute(text("CREATE TABLE upgrade_marker (x INTEGER)"))  # type: ignore[attr-defined]

    steps = (*schema.MIGRATIONS, add_notes_table)
    monkeypatch.setattr("ledger._store.MIGRATIONS", steps)
    monkeypatch.setattr("ledger._store.SCHEMA_VERSION", len(steps))
    monkeypatch.setattr(api, "SCHEMA_VERSION", len(steps))
    with Ledger.open(sqlite_url) as led:
        assert led.verify().ok
        with led.store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM upgrade_marker")).scalar() == 0
            assert conn.execute(text(
                "SELECT value FROM mlledger_meta WHERE key='schema_version'")).scalar() == str(len(steps))


@pytest.mark.parametrize("sql", ["UPDATE entries SET kind = 'x' WHERE seq = 0",
                                 "DELETE FROM entries WHERE seq = 0",
                                 "DELETE FROM nodes", "UPDATE checkpoints SET size = 0"])
def test_database_triggers_refuse_update_and_delete(ledger: Ledger, sql: str) -> None:
    path = ledger.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        # nodes and checkpoints may be empty: insert one row first so the trigger fires
        db.execute("INSERT INTO nodes VALUES (99, 0, zeroblob(32))")
        db.execute("INSERT INTO checkpoints VALUES (1, 1, zeroblob(32), x'00', 0)")
        db.execute(sql)


def test_invalid_utf8_in_a_stored_subject_is_a_failure_not_a_crash(ledger: Ledger) -> None:
    import hashlib

    from tests.tamper import Tamperer

    ledger.append(policy_event(1))
    tam = Tamperer(ledger.url)
    try:
        raw = bytes(tam.rows()[1].entry).replace(b'"subject":"policy:p1"', b'"subject":"policy:\xff1"')
        tam.execute("UPDATE entries SET entry = :e, leaf_hash = :l WHERE seq = 1",
                    e=raw, l=hashlib.sha256(b"\x00" + raw).digest())
    finally:
        tam.close()
    result = ledger.verify()
    assert not result.ok and result.bad_seq == 1 and "UTF-8" in (result.reason or "")


def test_deep_verify_refuses_a_duplicate_name_inside_a_payload(ledger: Ledger) -> None:
    import hashlib

    from tests.tamper import Tamperer

    ledger.append(policy_event(1))
    tam = Tamperer(ledger.url)
    try:
        raw = bytes(tam.rows()[1].entry).replace(b'"payload":{', b'"payload":{"name":"evil",', 1)
        tam.execute("UPDATE entries SET entry = :e, leaf_hash = :l WHERE seq = 1",
                    e=raw, l=hashlib.sha256(b"\x00" + raw).digest())
    finally:
        tam.close()
    assert ledger.verify().ok  # the chain itself is intact: this entry is the tail
    deep = ledger.verify(deep=True)
    assert not deep.ok and deep.bad_seq == 1 and "duplicate member 'name'" in (deep.reason or "")


def test_a_witness_key_must_be_a_cosignature_key() -> None:
    from ledger.kinds import KeyAdded

    with pytest.raises(ValueError, match="a witness key must be a cosignature key"):
        KeyAdded(verifier_key=TEST_SIGNER.verifier_key, purpose="witness")


def test_a_refused_event_does_not_fail_other_callers_in_the_same_group_commit(ledger: Ledger) -> None:
    """Groups queued together are retried alone when one of them is refused."""
    from ledger._store import Receipt
    from ledger.api import _Group
    from ledger.events import Event
    from ledger.keyhistory import sign_rotation
    from ledger.kinds import KeyRotated
    from ledger.note import Signer

    other = Signer.from_seed(ORIGIN, bytes(range(5, 37)))
    forged = Event(KeyRotated(old_key=TEST_SIGNER.verifier_key, new_key=other.verifier_key,
                              old_key_signature=sign_rotation(ORIGIN, other, other.verifier_key)),
                   actor="mallory")
    good, bad = _Group([policy_event(1).prepare()]), _Group([forged.prepare()])
    with ledger._mutex:
        ledger._commit([good, bad])
    assert isinstance(bad.error, InputError)
    assert good.error is None and [type(r) for r in good.receipts] == [Receipt]
    assert ledger.head().size == 2 and ledger.verify().ok


def test_a_check_sees_the_entries_before_it_in_its_batch_and_a_refusal_writes_none(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are buffered while sequencing; a check's first read must still find every earlier entry."""
    seen: list[tuple[int, int, int]] = []

    def check(view: LedgerView, seq: int, actor: str | None, payload: dict[str, object]) -> None:
        seen.append((seq, view.size, len(view.of_kind("policy.published"))))
        if payload["name"] == "applicants-9":
            raise InputError("refused")

    monkeypatch.setitem(events._CHECKS, "dataset.registered", check)
    start = ledger.head().size
    ledger.append_many([policy_event(0), policy_event(1), dataset_event(0), policy_event(2), dataset_event(1)])
    assert seen == [(start + 2, start + 2, 2), (start + 4, start + 4, 3)]
    assert ledger.verify().ok
    size = ledger.head().size
    with pytest.raises(InputError, match="refused"):
        ledger.append_many([policy_event(3), dataset_event(9)])
    assert ledger.head().size == size and ledger.verify().ok
