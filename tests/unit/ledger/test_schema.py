"""Schema version 4: ``entries`` without UNIQUE(prev), ``seq`` the SQLite rowid, 16 KiB SQLite pages.

A version 3 ledger is built as release 3 did: its ``entries`` table (``V3_ENTRIES``), on SQLite a
file of 4 KiB pages, then real entries appended.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, Engine, Index, LargeBinary, MetaData, Table, Text, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as DBIntegrityError

import ledger.api as api
import ledger.schema as schema
from ledger.api import Ledger
from ledger.errors import StorageError
from tests.conftest import make_ledger
from tests.helpers import dataset_event, policy_event

#: ``entries`` as schema versions 1 to 3 declared it.
V3_ENTRIES = Table(
    "entries",
    MetaData(),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("prev", LargeBinary(32), nullable=False, unique=True),
    Column("ts_us", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("subject", Text, nullable=True),
    Column("entry", LargeBinary, nullable=False),
    Index("ix_entries_kind_seq", "kind", "seq"),
    Index("ix_entries_subject_seq", "subject", "seq"),
)
#: What release 3 stored in ``sqlite_master`` for it (read from a ledger that release created).
V3_SQLITE_SQL = ("CREATE TABLE entries (\n\tseq BIGINT NOT NULL, \n\tleaf_hash BLOB NOT NULL, \n\tprev BLOB NOT NULL, "
                 "\n\tts_us BIGINT NOT NULL, \n\tkind TEXT NOT NULL, \n\tsubject TEXT, \n\tentry BLOB NOT NULL, "
                 "\n\tPRIMARY KEY (seq), \n\tUNIQUE (prev)\n)")
ROWS_SQL = "SELECT seq, leaf_hash, prev, ts_us, kind, subject, entry FROM entries ORDER BY seq"


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def build_v3(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version 3 ledger of 61 entries (genesis, 40 policies, 20 datasets)."""
    if url.startswith("sqlite"):  # release 3 left SQLite's default page size
        db = sqlite3.connect(_sqlite_path(url))
        db.execute("PRAGMA page_size=4096")
        db.execute("PRAGMA journal_mode=WAL")  # writes the header: the page size is now fixed
        db.close()
    with monkeypatch.context() as m:
        m.setattr(schema, "entries", V3_ENTRIES)
        m.setattr("ledger._store.MIGRATIONS", schema.MIGRATIONS[:3])
        m.setattr("ledger._store.SCHEMA_VERSION", 3)
        m.setattr(api, "SCHEMA_VERSION", 3)
        with make_ledger(url) as led:
            led.append_many([policy_event(i) for i in range(40)])
            led.append_many([dataset_event(i) for i in range(20)])


@pytest.fixture
def v3_url(any_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    build_v3(any_url, monkeypatch)
    return any_url


@pytest.fixture
def v3_sqlite(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    build_v3(sqlite_url, monkeypatch)
    return sqlite_url


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for row in conn.execute(text(sql))]
    finally:
        eng.dispose()


def _unique_indexes(url: str) -> list[str]:
    """Names of the unique indexes and constraints on ``entries``, the primary key's included."""
    if url.startswith("sqlite"):
        return [name for _, name, unique, *_ in _query(url, "PRAGMA index_list(entries)") if unique]
    return [name for (name,) in _query(url, "SELECT indexname FROM pg_indexes WHERE tablename = 'entries' "
                                            "AND schemaname = current_schema() AND indexdef LIKE 'CREATE UNIQUE%'")]


def _shape(url: str) -> list[tuple[Any, ...]]:
    """The schema objects of the database, enough to tell v3 from v4 and a table from its rebuild."""
    if url.startswith("sqlite"):
        return _query(url, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
    return sorted(
        _query(url, "SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")
        + _query(url, "SELECT 'constraint', conname, contype::text FROM pg_constraint c JOIN pg_namespace n "
                      "ON n.oid = c.connamespace WHERE n.nspname = current_schema()")
        + _query(url, "SELECT 'trigger', tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal "
                      "AND tgrelid::regclass::text IN ('entries', 'nodes', 'checkpoints', 'cosignatures')")
        + _query(url, "SELECT 'column', table_name || '.' || column_name, data_type FROM information_schema.columns "
                      "WHERE table_schema = current_schema()"))


def _version(url: str) -> str:
    return str(_query(url, "SELECT value FROM mlledger_meta WHERE key = 'schema_version'")[0][0])


# -- upgrading a version 3 ledger ---------------------------------------------------------------


def test_a_version_3_ledger_is_upgraded_on_open_with_every_entry_byte_identical(v3_url: str) -> None:
    before = _query(v3_url, ROWS_SQL)
    assert _version(v3_url) == "3" and len(before) == 61
    with Ledger.open(v3_url) as led:
        result = led.verify()
        assert result.ok and result.size == 61
    assert _version(v3_url) == "4"
    assert _query(v3_url, ROWS_SQL) == before


def test_an_upgraded_ledger_has_no_unique_index_on_prev(v3_url: str) -> None:
    sqlite = v3_url.startswith("sqlite")
    assert len(_unique_indexes(v3_url)) == 2  # release 3: primary key and UNIQUE(prev)
    Ledger.open(v3_url).close()
    assert _unique_indexes(v3_url) == ([] if sqlite else ["entries_pkey"])  # on SQLite the key is the rowid


def test_an_upgraded_ledger_appends_and_verifies(v3_url: str) -> None:
    with Ledger.open(v3_url) as led:
        assert [r.seq for r in led.append_many([policy_event(i) for i in range(100, 110)])] == list(range(61, 71))
        assert led.append(dataset_event(99)).seq == 71
        result = led.verify()
        assert result.ok and result.size == 72


@pytest.mark.parametrize("sql", ["UPDATE entries SET kind = 'x' WHERE seq = 3", "DELETE FROM entries WHERE seq = 60"])
def test_an_upgraded_ledger_still_refuses_update_and_delete_of_entries(v3_url: str, sql: str) -> None:
    Ledger.open(v3_url).close()
    eng = create_engine(v3_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"), eng.begin() as conn:
            conn.execute(text(sql))
    finally:
        eng.dispose()
    assert len(_query(v3_url, ROWS_SQL)) == 61


def test_on_sqlite_an_upgraded_ledger_has_seq_as_its_rowid_and_keeps_its_page_size(v3_sqlite: str) -> None:
    plan_sql = "EXPLAIN QUERY PLAN SELECT entry FROM entries WHERE seq = 5"
    assert _query(v3_sqlite, "SELECT sql FROM sqlite_master WHERE name = 'entries'") == [(V3_SQLITE_SQL,)]
    assert "sqlite_autoindex_entries_1" in _query(v3_sqlite, plan_sql)[0][-1]
    Ledger.open(v3_sqlite).close()
    assert "USING INTEGER PRIMARY KEY (rowid=?)" in _query(v3_sqlite, plan_sql)[0][-1]
    columns = {name: (type_, pk) for _, name, type_, _, _, pk in _query(v3_sqlite, "PRAGMA table_info(entries)")}
    assert columns["seq"] == ("INTEGER", 1)
    assert _query(v3_sqlite, "SELECT rowid, seq FROM entries WHERE seq = 7") == [(7, 7)]
    assert _query(v3_sqlite, "PRAGMA page_size") == [(4096,)]
    assert _query(v3_sqlite, "PRAGMA integrity_check") == [("ok",)]


def test_on_sqlite_an_upgraded_ledger_has_the_schema_of_a_new_one(v3_sqlite: str, tmp_path: Path) -> None:
    """Same table, indexes and triggers; the table's SQL differs only by the quotes the rename leaves."""
    Ledger.open(v3_sqlite).close()
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    make_ledger(fresh).close()
    upgraded = [(t, n, tbl, sql.replace('CREATE TABLE "entries"', "CREATE TABLE entries") if sql else sql)
                for t, n, tbl, sql in _shape(v3_sqlite)]
    assert upgraded == _shape(fresh)


@pytest.mark.postgres
def test_on_postgresql_the_unique_constraint_is_found_by_its_catalog_name(pg_url: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    build_v3(pg_url, monkeypatch)
    eng = create_engine(pg_url)
    try:
        with eng.begin() as conn:
            conn.execute(text("ALTER TABLE entries RENAME CONSTRAINT entries_prev_key TO prev_is_unique"))
    finally:
        eng.dispose()
    assert "prev_is_unique" in _unique_indexes(pg_url)
    with Ledger.open(pg_url) as led:
        assert led.verify().ok
    assert _unique_indexes(pg_url) == ["entries_pkey"]


def test_a_failed_upgrade_leaves_the_version_3_ledger_as_it_was(v3_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The upgrade fails after the v4 step has run (on SQLite: after the rebuild); all of it rolls back."""
    shape, rows = _shape(v3_url), _query(v3_url, ROWS_SQL)

    def fail(conn: Any) -> None:
        conn.execute(text("SELECT * FROM no_such_table"))

    steps = (*schema.MIGRATIONS, fail)
    with monkeypatch.context() as m:
        m.setattr("ledger._store.MIGRATIONS", steps)
        m.setattr("ledger._store.SCHEMA_VERSION", len(steps))
        m.setattr(api, "SCHEMA_VERSION", len(steps))
        with pytest.raises(StorageError, match=r"(?s)cannot migrate .* from schema version 3 to 5: .*no_such_table.*"
                                               r"rolled back, and the ledger is as it was"):
            Ledger.open(v3_url)
    assert _version(v3_url) == "3"
    assert _shape(v3_url) == shape
    assert _query(v3_url, ROWS_SQL) == rows
    with Ledger.open(v3_url) as led:  # the real upgrade still succeeds afterwards
        assert led.verify().ok
    assert _version(v3_url) == "4" and _query(v3_url, ROWS_SQL) == rows


def test_the_upgrade_step_run_again_changes_nothing(v3_url: str) -> None:
    """A second process that waited for the write lock while the first upgraded finds nothing to do."""
    Ledger.open(v3_url).close()
    shape = _shape(v3_url)
    eng = create_engine(v3_url)
    try:
        with eng.begin() as conn:
            schema.MIGRATIONS[3](conn)
    finally:
        eng.dispose()
    assert _shape(v3_url) == shape


def test_a_new_ledger_is_created_at_version_4_without_a_rebuild(sqlite_url: str) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        make_ledger(sqlite_url).close()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert any("PRAGMA index_list(entries)" in s for s in statements)  # the v4 step did look
    assert not [s for s in statements if "entries_v4" in s or "DROP TABLE" in s]
    assert _version(sqlite_url) == "4" and _unique_indexes(sqlite_url) == []


# -- SQLite page size -------------------------------------------------------------------------


def test_a_new_sqlite_ledger_uses_16_kib_pages(sqlite_url: str) -> None:
    make_ledger(sqlite_url).close()
    assert _query(sqlite_url, "PRAGMA page_size") == [(16384,)]
    assert _query(sqlite_url, "PRAGMA journal_mode") == [("wal",)]


# -- no fork, no gap, at the database ---------------------------------------------------------


def test_a_second_row_at_an_existing_seq_is_refused_by_the_database(any_url: str) -> None:
    """Two writers read the same tail; the first commits entry n, the second's entry n is refused."""
    with make_ledger(any_url) as led:
        led.append_many([policy_event(i) for i in range(5)])
        ((n_minus_1, tail_leaf),) = _query(any_url, "SELECT seq, leaf_hash FROM entries ORDER BY seq DESC LIMIT 1")
        led.append(policy_event(10))  # writer A commits entry n
        eng = create_engine(any_url)
        try:
            with pytest.raises(DBIntegrityError), eng.begin() as conn:  # writer B, from the same tail
                conn.execute(text("INSERT INTO entries (seq, leaf_hash, prev, ts_us, kind, subject, entry) "
                                  "VALUES (:seq, :leaf, :prev, 0, 'policy.published', NULL, :entry)"),
                             {"seq": n_minus_1 + 1, "leaf": bytes(32), "prev": tail_leaf, "entry": b"{}"})
        finally:
            eng.dispose()
        result = led.verify()
        assert result.ok and result.size == n_minus_1 + 2


def test_two_ledger_handles_appending_at_once_leave_one_chain(any_url: str) -> None:
    """Two engines (two writer connections) append concurrently: seq has no gap, no prev is used twice."""
    make_ledger(any_url).close()
    handles = [Ledger.open(any_url), Ledger.open(any_url)]
    errors: list[BaseException] = []

    def work(led: Ledger, base: int) -> None:
        try:
            for i in range(60):
                led.append(policy_event(base + i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(h, 1000 * k)) for k, h in enumerate(handles)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for h in handles:
            h.close()
    assert errors == []
    rows = _query(any_url, "SELECT seq, leaf_hash, prev FROM entries ORDER BY seq")
    assert [seq for seq, _, _ in rows] == list(range(121))
    assert [prev for _, _, prev in rows[1:]] == [leaf for _, leaf, _ in rows[:-1]]
    with Ledger.open(any_url) as led:
        assert led.verify().ok


def test_an_upgrade_another_process_finished_while_this_one_waited_is_not_run_again(
        v3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The version read before the write lock can be stale: it is read again under the lock, so a
    second opener never reruns a migration (version 2 -> 3 is not idempotent: it would fail)."""
    Ledger.open(v3_url).close()  # the "other process" upgrades it
    ran: list[int] = []
    steps = [lambda conn, i=i: ran.append(i) for i in range(len(schema.MIGRATIONS))]
    monkeypatch.setattr("ledger._store.MIGRATIONS", steps)
    monkeypatch.setattr("ledger._store.Store.check", lambda self: 2)  # as read before the upgrade
    with Ledger.open(v3_url) as led:
        assert led.verify().ok
    assert ran == []
    assert _version(v3_url) == str(schema.SCHEMA_VERSION)
