"""Database schema, append-only triggers and versioned migrations.

Tables:
- ``entries``: one row per entry; ``entry`` holds the canonical bytes (the record);
  the other columns are indexes over them, re-checked by ``verify``. ``seq`` is the primary key
  (on SQLite the rowid, since version 4); ``prev`` is not UNIQUE since version 4: one
  transaction at a time extends the chain under the write lock (``ledger._store``), the
  primary key refuses a second row at a seq, and ``verify`` checks every ``prev`` link.
- ``nodes``: Merkle interior nodes of complete subtrees at level >= NODE_MIN_LEVEL,
  written as entries arrive, so proofs cost O(log n) reads.
- ``checkpoints``: signed checkpoint notes; ``cosignatures``: witness lines for them.
- ``mlledger_meta``: the format marker and schema version.
- ``head_lock``: one row, locked ``FOR UPDATE`` while sequencing on PostgreSQL.
- ``subject_keys`` and ``sealed_inputs`` (version 2): the erasable tables of ``ledger.privacy``,
  the only ones whose rows change or go (DESIGN.md section 5); ``subject_kek`` (version 3): the
  current generation of each bucket of the subject key-encryption key (``ledger._kek``).

``entries``, ``nodes``, ``checkpoints`` and ``cosignatures`` refuse UPDATE and DELETE through
database triggers on both SQLite and PostgreSQL (and TRUNCATE on PostgreSQL).

Migrations: ``MIGRATIONS[i]`` upgrades schema version ``i`` to ``i + 1``. A ledger
created by an older release is upgraded when it is opened for writing; one
created by a newer release is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.schema import CreateTable

__all__ = [
    "APPEND_ONLY_TABLES",
    "FORMAT_MARKER",
    "MIGRATIONS",
    "NODE_MIN_LEVEL",
    "SCHEMA_VERSION",
    "checkpoints",
    "cosignatures",
    "entries",
    "head_lock",
    "meta",
    "metadata",
    "nodes",
    "sealed_inputs",
    "subject_kek",
    "subject_keys",
]

FORMAT_MARKER: Final = "mlledger-ledger"
#: Interior nodes below this level are recomputed from at most 2**NODE_MIN_LEVEL leaf hashes.
NODE_MIN_LEVEL: Final = 4

metadata = MetaData()

entries = Table(
    "entries",
    metadata,
    # INTEGER on SQLite makes ``seq`` the rowid: rows live in one B-tree keyed by seq, with no
    # separate primary-key index (schema v4). It is still 64 bits wide.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    # Not UNIQUE since schema v4: sequencing under the write lock and the ``seq`` primary key keep
    # the chain single, ``verify`` checks every link, and the index cost grew with the ledger.
    Column("prev", LargeBinary(32), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("subject", Text, nullable=True),
    Column("entry", LargeBinary, nullable=False),
    Index("ix_entries_kind_seq", "kind", "seq"),
    Index("ix_entries_subject_seq", "subject", "seq"),
)
# ``ts_us`` needs no index: it never decreases with ``seq``, so a time bound is
# found by binary search over the primary key.

nodes = Table(
    "nodes",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    sqlite_with_rowid=False,
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", LargeBinary, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Index("ix_checkpoints_size", "size"),
)

cosignatures = Table(
    "cosignatures",
    metadata,
    Column("checkpoint_id", BigInteger, primary_key=True, autoincrement=False),
    Column("witness", Text, primary_key=True),
    Column("line", Text, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
)

meta = Table(
    "mlledger_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

head_lock = Table(
    "head_lock",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
)

subject_keys = Table(
    "subject_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("subject", Text, nullable=True, unique=True),  # NULL for deployment keys and once erased
    Column("deployment", Text, nullable=True, unique=True),  # NAME@STAGE for a deployment key
    Column("secret", LargeBinary(32), nullable=True),  # NULL once erased
    Column("created_us", BigInteger, nullable=False),
    Column("erased_us", BigInteger, nullable=True),
    Column("erased_seq", BigInteger, nullable=True),
    # schema v3: the secret column holds the secret wrapped under the bucket's KEK (ledger._kek)
    Column("kek_bucket", Integer, nullable=True),
    Column("kek_gen", Integer, nullable=True),
    Column("tag", LargeBinary(32), nullable=True),  # HMAC of the subject id under the bucket's tag key
)

#: Each KEK bucket's current generation (the keys themselves are only in the KEK file).
subject_kek = Table(
    "subject_kek",
    metadata,
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column("gen", Integer, nullable=False),
)

sealed_inputs = Table(
    "sealed_inputs",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("commitment", LargeBinary(32), primary_key=True),
    Column("nonce", LargeBinary(12), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
)

APPEND_ONLY_TABLES: Final = ("entries", "nodes", "checkpoints", "cosignatures")


def _sqlite_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'mlledger: {table} is append-only; {op} refused'); END"
        for op in ("UPDATE", "DELETE")
    ]


_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION mlledger_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'mlledger: % is append-only; % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""


def _pg_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION mlledger_append_only()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION mlledger_append_only()",
    ]


def _v0_to_v1(conn: Connection) -> None:
    """Create the version 1 schema."""
    metadata.create_all(conn, tables=[entries, nodes, checkpoints, cosignatures, meta, head_lock])
    ddl: list[str] = []
    if conn.dialect.name == "postgresql":
        ddl.append(_PG_FUNCTION)
        for table in APPEND_ONLY_TABLES:
            ddl.extend(_pg_triggers(table))
    else:
        for table in APPEND_ONLY_TABLES:
            ddl.extend(_sqlite_triggers(table))
    for stmt in ddl:
        conn.execute(text(stmt))
    conn.execute(head_lock.insert().values(id=1))
    conn.execute(meta.insert().values(key="format", value=FORMAT_MARKER))


Migration = Callable[[Connection], None]
def _v1_to_v2(conn: Connection) -> None:
    """Add the erasable tables (per-subject keys, sealed inputs). They have no append-only triggers."""
    metadata.create_all(conn, tables=[subject_keys, sealed_inputs])


def _v2_to_v3(conn: Connection) -> None:
    """Wrap subject keys under a KEK held outside the database: its columns and bucket table.

    Rows written by version 2 (plaintext secret and subject id) are wrapped by the first
    ``SubjectKeys`` that opens the KEK file (``ledger.privacy``); the migration cannot, since the
    KEK is not in the database.
    """
    have = {c["name"] for c in inspect(conn).get_columns("subject_keys")}
    for name, sql_type in (("kek_bucket", "INTEGER"), ("kek_gen", "INTEGER"),
                           ("tag", "BYTEA" if conn.dialect.name == "postgresql" else "BLOB")):
        if name not in have:
            conn.execute(text(f"ALTER TABLE subject_keys ADD COLUMN {name} {sql_type}"))
    conn.execute(text("CREATE UNIQUE INDEX IF NOT EXISTS subject_keys_tag ON subject_keys (tag)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS subject_keys_bucket ON subject_keys (kek_bucket)"))
    metadata.create_all(conn, tables=[subject_kek])
    conn.execute(subject_kek.insert(), [{"bucket": b, "gen": 1} for b in range(256)])


def _v3_to_v4(conn: Connection) -> None:
    """Drop ``UNIQUE(prev)`` from ``entries``; on SQLite also make ``seq`` the rowid.

    PostgreSQL drops the constraint under the name its catalog gives. SQLite can neither drop a
    constraint's index nor change a column's type, so it rebuilds the table (the procedure of
    sqlite.org/lang_altertable.html#otheralter): (1) the v4 table under a temporary name, (2) every
    row copied in seq order, (3) the old table dropped, its indexes and triggers with it (the
    triggers refuse UPDATE and DELETE, not DROP TABLE), (4) the new one renamed, (5) its indexes
    and append-only triggers recreated. No foreign key or view refers to ``entries``. All of it runs
    in the caller's transaction: a failure leaves the v3 table as it was. The copy goes through the
    WAL, and the old table's pages stay in the file as free pages until a ``VACUUM``: for a while the
    table takes twice its space (1M entries: 13 s, an 830 MB file grew to 1.5 GB). A table already in
    the v4 shape (a ledger created at v4, or migrated by another process first) is left alone.
    """
    if conn.dialect.name == "postgresql":
        for uc in inspect(conn).get_unique_constraints("entries"):
            if uc["column_names"] == ["prev"] and uc["name"]:
                name = conn.dialect.identifier_preparer.quote(uc["name"])
                conn.execute(text(f"ALTER TABLE entries DROP CONSTRAINT {name}"))
        return
    if _sqlite_entries_is_v4(conn):
        return
    tmp = entries.to_metadata(MetaData(), name="entries_v4")
    cols = ", ".join(c.name for c in entries.c)
    conn.execute(CreateTable(tmp))  # (1) without the indexes: their names are still taken
    conn.execute(text(f"INSERT INTO entries_v4 ({cols}) SELECT {cols} FROM entries ORDER BY seq"))  # noqa: S608  (2)
    conn.execute(text("DROP TABLE entries"))  # (3)
    conn.execute(text("ALTER TABLE entries_v4 RENAME TO entries"))  # (4)
    for index in entries.indexes:  # (5)
        index.create(conn)
    for stmt in _sqlite_triggers("entries"):
        conn.execute(text(stmt))


def _sqlite_entries_is_v4(conn: Connection) -> bool:
    """No unique index on ``prev`` alone, and ``seq`` an ``INTEGER PRIMARY KEY`` (the rowid)."""
    for _, name, unique, *_ in conn.exec_driver_sql("PRAGMA index_list(entries)").fetchall():
        cols = [row[2] for row in conn.exec_driver_sql(f"PRAGMA index_info('{name}')").fetchall()]
        if unique and cols == ["prev"]:
            return False
    info = conn.exec_driver_sql("PRAGMA table_info(entries)").fetchall()
    pk = [(row[1], str(row[2]).upper()) for row in info if row[5]]
    return pk == [("seq", "INTEGER")]


MIGRATIONS: Final[Sequence[Migration]] = (_v0_to_v1, _v1_to_v2, _v2_to_v3, _v3_to_v4)
SCHEMA_VERSION: Final = len(MIGRATIONS)
