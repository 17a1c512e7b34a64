"""The ``subject_keys`` table, wrapped under the KEK file (``ledger._kek``): lookup, creation,
the first-open upgrade of schema version 2 rows, and bucket rotation.

Invariants:
1. every live row's ``secret`` is ``wrap`` under the generation ``kek_gen`` of its bucket, and
   ``kek_gen`` is the bucket's current generation (``subject_kek``) once a rotation commits;
2. a lookup reads the row and its bucket's generation in one statement, so they agree; a
   creation holds the bucket's generation (FOR SHARE on PostgreSQL; SQLite's BEGIN IMMEDIATE
   serialises writers) so no row is written under a generation being retired;
3. a rotation holds the file lock from writing the new generation to deleting the old one, so
   two rotations never interleave; a generation number is never reused.

Secrets leave this module as ``(key_id, secret)``; ``ledger.privacy`` derives the keys.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ledger._kek import BucketKey, KekFile, KekState, StaleGeneration, kek_path
from ledger._store import Store
from ledger.errors import InputError, StorageError
from ledger.schema import entries, meta, sealed_inputs, subject_kek, subject_keys

__all__ = ["KEK_META", "KeyTable", "Secret", "kek_problems"]

#: The ``mlledger_meta`` key that names the KEK file this ledger's subject keys are wrapped under.
KEK_META: Final = "subject_kek_id"
#: ``(key_id, secret)`` of a live key.
Secret = tuple[str, bytes]
_T = TypeVar("_T")


def _ledger_id(store: Store) -> str:
    with store.engine.connect() as conn:
        genesis = conn.execute(select(entries.c.leaf_hash).where(entries.c.seq == 0)).scalar()
    return bytes(genesis or b"").hex()


def _now_us() -> int:
    return time.time_ns() // 1000


_INSERT_KEY: Final = ("INSERT INTO subject_keys (key_id, tag, secret, kek_bucket, kek_gen, created_us) "
                      "VALUES ({p}, {p}, {p}, {p}, {p}, {p})")


class KeyTable:
    """One ledger's wrapped key table and its KEK file."""

    def __init__(self, store: Store, home: str | os.PathLike[str]) -> None:
        self._store = store
        self._engine = store.engine
        dbapi = self._engine.dialect.dbapi
        assert dbapi is not None
        #: A unique conflict as the driver raises it (bulk inserts run on its cursor)
        self._driver_conflict: type[Exception] = dbapi.IntegrityError
        self.pg = self._engine.dialect.name == "postgresql"
        #: The ledger this table belongs to: its genesis entry's leaf hash (hex); names the KEK file.
        self.ledger_id = _ledger_id(store)
        self.file = KekFile(kek_path(home, self.ledger_id))
        self._state: KekState | None = None
        self._gens: dict[int, int] = {}
        self._bucket_keys: dict[tuple[int, int], BucketKey] = {}
        #: Whether the last open wrapped rows that schema version 2 kept in the clear.
        self.upgraded = 0
        self.kek()  # fail at once (a server at start) when the KEK file is missing or wrong

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction that takes SQLite's write lock up front (BEGIN IMMEDIATE), so a
        read-then-write never fails at once with 'database is locked' beside another writer."""
        with self._store.write_conn() as conn:
            # SQLite: up to 64 MiB of page cache while writing (the unique indexes on key_id and tag take
            # random keys; creating 200k subjects' keys in batch scoring: 16k rows/s with the pooled
            # connection's 2 MiB, 19k with this), then the connection's own size again
            dbapi = conn.connection.dbapi_connection if self._store.dialect == "sqlite" else None
            if dbapi is None:
                with conn.begin():
                    yield conn
                return
            size = int(dbapi.execute("PRAGMA cache_size").fetchone()[0])
            dbapi.execute("PRAGMA cache_size=-65536")
            try:
                with conn.begin():
                    yield conn
            finally:
                dbapi.execute(f"PRAGMA cache_size={size}")

    # -- the KEK file ------------------------------------------------------------------

    def kek(self) -> KekState:
        if self._state is None:
            self._state = self._open()
        return self._state

    def _open(self) -> KekState:
        path = self.file.path
        with self._engine.connect() as conn:
            db_id = conn.execute(select(meta.c.value).where(meta.c.key == KEK_META)).scalar()
        if db_id is None:
            with self.file.locked():
                try:
                    state = self.file.create(self.ledger_id)
                except FileExistsError:  # another process of this ledger created it first
                    state = self._bound(self.file.load())
                self._adopt(state)
            return state
        if not self.file.exists():
            raise InputError(
                f"the subject key-encryption key {path} is missing, and this ledger's subject keys are "
                f"wrapped under it (KEK {db_id}): restore the file from its secure copy, or point "
                f"--ledger/MLLEDGER_HOME at the home that holds it. Until then no subject key can be "
                f"read or created (fail closed)")
        current = self._current()
        state = self._bound(self.file.load())
        if state.kek_id != db_id:
            raise InputError(f"{path} is the key-encryption key of another ledger (KEK {state.kek_id}; this "
                             f"ledger's is {db_id}): point --ledger/MLLEDGER_HOME at this ledger's home")
        self._require_current(state, current)
        if any(g < current[b] for b, gens in state.keys.items() for g in gens):  # an unfinished rotation
            with self.file.locked():
                state = self.file.load()
                self._prune(state)
        return state

    def _bound(self, state: KekState) -> KekState:
        if state.ledger != self.ledger_id:
            raise InputError(f"{self.file.path} is the key-encryption key of another ledger (genesis "
                             f"{state.ledger[:16]}; this ledger's is {self.ledger_id[:16]}); refusing to use it")
        return state

    def _current(self) -> dict[int, int]:
        with self._engine.connect() as conn:
            return {r.bucket: r.gen for r in conn.execute(select(subject_kek))}

    def _require_current(self, state: KekState, current: Mapping[int, int]) -> None:
        """Fail closed when the file lacks a generation the database uses (an out-of-date copy)."""
        missing = [(b, g) for b, g in sorted(current.items()) if g not in state.keys.get(b, {})]
        if missing:
            b, g = missing[0]
            raise InputError(f"{self.file.path} lacks generation {g} of bucket {b} (and {len(missing) - 1} more), "
                             f"which the database uses: it is an out-of-date copy of the key-encryption key. Use "
                             f"the file that the ledger's other processes use")

    def _adopt(self, state: KekState) -> None:
        """Record the KEK's id, and wrap any rows that schema version 2 kept in the clear."""
        with self.writing() as conn:
            db_id = conn.execute(select(meta.c.value).where(meta.c.key == KEK_META)).scalar()
            if db_id is not None and db_id != state.kek_id:
                raise InputError(f"{self.file.path} is the key-encryption key of another ledger (KEK "
                                 f"{state.kek_id}; this ledger's is {db_id})")
            if db_id is None:
                conn.execute(insert(meta).values(key=KEK_META, value=state.kek_id))
            gens = self.lock_buckets(conn, None, update=True)
            legacy = conn.execute(select(subject_keys.c.key_id, subject_keys.c.subject, subject_keys.c.deployment,
                                         subject_keys.c.secret).where(subject_keys.c.secret.is_not(None),
                                                                      subject_keys.c.kek_gen.is_(None))).all()
            for r in legacy:
                ident, bucket = (r.subject, state.bucket_of("s:" + r.subject)) if r.subject is not None else (
                    "", state.bucket_of("d:" + r.deployment))
                bk = BucketKey.of(bucket, gens[bucket], state.keys[bucket][gens[bucket]])
                conn.execute(update(subject_keys).where(subject_keys.c.key_id == r.key_id).values(
                    secret=bk.wrap(r.key_id, bytes(r.secret), ident), subject=None,
                    tag=bk.tag(ident) if r.subject is not None else None, kek_bucket=bucket, kek_gen=gens[bucket]))
        self.upgraded = len(legacy)

    def lock_buckets(self, conn: Connection, buckets: Iterable[int] | None, *, update: bool = False) -> dict[int, int]:
        """The buckets' current generations, locked until ``conn`` commits (SQLite: BEGIN IMMEDIATE
        already serialises writers; PostgreSQL: FOR SHARE to create, FOR UPDATE to rotate)."""
        stmt = select(subject_kek.c.bucket, subject_kek.c.gen).order_by(subject_kek.c.bucket)
        if buckets is not None:
            stmt = stmt.where(subject_kek.c.bucket.in_(sorted(set(buckets))))
        if self.pg:
            stmt = stmt.with_for_update(read=not update)
        gens = {r.bucket: r.gen for r in conn.execute(stmt)}
        self._gens.update(gens)
        return gens

    def _gen(self, bucket: int) -> int:
        if bucket not in self._gens:
            with self._engine.connect() as conn:
                self._gens.update({r.bucket: r.gen for r in conn.execute(select(subject_kek))})
        return self._gens[bucket]

    def _bucket_key(self, bucket: int, gen: int) -> BucketKey:
        bk = self._bucket_keys.get((bucket, gen))
        if bk is None:
            state = self.kek()
            if gen not in state.keys[bucket]:  # rotated by another process: read the file again
                state = self._state = self.file.load()
                if gen not in state.keys[bucket]:
                    raise StaleGeneration(bucket, gen)
            bk = self._bucket_keys[(bucket, gen)] = BucketKey.of(bucket, gen, state.keys[bucket][gen])
        return bk

    def _unwrap(self, key_id: str, bucket: int, gen: int, wrapped: bytes) -> Secret:
        return key_id, self._bucket_key(bucket, gen).unwrap(key_id, wrapped)[0]

    def retrying(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` again when a rotation or a concurrent creation raced it."""
        for _attempt in range(4):
            try:
                return fn()
            except (StaleGeneration, IntegrityError, self._driver_conflict):
                self._gens.clear()
        self._require_current(self.file.load(), self._current())  # an out-of-date copy: say so
        raise StorageError(f"could not read or create {what}: other processes kept rotating or creating keys; "
                           f"retry")

    # -- keys ---------------------------------------------------------------------------

    def subject(self, subject: str, *, create: bool) -> Secret | None:
        return self.retrying("a subject key", lambda: self._one(
            "s:" + subject, lambda bk: subject_keys.c.tag == bk.tag(subject),
            lambda bk, key_id, secret: {"tag": bk.tag(subject), "secret": bk.wrap(key_id, secret, subject)},
            "sk-", create=create))

    def deployment(self, deployment: str) -> Secret:
        found = self.retrying("a deployment key", lambda: self._one(
            "d:" + deployment, lambda bk: subject_keys.c.deployment == deployment,
            lambda bk, key_id, secret: {"deployment": deployment, "secret": bk.wrap(key_id, secret, "")},
            "dk-", create=True))
        assert found is not None
        return found

    def _one(self, ident: str, match: Callable[[BucketKey], Any],
             values: Callable[[BucketKey, str, bytes], dict[str, Any]], prefix: str, *, create: bool,
             ) -> Secret | None:
        """Look a key up in its bucket (one statement, so the generation and the row agree) and
        create it if missing, in a transaction that holds the bucket's generation."""
        bucket = self.kek().bucket_of(ident)
        gen = self._gen(bucket)
        bk = self._bucket_key(bucket, gen)
        on = and_(match(bk), subject_keys.c.kek_bucket == subject_kek.c.bucket)
        with self._engine.connect() as conn:
            row = conn.execute(select(subject_kek.c.gen, subject_keys.c.key_id, subject_keys.c.secret,
                                      subject_keys.c.kek_gen).select_from(subject_kek.outerjoin(subject_keys, on))
                               .where(subject_kek.c.bucket == bucket)).one()
        if row.gen != gen:
            self._gens[bucket] = row.gen
            raise StaleGeneration(bucket, gen)
        if row.key_id is not None and row.secret is not None:
            return self._unwrap(row.key_id, bucket, row.kek_gen, row.secret)
        if not create:
            return None
        key_id, secret = prefix + secrets.token_hex(16), secrets.token_bytes(32)
        with self.writing() as conn:
            if self.lock_buckets(conn, [bucket])[bucket] != gen:
                raise StaleGeneration(bucket, gen)
            conn.execute(insert(subject_keys).values(key_id=key_id, kek_bucket=bucket, kek_gen=gen,
                                                     created_us=_now_us(), **values(bk, key_id, secret)))
        return key_id, secret

    def many(self, wanted: list[str]) -> dict[str, Secret]:
        """Keys for many subjects, created where missing, in one transaction."""
        return self.retrying(f"keys for {len(wanted)} subjects", lambda: self._many(wanted))

    def _many(self, wanted: list[str]) -> dict[str, Secret]:
        state = self.kek()
        found: dict[str, Secret] = {}
        with self.writing() as conn:
            buckets = {s: state.bucket_of("s:" + s) for s in wanted}
            gens = self.lock_buckets(conn, set(buckets.values()))
            keys = {s: self._bucket_key(b, gens[b]) for s, b in buckets.items()}
            tag_of = {s: keys[s].tag(s) for s in wanted}
            by_tag = {t: s for s, t in tag_of.items()}
            tags = list(by_tag)
            for i in range(0, len(tags), 500):
                rows = conn.execute(select(subject_keys.c.tag, subject_keys.c.key_id, subject_keys.c.secret,
                                           subject_keys.c.kek_bucket, subject_keys.c.kek_gen)
                                    .where(subject_keys.c.tag.in_(tags[i : i + 500]))).all()
                for r in rows:
                    found[by_tag[bytes(r.tag)]] = self._unwrap(r.key_id, r.kek_bucket, r.kek_gen, r.secret)
            new = [(s, "sk-" + secrets.token_hex(16), secrets.token_bytes(32)) for s in wanted if s not in found]
            if new:
                now = _now_us()
                # the driver's executemany: SQLAlchemy's per-row parameter processing cost more than the insert
                tx = self._store.raw_tx(conn)
                tx.many(tx.sql(_INSERT_KEY), [(k, tag_of[s], keys[s].wrap(k, secret, s), buckets[s], gens[buckets[s]],
                                              now) for s, k, secret in new])
                found.update({s: (k, secret) for s, k, secret in new})
        return found

    def row(self, key_id: str) -> Any:
        with self._engine.connect() as conn:
            return conn.execute(select(subject_keys.c.secret, subject_keys.c.kek_bucket, subject_keys.c.kek_gen)
                                .where(subject_keys.c.key_id == key_id)).first()

    def by_id(self, key_id: str) -> Secret | None:
        def read() -> Secret | None:
            r = self.row(key_id)
            return None if r is None or r.secret is None else self._unwrap(key_id, r.kek_bucket, r.kek_gen, r.secret)
        return self.retrying("a subject key", read)

    def live(self, key_ids: Iterable[str]) -> list[str]:
        """Those of ``key_ids`` that are still live."""
        with self._engine.connect() as conn:
            return [r.key_id for r in conn.execute(select(subject_keys.c.key_id).where(
                subject_keys.c.key_id.in_(list(key_ids)), subject_keys.c.secret.is_not(None)))]

    # -- rotation -------------------------------------------------------------------------

    def rotate(self, erasures: Mapping[str, int]) -> int:
        """Clear the keys of ``erasures`` (key id -> its ``subject.erased`` seq) and their sealed
        inputs, rotating their buckets: a new KEK generation in the file; in one transaction every
        other live key of those buckets re-wrapped and re-tagged; then the old generations deleted
        from the file. Returns how many live keys were re-wrapped."""
        with self.file.locked():
            state = self._state = self._bound(self.file.load())
            self._require_current(state, self._current())
            with self._engine.connect() as conn:
                buckets = {r.kek_bucket for r in conn.execute(select(subject_keys.c.kek_bucket).where(
                    subject_keys.c.key_id.in_(list(erasures)), subject_keys.c.secret.is_not(None)))}
                before = {r.bucket: r.gen for r in conn.execute(
                    select(subject_kek).where(subject_kek.c.bucket.in_(buckets)))}
            # A generation number is never reused: one that a failed rotation wrote to the file
            # (and another process may have read) never becomes current with another key.
            after = {b: max(*state.keys[b], before[b]) + 1 for b in buckets}
            for b, gen in after.items():
                state.keys[b][gen] = secrets.token_bytes(32)
            self.file.replace(state)
            moved = self._rotate(state, before, after, erasures)
            self._prune(state)
        return moved

    def _rotate(self, state: KekState, before: Mapping[int, int], after: Mapping[int, int],
                erasures: Mapping[str, int]) -> int:
        now = _now_us()
        moved = 0
        with self.writing() as conn:
            if not self.pg:
                conn.exec_driver_sql("PRAGMA secure_delete = ON")  # overwrite freed pages with zeros
            if self.lock_buckets(conn, before, update=True) != dict(before):
                raise StorageError("a KEK bucket was rotated by a process using another home's KEK file; "
                                   "every process of a ledger must share one KEK file")
            for b, gen in before.items():
                old, new = BucketKey.of(b, gen, state.keys[b][gen]), BucketKey.of(b, after[b], state.keys[b][after[b]])
                rows = conn.execute(select(subject_keys.c.key_id, subject_keys.c.secret, subject_keys.c.kek_gen,
                                           subject_keys.c.deployment).where(
                    subject_keys.c.kek_bucket == b, subject_keys.c.secret.is_not(None))).all()
                changes = []
                for r in rows:
                    if r.key_id in erasures:
                        continue
                    if r.kek_gen != gen:
                        raise StorageError(f"subject key {r.key_id} is wrapped under generation {r.kek_gen} of "
                                           f"bucket {b}, not the current {gen}; the subject_keys table was altered")
                    secret, ident = old.unwrap(r.key_id, r.secret)
                    changes.append({"k": r.key_id, "w": new.wrap(r.key_id, secret, ident), "g": after[b],
                                    "t": None if r.deployment is not None else new.tag(ident)})
                if changes:
                    conn.execute(update(subject_keys).where(subject_keys.c.key_id == bindparam("k")).values(
                        secret=bindparam("w"), tag=bindparam("t"), kek_gen=bindparam("g")), changes)
                conn.execute(update(subject_kek).where(subject_kek.c.bucket == b).values(gen=after[b]))
                moved += len(changes)
            for key_id, seq in erasures.items():
                conn.execute(update(subject_keys).where(subject_keys.c.key_id == key_id).values(
                    secret=None, subject=None, tag=None, kek_bucket=None, kek_gen=None, erased_us=now,
                    erased_seq=seq))
            conn.execute(delete(sealed_inputs).where(sealed_inputs.c.key_id.in_(list(erasures))))
        self._gens.update(after)
        return moved

    def prune(self) -> None:
        """Delete the generations a completed rotation left in the file (after a crash)."""
        with self.file.locked():
            self._prune(self.file.load())

    def _prune(self, state: KekState) -> None:
        """Delete from the file every generation older than its bucket's current one (call locked).

        Newer ones (left by a rotation that failed) stay, so that their numbers are not reused."""
        current = self._current()
        self._require_current(state, current)  # never empty a bucket of an out-of-date copy
        stale = {b: [g for g in gens if g < current[b]] for b, gens in state.keys.items()}
        if any(stale.values()):
            for b, gens in stale.items():
                for g in gens:
                    del state.keys[b][g]
                    self._bucket_keys.pop((b, g), None)
            self.file.replace(state)
        self._state = state


def kek_problems(store: Store, home: str | os.PathLike[str]) -> list[str]:
    """What ``mlledger doctor`` reports about a ledger's KEK file, without changing anything."""
    with store.engine.connect() as conn:
        db_id = conn.execute(select(meta.c.value).where(meta.c.key == KEK_META)).scalar()
        current = {r.bucket: r.gen for r in conn.execute(select(subject_kek))}
    path = kek_path(home, _ledger_id(store))
    if db_id is None:
        return []
    if not path.exists() and not path.is_symlink():
        return [f"{path} (the subject key-encryption key) is missing: subject keys cannot be read; restore it"]
    try:
        state = KekFile(path).load()
    except InputError as exc:
        return [str(exc)]
    out = []
    if state.kek_id != db_id:
        out.append(f"{path} is not this ledger's key-encryption key (KEK {state.kek_id}, the ledger's is {db_id})")
    missing = [(b, g) for b, g in current.items() if g not in state.keys[b]]
    if missing:
        out.append(f"{path} lacks {len(missing)} current generation(s) (e.g. {missing[0][1]} of bucket "
                   f"{missing[0][0]}): an out-of-date copy; use the file the ledger's processes use")
    retired = sum(1 for b, gens in state.keys.items() for g in gens if g < current.get(b, 0))
    if retired:
        out.append(f"{path} still holds {retired} retired generation(s) (an erasure did not finish): run "
                   f"'mlledger erase --finish'")
    return out
