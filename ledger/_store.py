"""Storage: engines, opening and creating ledgers, the writer connection, and reads.

SQLAlchemy 2.x Core only. SQLite runs in WAL mode with ``synchronous=FULL`` (a
committed entry survives power loss) and sequences under ``BEGIN IMMEDIATE``;
PostgreSQL sequences under ``SELECT ... FOR UPDATE`` of the single ``head_lock``
row. Either way exactly one transaction at a time extends the chain, so any
number of processes can append with no fork and no gap; the ``seq`` primary key backs
this up (a second row at a seq is refused), and ``verify`` checks every ``prev`` link.
Sequencing itself (seq, prev, ts, checks, rows and Merkle nodes of a batch) is
``ledger._sequencer``. New SQLite files use 16 KiB pages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from ledger import merkle
from ledger.errors import IntegrityError, LedgerNotFound, StorageError
from ledger.keyhistory import KeyHistory
from ledger.schema import (
    FORMAT_MARKER,
    MIGRATIONS,
    NODE_MIN_LEVEL,
    SCHEMA_VERSION,
    meta,
)

__all__ = ["DEFAULT_DB_NAME", "Head", "Receipt", "Store", "Tx", "Writer", "resolve_url"]

DEFAULT_DB_NAME: Final = "ledger.db"

Tail = tuple[int, bytes, int] | None
"""(seq, leaf hash, ts_us) of the last entry, or None for an empty log."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """Where an appended entry landed: its seq, leaf hash and timestamp."""

    seq: int
    leaf_hash: bytes
    ts: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "leaf_hash": self.leaf_hash.hex(), "ts": self.ts}


@dataclass(frozen=True, slots=True)
class Head:
    """The current end of the log. ``size`` is the number of entries."""

    size: int
    leaf_hash: bytes
    ts_us: int
    root: bytes


def resolve_url(location: str | os.PathLike[str]) -> tuple[str, Path | None]:
    """A SQLAlchemy URL for ``location`` and the ledger's home directory, if local.

    ``location`` is a URL (``sqlite:///...``, ``postgresql+psycopg://...``) or a
    directory such as ``.mlledger`` that holds ``ledger.db``.
    """
    loc = os.fspath(location)
    if "://" in loc:
        try:
            url = make_url(loc)
        except ArgumentError as exc:
            raise LedgerNotFound(f"{loc!r} is not a database URL: {exc}") from None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return loc, Path(url.database).resolve().parent
        return loc, None
    home = Path(loc)
    return f"sqlite:///{(home / DEFAULT_DB_NAME).resolve()}", home


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


class Store:
    """One ledger database. Thread-safe; share one per process."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self.dialect = engine.dialect.name

    # -- opening ---------------------------------------------------------------

    @classmethod
    def connect(cls, url: str, *, create: bool) -> Store:
        """An engine for ``url``; without ``create`` a missing SQLite file is refused."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise LedgerNotFound(f"{url!r} is not a database URL: {exc}") from None
        backend = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            db = parsed.database
            if db in (None, "", ":memory:"):
                raise LedgerNotFound("an in-memory SQLite database cannot hold a ledger; give a file")
            path = Path(db)
            if not create and not path.is_file():
                raise LedgerNotFound(
                    f"no ledger at {path}: the file does not exist; run 'mlledger init' first "
                    "or pass --ledger"
                )
            if create:
                if not path.parent.exists():  # the ledger home holds subject keys: owner only
                    path.parent.mkdir(parents=True, mode=0o700)
                path.touch(mode=0o600, exist_ok=True)  # before SQLite creates it (and its -wal/-shm) 0644
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
        elif backend == "postgresql":
            if parsed.get_driver_name() != "psycopg":
                raise LedgerNotFound(
                    f"use a 'postgresql+psycopg://' URL (psycopg 3), not {parsed.drivername!r}"
                )
        else:
            raise LedgerNotFound(f"unsupported database {backend!r}: use SQLite or PostgreSQL")
        try:
            engine = create_engine(url, hide_parameters=True, **kwargs)  # parameters may hold subject ids
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise StorageError(
                f"the driver for {backend} is not installed ({exc}); "
                "install it with: pip install 'mlledger[postgres]'"
            ) from None
        if backend == "sqlite":
            _configure_sqlite(engine)
        return cls(url, engine)

    def check(self) -> int:
        """Confirm this database holds an mlledger ledger; return its schema version."""
        try:
            with self.engine.connect() as conn:
                names = set(inspect(conn).get_table_names())
                if meta.name not in names:
                    raise LedgerNotFound(
                        f"{_redact(self.url)} is not an mlledger ledger (no {meta.name} table); "
                        "run 'mlledger init' to create one"
                    )
                rows = {k: v for k, v in conn.execute(select(meta.c.key, meta.c.value))}
        except DBAPIError as exc:
            raise StorageError(f"cannot read {_redact(self.url)}: {exc.orig}") from None
        if rows.get("format") != FORMAT_MARKER:
            raise LedgerNotFound(f"{_redact(self.url)} is not an mlledger ledger (format marker missing)")
        version = int(rows.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{_redact(self.url)} has schema version {version}, newer than this mlledger "
                f"understands ({SCHEMA_VERSION}); upgrade mlledger"
            )
        return version

    def version_in(self, conn: Connection) -> int:
        """The schema version as ``conn``'s transaction sees it (read under the write lock)."""
        value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        return int(value or "0")

    def migrate(self, conn: Connection, current: int) -> None:
        """Apply migrations ``current`` .. SCHEMA_VERSION inside ``conn``'s transaction.

        A database error is a ``StorageError``; the caller's transaction then rolls back whole.
        """
        try:
            for step in MIGRATIONS[current:]:
                step(conn)
            conn.execute(meta.delete().where(meta.c.key == "schema_version"))
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        except DBAPIError as exc:
            raise StorageError(
                f"cannot migrate {_redact(self.url)} from schema version {current} to {SCHEMA_VERSION}: "
                f"{exc.orig}; the migration is one transaction, rolled back, and the ledger is as it was"
            ) from None

    def is_initialised(self) -> bool:
        with self.engine.connect() as conn:
            return meta.name in inspect(conn).get_table_names()

    def dispose(self) -> None:
        self.engine.dispose()

    # -- transactions ----------------------------------------------------------

    def tx(self, conn: Connection) -> Tx:
        """Driver-level statements inside ``conn``'s current transaction."""
        return Tx(conn.exec_driver_sql, self.dialect)

    def write_conn(self) -> Connection:
        """An SQLAlchemy connection whose ``begin()`` takes the write lock on SQLite.

        Used for schema work (init, migrations); appends use ``writer()``.
        """
        conn = self.engine.connect()
        if self.dialect == "sqlite":
            conn = conn.execution_options(sqlite_immediate=True)
        return conn

    def lock(self, tx: Tx) -> None:
        """Inside a write transaction on PostgreSQL: take the head row lock."""
        if self.dialect == "postgresql":
            tx.rows("SELECT id FROM head_lock WHERE id = 1 FOR UPDATE")

    def raw_tx(self, conn: Connection) -> Tx:
        """Like ``tx`` but on the DBAPI cursor: plain tuples, no per-row wrapping (bulk reads)."""
        dbapi = conn.connection.dbapi_connection
        if dbapi is None:
            raise StorageError("the database connection is closed")
        return Tx(_Cursor(dbapi.cursor()), self.dialect)

    def writer(self) -> Writer:
        """A dedicated connection for sequencing transactions."""
        return Writer(self)

    # -- reads (driver-level SQL, usable inside a sequencing transaction) ------

    def tail(self, tx: Tx) -> Tail:
        """(seq, leaf_hash, ts_us) of the last entry, or None when empty."""
        rows = tx.rows(_TAIL_SQL)
        if not rows:
            return None
        seq, leaf, ts_us = rows[0]
        return seq, bytes(leaf), ts_us

    def subtree_hashes(self, tx: Tx, wanted: Sequence[tuple[int, int]]) -> list[bytes]:
        """Hashes of complete subtrees ``(level, index)``.

        Stored nodes come in one query; a subtree below NODE_MIN_LEVEL is hashed
        from its (at most 2**NODE_MIN_LEVEL) leaf hashes, one range read each.
        """
        stored = sorted({(lv, i) for lv, i in wanted if lv >= NODE_MIN_LEVEL})
        found: dict[tuple[int, int], bytes] = {}
        for at in range(0, len(stored), 200):
            part = stored[at : at + 200]
            cond = " OR ".join(["(level = {p} AND idx = {p})"] * len(part))
            params = [x for pair in part for x in pair]
            sql = tx.sql("SELECT level, idx, hash FROM nodes WHERE " + cond)  # noqa: S608
            for lv, i, h in tx.rows(sql, params):
                found[(lv, i)] = bytes(h)
        low = sorted({(lv, i) for lv, i in wanted if lv < NODE_MIN_LEVEL})
        leaves: dict[int, bytes] = {}
        if low:
            cond = " OR ".join(["(seq >= {p} AND seq < {p})"] * len(low))
            params = [x for lv, i in low for x in (i << lv, (i + 1) << lv)]
            sql = tx.sql("SELECT seq, leaf_hash FROM entries WHERE " + cond)  # noqa: S608
            leaves = {seq: bytes(h) for seq, h in tx.rows(sql, params)}
        out: list[bytes] = []
        for level, idx in wanted:
            if level >= NODE_MIN_LEVEL:
                h = found.get((level, idx))
                if h is None:
                    raise IntegrityError(f"Merkle node (level {level}, index {idx}) is missing")
                out.append(h)
                continue
            lo, hi = idx << level, (idx + 1) << level
            try:
                out.append(merkle.root_of([leaves[s] for s in range(lo, hi)]))
            except KeyError:
                raise IntegrityError(f"entries {lo}..{hi - 1} are not all present") from None
        return out

    def range_hashes(self, tx: Tx, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """MTH of each leaf range [a, b) (as occur in proofs), with one batched node read."""
        parts = [merkle.complete_subtrees(a, b) for a, b in ranges]
        hashes = self.subtree_hashes(tx, [p for part in parts for p in part])
        out, at = [], 0
        for part in parts:
            out.append(merkle.fold(hashes[at : at + len(part)]))
            at += len(part)
        return out

    def entry_bytes(self, tx: Tx, seq: int) -> bytes:
        rows = tx.rows(tx.sql("SELECT entry FROM entries WHERE seq = {p}"), (seq,))
        if not rows:
            raise IntegrityError(f"entry {seq} is missing")
        return bytes(rows[0][0])

    def key_history(self, tx: Tx) -> KeyHistory:
        """The checkpoint-key history from entry 0 and every key.* entry, in seq order."""
        rows = tx.rows(
            "SELECT seq, kind, entry FROM entries WHERE seq = 0 OR kind IN "
            "('key.added', 'key.rotated', 'key.revoked') ORDER BY seq"
        )
        return KeyHistory.from_entries(
            (seq, kind, orjson.loads(bytes(raw))["payload"]) for seq, kind, raw in rows
        )

    def seq_at_ts(self, tx: Tx, ts_us: int, size: int) -> int:
        """The first seq whose ts is >= ``ts_us`` (``size`` if none), by binary search.

        Correct because ts never decreases with seq (``verify`` checks it).
        """
        lo, hi = 0, size
        sql = tx.sql("SELECT ts_us FROM entries WHERE seq = {p}")
        while lo < hi:
            mid = (lo + hi) // 2
            rows = tx.rows(sql, (mid,))
            if not rows:
                raise IntegrityError(f"entry {mid} is missing")
            if rows[0][0] >= ts_us:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def frontier(self, tx: Tx, size: int) -> merkle.Frontier:
        return merkle.Frontier(size, self.subtree_hashes(tx, merkle.Frontier.levels(size)))

    def iter_rows(
        self, tx: Tx, *, start: int = 0, stop: int | None = None, chunk: int = 5000
    ) -> Iterator[Sequence[Any]]:
        """(seq, leaf_hash, ts_us, kind, subject, entry) rows in seq order, chunked."""
        bound = "AND seq < {p} " if stop is not None else ""
        sql = tx.sql(
            "SELECT seq, leaf_hash, ts_us, kind, subject, entry FROM entries "  # noqa: S608
            "WHERE seq >= {p} " + bound + f"ORDER BY seq LIMIT {int(chunk)}"
        )
        nxt = start
        while True:
            rows = tx.rows(sql, (nxt, stop) if stop is not None else (nxt,))
            if not rows:
                return
            yield from rows
            nxt = rows[-1][0] + 1


class Tx:
    """Driver-level SQL on one connection; ``{p}`` in SQL is the driver's placeholder."""

    __slots__ = ("_before", "_exec", "_ph", "dialect", "memo")

    def __init__(self, execute: Any, dialect: str, *, before: Callable[[], None] | None = None) -> None:
        self._exec = execute
        self.dialect = dialect
        #: Scratch space for checks, for the life of this transaction (one sequencing batch).
        self.memo: dict[str, Any] = {}
        self._ph = "?" if dialect == "sqlite" else "%s"
        #: Run before each statement (the sequencer's buffered rows are written first).
        self._before = before

    def sql(self, template: str) -> str:
        return template.replace("{p}", self._ph)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._before is not None:
            self._before()
        return list(self._exec(sql, tuple(params)).fetchall())

    def many(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        if self._before is not None:
            self._before()
        self._exec(sql, params)


class _Cursor:
    """Adapts a DBAPI cursor to the ``execute(sql, params) -> result`` shape."""

    __slots__ = ("_cur",)

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def __call__(self, sql: str, params: Any) -> Any:
        if isinstance(params, list):
            self._cur.executemany(sql, params)
        else:
            self._cur.execute(sql, params)
        return self._cur


class Writer:
    """The sequencing connection: BEGIN IMMEDIATE (SQLite) or FOR UPDATE (PostgreSQL).

    The hot path runs its few statements on the pooled DBAPI connection directly;
    SQLAlchemy's per-statement overhead was measured at 3x the statements' own cost.
    """

    def __init__(self, store: Store) -> None:
        self._conn = store.engine.connect()
        dbapi = self._conn.connection.dbapi_connection
        if dbapi is None:
            raise StorageError("the database connection is closed")
        self._dbapi: Any = dbapi
        self._dialect = store.dialect
        if store.dialect == "sqlite":
            # The writer may use up to 64 MiB of page cache, filled only as used (the default is 2 MiB,
            # and other pooled connections keep it): the index on ``(subject, seq)`` takes random keys
            # (e.g. dataset hashes), and 2 MiB is 128 pages of 16 KiB. Inserting 1M entry-shaped rows
            # in 50k-row commits: about 80k rows/s with 2 MiB, 130k with 64 MiB.
            self._dbapi.execute("PRAGMA cache_size=-65536")
        self.tx = Tx(_Cursor(self._dbapi.cursor()), store.dialect)

    def begin(self) -> Tx:
        """Start a transaction holding the write lock."""
        return self.begin_with_tail()[0]

    def begin_with_tail(self) -> tuple[Tx, Tail]:
        """Start a transaction holding the write lock, and read the tail under it.

        On PostgreSQL the tail must be read by a statement that starts after the
        lock is granted (READ COMMITTED takes a snapshot per statement), so the two
        cannot be one query.
        """
        if self._dialect == "sqlite":
            self._dbapi.execute("BEGIN IMMEDIATE")
        else:
            self.tx.rows("SELECT id FROM head_lock WHERE id = 1 FOR UPDATE")
        rows = self.tx.rows(_TAIL_SQL)
        return self.tx, (None if not rows else (rows[0][0], bytes(rows[0][1]), rows[0][2]))

    def commit(self) -> None:
        self._dbapi.commit()

    def rollback(self) -> None:
        with contextlib.suppress(Exception):  # the connection is discarded next
            self._dbapi.rollback()

    def close(self) -> None:
        self._conn.invalidate()
        self._conn.close()


_TAIL_SQL: Final = "SELECT seq, leaf_hash, ts_us FROM entries ORDER BY seq DESC LIMIT 1"

def _configure_sqlite(engine: Engine) -> None:
    """16 KiB pages (new files), WAL, FULL sync, and explicit BEGIN [IMMEDIATE] instead of pysqlite's own."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # Takes effect only on a file not yet written, so before WAL (which writes it and then
        # fixes the page size); an existing ledger keeps its own. Entry rows insert ~25% faster.
        cur.execute("PRAGMA page_size=16384")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def root_of_head(store: Store, tx: Tx) -> Head:
    """The head, with the Merkle root recomputed from stored nodes."""
    tail = store.tail(tx)
    if tail is None:
        return Head(0, bytes(32), 0, merkle.EMPTY_ROOT)
    size = tail[0] + 1
    return Head(size, tail[1], tail[2], store.frontier(tx, size).root())

