"""Per-subject keys, input commitments, sealed inputs and crypto-shredding (DESIGN.md section 5).

Personal data never enters an entry. A prediction's input is recorded as a commitment::

    commitment = HMAC-SHA256(K_commit, canonical input bytes)
    K_commit   = HKDF-SHA256(secret, salt=empty, info="mlledger/v1 input-commitment", 32 bytes)

where ``secret`` is 32 random bytes held for one data subject (or one deployment, for
predictions without a subject) in the erasable ``subject_keys`` table. Raw inputs may be kept
only sealed: AES-256-GCM under ``K_seal = HKDF-SHA256(secret, info="mlledger/v1 input-seal")``
with a random 96-bit nonce and ``key_id || 0x00 || commitment`` as associated data. The two
keys are derived separately so that one secret never serves two algorithms.

Erasure (``erase``): the ``subject.erased`` entry is appended first, then the secret, the
subject's identifier and the sealed inputs are destroyed in one transaction. A crash between
the two leaves the key alive with its erasure on the ledger; ``finish_erasures`` (run by every
``erase`` and at server start) completes it. After erasure the commitments in the chain are
unlinkable (nobody can recompute them) and the sealed inputs unreadable; the chain and every
bundle still verify, because no entry changed.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ledger._kek import BucketKey, KekFile, KekState, StaleGeneration, kek_path
from ledger.api import Ledger, Receipt
from ledger.canonical import encode
from ledger.errors import InputError, StorageError
from ledger.events import Event
from ledger.schema import meta, sealed_inputs, subject_kek, subject_keys

__all__ = [
    "COMMIT_INFO",
    "SEAL_INFO",
    "KeyErased",
    "SubjectKey",
    "SubjectKeys",
    "commitment",
    "derive",
]

COMMIT_INFO: Final = b"mlledger/v1 input-commitment"
SEAL_INFO: Final = b"mlledger/v1 input-seal"
_SUBJECT_MAX: Final = 512
#: The ``mlledger_meta`` key that names the KEK file this ledger's subject keys are wrapped under.
KEK_META: Final = "subject_kek_id"
_T = TypeVar("_T")


class KeyErased(InputError):
    """A decision was to be recorded under a key whose erasure is already on the ledger."""


def derive(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of a subject secret, empty salt, 32 bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def commitment(commit_key: bytes, record: Mapping[str, Any]) -> bytes:
    """HMAC-SHA256 over the canonical bytes of one input record (``ledger.canonical``)."""
    return hmac.new(commit_key, encode(record), sha256).digest()


@dataclass(frozen=True, slots=True)
class SubjectKey:
    """A live key: its id (recorded in entries) and the two derived keys (never recorded)."""

    key_id: str
    commit_key: bytes
    seal_key: bytes

    @classmethod
    def of(cls, key_id: str, secret: bytes) -> SubjectKey:
        return cls(key_id, derive(secret, COMMIT_INFO), derive(secret, SEAL_INFO))

    def commit(self, record: Mapping[str, Any]) -> bytes:
        return commitment(self.commit_key, record)

    def seal(self, digest: bytes, record: Mapping[str, Any]) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, AESGCM(self.seal_key).encrypt(nonce, encode(dict(record)), self._aad(digest))

    def unseal(self, digest: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
        return AESGCM(self.seal_key).decrypt(nonce, ciphertext, self._aad(digest))

    def _aad(self, digest: bytes) -> bytes:
        return self.key_id.encode() + b"\x00" + digest

    def __repr__(self) -> str:  # never show key material
        return f"SubjectKey({self.key_id!r})"


def _now_us() -> int:
    return time.time_ns() // 1000


def _check_subject(subject: str) -> None:
    if not subject or len(subject.encode()) > _SUBJECT_MAX or any(ord(c) < 32 for c in subject):
        raise InputError(f"subject id must be 1..{_SUBJECT_MAX} bytes of printable text")


class SubjectKeys:
    """The erasable key table of one ledger (shares its database), wrapped under ``home``'s KEK file.

    ``home`` is the directory whose ``keys/subjects.kek`` holds the key-encryption key
    (``ledger._kek``): created on first use, and required from then on (fail closed).
    """

    def __init__(self, ledger: Ledger, home: str | os.PathLike[str]) -> None:
        self.ledger = ledger
        self._engine = ledger.store.engine
        self._pg = self._engine.dialect.name == "postgresql"
        self._file = KekFile(kek_path(home))
        self._state: KekState | None = None
        self._gens: dict[int, int] = {}
        self._bucket_keys: dict[tuple[int, int], BucketKey] = {}
        self._deployment_cache: dict[str, SubjectKey] = {}
        #: False when the last erasure could not truncate SQLite's WAL (a reader held it open).
        self.wal_cleared = True
        #: How many live keys the last erasure re-wrapped under its bucket's new KEK generation.
        self.rewrapped = 0
        self._kek()  # fail at once (a server at start) when the KEK file is missing or wrong

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction that takes SQLite's write lock up front (BEGIN IMMEDIATE), so a
        read-then-write never fails at once with 'database is locked' beside another writer."""
        with self.ledger.store.write_conn() as conn, conn.begin():
            yield conn

    # -- the key-encryption key -------------------------------------------------------

    def _kek(self) -> KekState:
        if self._state is None:
            self._state = self._open_kek()
        return self._state

    def _open_kek(self) -> KekState:
        path = self._file.path
        with self._engine.connect() as conn:
            db_id = conn.execute(select(meta.c.value).where(meta.c.key == KEK_META)).scalar()
        if db_id is not None:
            if not self._file.exists():
                raise InputError(
                    f"the subject key-encryption key {path} is missing, and this ledger's subject keys are "
                    f"wrapped under it (KEK {db_id}): restore the file from its secure copy, or point "
                    f"--ledger/MLLEDGER_HOME at the home that holds it. Until then no subject key can be "
                    f"read or created (fail closed)")
            state = self._file.load()
            if state.kek_id != db_id:
                raise InputError(f"{path} is the key-encryption key of another ledger (KEK {state.kek_id}; this "
                                 f"ledger's is {db_id}): point --ledger/MLLEDGER_HOME at this ledger's home")
            return state
        with self._file.locked():
            try:
                state = self._file.create()
            except FileExistsError:
                state = self._file.load()
            self._adopt(state)
        return state

    def _adopt(self, state: KekState) -> None:
        """Record the KEK's id, and wrap any rows that schema version 2 kept in the clear."""
        with self._writing() as conn:
            db_id = conn.execute(select(meta.c.value).where(meta.c.key == KEK_META)).scalar()
            if db_id is not None and db_id != state.kek_id:
                raise InputError(f"{self._file.path} is the key-encryption key of another ledger (KEK "
                                 f"{state.kek_id}; this ledger's is {db_id})")
            if db_id is None:
                conn.execute(insert(meta).values(key=KEK_META, value=state.kek_id))
            gens = self._lock_buckets(conn, None, update=True)
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
        if legacy:
            self._clear_old_pages()

    def _lock_buckets(self, conn: Connection, buckets: Iterable[int] | None, *, update: bool = False) -> dict[int, int]:
        """The buckets' current generations, locked until ``conn`` commits (SQLite: BEGIN IMMEDIATE
        already serialises writers; PostgreSQL: FOR SHARE to create, FOR UPDATE to rotate)."""
        stmt = select(subject_kek.c.bucket, subject_kek.c.gen).order_by(subject_kek.c.bucket)
        if buckets is not None:
            stmt = stmt.where(subject_kek.c.bucket.in_(sorted(set(buckets))))
        if self._pg:
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
            state = self._kek()
            if gen not in state.keys[bucket]:  # rotated by another process: read the file again
                state = self._state = self._file.load()
                if gen not in state.keys[bucket]:
                    raise StaleGeneration(bucket, gen)
            bk = self._bucket_keys[(bucket, gen)] = BucketKey.of(bucket, gen, state.keys[bucket][gen])
        return bk

    def _unwrap(self, key_id: str, bucket: int, gen: int, wrapped: bytes) -> SubjectKey:
        secret, _ident = self._bucket_key(bucket, gen).unwrap(key_id, wrapped)
        return SubjectKey.of(key_id, secret)

    def _retrying(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` again when a rotation or a concurrent creation raced it."""
        for _attempt in range(4):
            try:
                return fn()
            except (StaleGeneration, IntegrityError):
                self._gens.clear()
        raise StorageError(f"could not read or create {what}: the KEK file lacks a generation the database "
                           f"uses, or other processes kept racing; if it persists, restore {self._file.path}")

    # -- keys -----------------------------------------------------------------------

    def for_subject(self, subject: str) -> SubjectKey:
        """The subject's live key, created on first use."""
        _check_subject(subject)
        key = self._retrying("a subject key", lambda: self._subject(subject, create=True))
        assert key is not None
        return key

    def for_deployment(self, deployment: str) -> SubjectKey:
        """The key for predictions without a subject (one per NAME@STAGE; never erased)."""
        key = self._deployment_cache.get(deployment)
        if key is None:
            found = self._retrying("a deployment key", lambda: self._one(
                "d:" + deployment, lambda bk: subject_keys.c.deployment == deployment,
                lambda bk, key_id, secret: {"deployment": deployment, "secret": bk.wrap(key_id, secret, "")},
                "dk-", create=True))
            assert found is not None
            key = self._deployment_cache[deployment] = found
        return key

    def _subject(self, subject: str, *, create: bool) -> SubjectKey | None:
        return self._one(
            "s:" + subject, lambda bk: subject_keys.c.tag == bk.tag(subject),
            lambda bk, key_id, secret: {"tag": bk.tag(subject), "secret": bk.wrap(key_id, secret, subject)},
            "sk-", create=create)

    def _one(self, ident: str, match: Callable[[BucketKey], Any],
             values: Callable[[BucketKey, str, bytes], dict[str, Any]], prefix: str, *, create: bool,
             ) -> SubjectKey | None:
        """Look a key up in its bucket (one statement, so the generation and the row agree) and
        create it if missing, in a transaction that holds the bucket's generation."""
        bucket = self._kek().bucket_of(ident)
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
        with self._writing() as conn:
            if self._lock_buckets(conn, [bucket])[bucket] != gen:
                raise StaleGeneration(bucket, gen)
            conn.execute(insert(subject_keys).values(key_id=key_id, kek_bucket=bucket, kek_gen=gen,
                                                     created_us=_now_us(), **values(bk, key_id, secret)))
        return SubjectKey.of(key_id, secret)

    def many_for_subjects(self, subjects: Iterable[str]) -> dict[str, SubjectKey]:
        """Keys for many subjects at once (batch scoring)."""
        wanted = sorted(set(subjects))
        for s in wanted:
            _check_subject(s)
        return self._retrying(f"keys for {len(wanted)} subjects", lambda: self._many(wanted))

    def _many(self, wanted: list[str]) -> dict[str, SubjectKey]:
        state = self._kek()
        found: dict[str, SubjectKey] = {}
        with self._writing() as conn:
            buckets = {s: state.bucket_of("s:" + s) for s in wanted}
            gens = self._lock_buckets(conn, set(buckets.values()))
            keys = {s: self._bucket_key(b, gens[b]) for s, b in buckets.items()}
            by_tag = {keys[s].tag(s): s for s in wanted}
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
                conn.execute(insert(subject_keys), [
                    {"key_id": k, "tag": keys[s].tag(s), "secret": keys[s].wrap(k, secret, s),
                     "kek_bucket": buckets[s], "kek_gen": gens[buckets[s]], "created_us": now,
                     "subject": None, "deployment": None} for s, k, secret in new])
                found.update({s: SubjectKey.of(k, secret) for s, k, secret in new})
        return found

    def _row(self, key_id: str) -> Any:
        with self._engine.connect() as conn:
            return conn.execute(select(subject_keys.c.secret, subject_keys.c.kek_bucket, subject_keys.c.kek_gen)
                                .where(subject_keys.c.key_id == key_id)).first()

    def by_id(self, key_id: str) -> SubjectKey | None:
        """A live key by id; None once erased or never existed."""
        self._kek()

        def read() -> SubjectKey | None:
            row = self._row(key_id)
            return None if row is None or row.secret is None else self._unwrap(
                key_id, row.kek_bucket, row.kek_gen, row.secret)
        return self._retrying("a subject key", read)

    def status(self, key_id: str) -> str:
        """``live``, ``erased`` or ``unknown``."""
        row = self._row(key_id)
        return "unknown" if row is None else ("erased" if row.secret is None else "live")
    # -- sealed inputs ----------------------------------------------------------------

    def store_sealed(self, items: Iterable[tuple[SubjectKey, bytes, Mapping[str, Any]]]) -> int:
        """Seal and store raw inputs: ``(key, commitment, record)`` each. Returns how many."""
        sealed: dict[tuple[str, bytes], tuple[bytes, bytes]] = {}
        for key, digest, record in items:  # the same input under the same key: one copy
            if (key.key_id, digest) not in sealed:
                sealed[(key.key_id, digest)] = key.seal(digest, record)
        if sealed:
            with self._writing() as conn:
                existing = {(r.key_id, bytes(r.commitment)) for r in conn.execute(
                    select(sealed_inputs.c.key_id, sealed_inputs.c.commitment).where(
                        sealed_inputs.c.commitment.in_([d for _k, d in sealed])))}
                fresh = [{"key_id": k, "commitment": d, "nonce": n, "ciphertext": ct}
                         for (k, d), (n, ct) in sealed.items() if (k, d) not in existing]
                if fresh:
                    conn.execute(insert(sealed_inputs), fresh)
        return len(sealed)

    def read_sealed(self, key_id: str, digest: bytes) -> bytes:
        """The canonical input bytes behind a commitment; ``InputError`` once erased."""
        key = self.by_id(key_id)
        if key is None:
            raise InputError(f"key {key_id} is {self.status(key_id)}: the sealed input cannot be read")
        with self._engine.connect() as conn:
            row = conn.execute(select(sealed_inputs.c.nonce, sealed_inputs.c.ciphertext).where(
                sealed_inputs.c.key_id == key_id, sealed_inputs.c.commitment == digest)).first()
        if row is None:
            raise InputError(f"no sealed input for commitment {digest.hex()} under key {key_id}")
        data = key.unseal(digest, row.nonce, row.ciphertext)
        if hmac.new(key.commit_key, data, sha256).digest() != digest:
            raise InputError(f"the sealed input under {key_id} does not match its commitment")
        return data

    # -- erasure ------------------------------------------------------------------------

    def erase(self, subject: str, *, request_ref: str, legal_ground: str, reason: str, actor: str) -> Receipt:
        """Record ``subject.erased``, then destroy the key (rotating its KEK bucket) and its sealed inputs."""
        _check_subject(subject)
        self.finish_erasures()
        key = self._retrying("a subject key", lambda: self._subject(subject, create=False))
        if key is None:
            raise InputError("no live key for that subject: nothing was recorded for it, or it was already "
                             "erased (see 'mlledger log --kind subject.erased')")
        event = Event.from_json({"kind": "subject.erased", "actor": actor, "subject": f"key:{key.key_id}",
                                 "payload": {"key_id": key.key_id, "request_ref": request_ref,
                                             "legal_ground": legal_ground, "reason": reason}})
        receipt = self.ledger.append(event)
        self._destroy({key.key_id: receipt.seq})
        return receipt

    def finish_erasures(self) -> list[str]:
        """Destroy every key whose ``subject.erased`` is on the ledger but which is still live, and
        every KEK generation that a completed rotation left in the file."""
        self._kek()
        erased = {e.payload["key_id"]: e.seq for e in self.ledger.iter(kind="subject.erased")}
        live: list[str] = []
        if erased:
            with self._engine.connect() as conn:
                live = [r.key_id for r in conn.execute(select(subject_keys.c.key_id).where(
                    subject_keys.c.key_id.in_(list(erased)), subject_keys.c.secret.is_not(None)))]
        if live:
            self._destroy({k: erased[k] for k in live})
        else:
            with self._file.locked():
                self._prune(self._file.load())
        return live

    def _destroy(self, erasures: Mapping[str, int]) -> None:
        """Rotate the buckets of ``erasures`` (key id -> its ``subject.erased`` seq): a new KEK
        generation in the file; in one transaction, every other live key of those buckets
        re-wrapped and re-tagged, the erased keys and their sealed inputs gone; then the old
        generations deleted from the file."""
        first = min(erasures.values())
        try:
            with self._file.locked():
                state = self._state = self._file.load()
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
                self._file.replace(state)
                self.rewrapped = self._rotate(state, before, after, erasures)
                self._prune(state)
            if self._pg:
                with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM subject_keys, sealed_inputs")
            else:
                self.wal_cleared = _truncate_wal(self._engine)
        except DBAPIError as exc:
            raise StorageError(f"the key(s) {', '.join(sorted(erasures))} could not be destroyed ({exc.orig}); "
                               f"the erasure is recorded at seq {first}: run 'mlledger erase --finish' to "
                               f"complete it") from None

    def _rotate(self, state: KekState, before: Mapping[int, int], after: Mapping[int, int],
                erasures: Mapping[str, int]) -> int:
        now = _now_us()
        moved = 0
        with self._writing() as conn:
            if not self._pg:
                conn.exec_driver_sql("PRAGMA secure_delete = ON")  # overwrite freed pages with zeros
            if self._lock_buckets(conn, before, update=True) != dict(before):
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
                    secret=None, subject=None, tag=None, erased_us=now, erased_seq=seq))
            conn.execute(delete(sealed_inputs).where(sealed_inputs.c.key_id.in_(list(erasures))))
        self._gens.update(after)
        return moved

    def _prune(self, state: KekState) -> None:
        """Delete from the file every generation older than its bucket's current one (call locked).

        Newer ones (left by a rotation that failed) stay, so that their numbers are not reused."""
        with self._engine.connect() as conn:
            current = {r.bucket: r.gen for r in conn.execute(select(subject_kek))}
        stale = {b: [g for g in gens if g < current[b]] for b, gens in state.keys.items()}
        if any(stale.values()):
            for b, gens in stale.items():
                for g in gens:
                    del state.keys[b][g]
                    self._bucket_keys.pop((b, g), None)
            self._file.replace(state)
        self._state = state

    def _clear_old_pages(self) -> None:
        if self._pg:
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM subject_keys")
        else:
            self.wal_cleared = _truncate_wal(self._engine)


def _truncate_wal(engine: Any, attempts: int = 20) -> bool:
    """Checkpoint and truncate SQLite's WAL so that old page images (the destroyed key) go.

    A reader holding an old snapshot blocks it: retry for about two seconds, then report False.
    """
    for _ in range(attempts):
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout = 100")
            try:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
            finally:
                conn.exec_driver_sql("PRAGMA busy_timeout = 60000")  # the pool's setting (connect timeout 60 s)
        if busy is not None and busy[0] == 0:
            return True
        time.sleep(0.1)
    return False
