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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ledger.api import Ledger, Receipt
from ledger.canonical import encode
from ledger.errors import InputError, StorageError
from ledger.events import Event
from ledger.schema import sealed_inputs, subject_keys

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
    """The erasable key table of one ledger (shares its database)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._engine = ledger.store.engine
        self._deployment_cache: dict[str, SubjectKey] = {}
        #: False when the last erasure could not truncate SQLite's WAL (a reader held it open).
        self.wal_cleared = True

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction that takes SQLite's write lock up front (BEGIN IMMEDIATE), so a
        read-then-write never fails at once with 'database is locked' beside another writer."""
        with self.ledger.store.write_conn() as conn, conn.begin():
            yield conn

    # -- keys -----------------------------------------------------------------------

    def for_subject(self, subject: str) -> SubjectKey:
        """The subject's live key, created on first use."""
        _check_subject(subject)
        return self._get_or_create(subject_keys.c.subject, subject, "sk-")

    def for_deployment(self, deployment: str) -> SubjectKey:
        """The key for predictions without a subject (one per NAME@STAGE; never erased)."""
        key = self._deployment_cache.get(deployment)
        if key is None:
            key = self._deployment_cache[deployment] = self._get_or_create(
                subject_keys.c.deployment, deployment, "dk-")
        return key

    def many_for_subjects(self, subjects: Iterable[str]) -> dict[str, SubjectKey]:
        """Keys for many subjects at once (batch scoring)."""
        wanted = sorted(set(subjects))
        for s in wanted:
            _check_subject(s)
        for _attempt in range(3):
            try:
                return self._many(wanted)
            except IntegrityError:  # another process created one of them first: read again
                continue
        raise StorageError(f"could not create keys for {len(wanted)} subjects (concurrent creation); retry")

    def _many(self, wanted: list[str]) -> dict[str, SubjectKey]:
        found: dict[str, SubjectKey] = {}
        with self._writing() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                rows = conn.execute(select(subject_keys.c.subject, subject_keys.c.key_id, subject_keys.c.secret)
                                    .where(subject_keys.c.subject.in_(chunk))).all()
                found.update({r.subject: SubjectKey.of(r.key_id, r.secret) for r in rows})
            missing = [s for s in wanted if s not in found]
            new = [(s, "sk-" + secrets.token_hex(16), secrets.token_bytes(32)) for s in missing]
            if new:
                now = _now_us()
                conn.execute(insert(subject_keys), [{"key_id": k, "subject": s, "secret": secret, "created_us": now}
                                                    for s, k, secret in new])
                found.update({s: SubjectKey.of(k, secret) for s, k, secret in new})
        return found

    def _get_or_create(self, column: Any, value: str, prefix: str) -> SubjectKey:
        for _attempt in range(3):
            with self._engine.begin() as conn:
                row = conn.execute(select(subject_keys.c.key_id, subject_keys.c.secret).where(column == value)).first()
                if row is not None:
                    return SubjectKey.of(row.key_id, row.secret)
            key_id, secret = prefix + secrets.token_hex(16), secrets.token_bytes(32)
            try:
                with self._writing() as conn:
                    conn.execute(insert(subject_keys).values(
                        key_id=key_id, secret=secret, created_us=_now_us(), **{column.name: value}))
                return SubjectKey.of(key_id, secret)
            except IntegrityError:  # another process created it first: read theirs
                continue
        raise StorageError(f"could not create a key for a {column.name} (concurrent creation); retry")

    def _secret(self, key_id: str) -> tuple[bool, bytes | None]:
        """(whether the key exists, its secret or None once erased)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(subject_keys.c.secret).where(subject_keys.c.key_id == key_id)).first()
        return (False, None) if row is None else (True, row.secret)

    def by_id(self, key_id: str) -> SubjectKey | None:
        """A live key by id; None once erased or never existed."""
        _found, secret = self._secret(key_id)
        return None if secret is None else SubjectKey.of(key_id, secret)

    def status(self, key_id: str) -> str:
        """``live``, ``erased`` or ``unknown``."""
        found, secret = self._secret(key_id)
        return "unknown" if not found else ("erased" if secret is None else "live")

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
        """Record ``subject.erased``, then destroy the key and its sealed inputs."""
        _check_subject(subject)
        self.finish_erasures()
        with self._engine.connect() as conn:
            row = conn.execute(select(subject_keys.c.key_id).where(subject_keys.c.subject == subject)).first()
        if row is None:
            raise InputError("no live key for that subject: nothing was recorded for it, or it was already "
                             "erased (see 'mlledger log --kind subject.erased')")
        event = Event.from_json({"kind": "subject.erased", "actor": actor, "subject": f"key:{row.key_id}",
                                 "payload": {"key_id": row.key_id, "request_ref": request_ref,
                                             "legal_ground": legal_ground, "reason": reason}})
        receipt = self.ledger.append(event)
        self._destroy(row.key_id, receipt.seq)
        return receipt

    def finish_erasures(self) -> list[str]:
        """Destroy every key whose ``subject.erased`` is on the ledger but which is still live."""
        erased = {e.payload["key_id"]: e.seq for e in self.ledger.iter(kind="subject.erased")}
        if not erased:
            return []
        with self._engine.connect() as conn:
            live = [r.key_id for r in conn.execute(select(subject_keys.c.key_id).where(
                subject_keys.c.key_id.in_(list(erased)), subject_keys.c.secret.is_not(None)))]
        for key_id in live:
            self._destroy(key_id, erased[key_id])
        return live

    def _destroy(self, key_id: str, seq: int) -> None:
        engine = self._engine
        try:
            with self._writing() as conn:
                if engine.dialect.name == "sqlite":
                    conn.exec_driver_sql("PRAGMA secure_delete = ON")  # overwrite freed pages with zeros
                conn.execute(update(subject_keys).where(subject_keys.c.key_id == key_id).values(
                    secret=None, subject=None, erased_us=_now_us(), erased_seq=seq))
                conn.execute(delete(sealed_inputs).where(sealed_inputs.c.key_id == key_id))
            if engine.dialect.name == "sqlite":
                self.wal_cleared = _truncate_wal(engine)
            else:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM subject_keys, sealed_inputs")
        except DBAPIError as exc:
            raise StorageError(f"the key {key_id} could not be destroyed ({exc.orig}); its erasure is recorded "
                               f"at seq {seq}: run 'mlledger erase --finish' to complete it") from None


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
