"""Per-subject keys, input commitments, sealed inputs and crypto-shredding (DESIGN.md section 5).

Personal data never enters an entry. A prediction's input is recorded as a commitment::

    commitment = HMAC-SHA256(K_commit, canonical input bytes)
    K_commit   = HKDF-SHA256(secret, salt=empty, info="mlledger/v1 input-commitment", 32 bytes)

where ``secret`` is 32 random bytes held for one data subject (or one deployment, for
predictions without a subject) in the erasable ``subject_keys`` table, stored only wrapped under
the key-encryption key file outside the database (``ledger._kek``, ``ledger._keytable``). Raw inputs may be kept
only sealed: AES-256-GCM under ``K_seal = HKDF-SHA256(secret, info="mlledger/v1 input-seal")``
with a random 96-bit nonce and ``key_id || 0x00 || commitment`` as associated data. The two
keys are derived separately so that one secret never serves two algorithms.

Erasure (``erase``): the ``subject.erased`` entry is appended first, then the secret, the
subject's identifier and the sealed inputs are destroyed in one transaction that also rotates
the key's KEK bucket, so copies of the row in WAL, archives and backups cannot be opened. A crash between
the two leaves the key alive with its erasure on the ledger; ``finish_erasures`` (run by every
``erase`` and at server start) completes it. After erasure the commitments in the chain are
unlinkable (nobody can recompute them) and the sealed inputs unreadable; the chain and every
bundle still verify, because no entry changed.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError

from ledger._keytable import KeyTable
from ledger.api import Ledger, Receipt
from ledger.canonical import encode
from ledger.errors import InputError, MlledgerError, StorageError
from ledger.events import Event
from ledger.schema import sealed_inputs

__all__ = [
    "COMMIT_INFO",
    "REQUEST_DOMAIN",
    "SEAL_INFO",
    "KeyErased",
    "SubjectKey",
    "SubjectKeys",
    "commitment",
    "derive",
]

COMMIT_INFO: Final = b"mlledger/v1 input-commitment"
SEAL_INFO: Final = b"mlledger/v1 input-seal"
#: Prefix of the message whose HMAC under ``K_commit`` stands for a client's request id. An input
#: commitment's message is a canonical JSON object (starts with ``{``), so the two never collide.
REQUEST_DOMAIN: Final = b"mlledger/v1 request-id\x00"
_SUBJECT_MAX: Final = 512
_CONTROL: Final = re.compile(r"[\x00-\x1f]")


#: Each byte XOR HMAC's ipad and opad (RFC 2104), as ``bytes.translate`` tables.
_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))


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
    #: HMAC-SHA256 keyed with ``commit_key`` (RFC 2104): SHA-256 states that have absorbed the key
    #: XOR ipad and XOR opad, copied for each commitment. Keying costs more than the copies, and
    #: ``hmac.HMAC.copy`` costs more than these two (1.2 against 0.7 us a commitment).
    _inner: Any = field(init=False, repr=False, compare=False)
    _outer: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = self.commit_key if len(self.commit_key) <= 64 else sha256(self.commit_key).digest()
        key = key.ljust(64, b"\x00")
        object.__setattr__(self, "_inner", sha256(key.translate(_IPAD)))
        object.__setattr__(self, "_outer", sha256(key.translate(_OPAD)))

    @classmethod
    def of(cls, key_id: str, secret: bytes) -> SubjectKey:
        return cls(key_id, derive(secret, COMMIT_INFO), derive(secret, SEAL_INFO))

    def commit(self, record: Mapping[str, Any]) -> bytes:
        """``commitment(commit_key, record)``."""
        return self.commit_encoded(encode(record))

    def commit_encoded(self, data: bytes) -> bytes:
        """The commitment of a record given as its canonical bytes (``encode(record)``)."""
        return self.commit_many((data,))[0]

    def commit_many(self, records: Iterable[bytes]) -> list[bytes]:
        """``commit_encoded`` of each of ``records`` (canonical bytes), in one loop."""
        inner, outer = self._inner, self._outer
        out: list[bytes] = []
        for data in records:
            mac = inner.copy()
            mac.update(data)
            final = outer.copy()
            final.update(mac.digest())
            out.append(final.digest())
        return out

    def request_ref(self, request_id: str) -> str:
        """The keyed stand-in for a client's request id (hex): unlinkable once the key is erased."""
        return hmac.new(self.commit_key, REQUEST_DOMAIN + request_id.encode(), sha256).hexdigest()

    def seal(self, digest: bytes, record: Mapping[str, Any]) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, AESGCM(self.seal_key).encrypt(nonce, encode(dict(record)), self._aad(digest))

    def unseal(self, digest: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
        return AESGCM(self.seal_key).decrypt(nonce, ciphertext, self._aad(digest))

    def _aad(self, digest: bytes) -> bytes:
        return self.key_id.encode() + b"\x00" + digest

    def __repr__(self) -> str:  # never show key material
        return f"SubjectKey({self.key_id!r})"


def _check_subject(subject: str) -> None:
    if not subject or len(subject.encode()) > _SUBJECT_MAX or _CONTROL.search(subject):
        raise InputError(f"subject id must be 1..{_SUBJECT_MAX} bytes of printable text")


class SubjectKeys:
    """The erasable key table of one ledger (shares its database), wrapped under ``home``'s KEK file.

    ``home`` is the directory whose ``keys/subjects-<ledger id>.kek`` holds the key-encryption key
    (``ledger._kek``, FORMAT.md 3.19): created on first use, required from then on (fail closed).
    """

    def __init__(self, ledger: Ledger, home: str | os.PathLike[str]) -> None:
        self.ledger = ledger
        self._engine = ledger.store.engine
        self._table = KeyTable(ledger.store, home)
        self._deployment_cache: dict[str, SubjectKey] = {}
        #: False when the last erasure could not truncate SQLite's WAL (a reader held it open).
        self.wal_cleared = True
        #: How many live keys the last erasure re-wrapped under its bucket's new KEK generation.
        self.rewrapped = 0
        if self._table.upgraded:  # plaintext rows of schema version 2 were wrapped: clear their old pages
            self._clear_old_pages()

    @property
    def kek_path(self) -> Path:
        """This ledger's key-encryption key file."""
        return self._table.file.path

    # -- keys -----------------------------------------------------------------------

    def for_subject(self, subject: str) -> SubjectKey:
        """The subject's live key, created on first use."""
        _check_subject(subject)
        found = self._table.subject(subject, create=True)
        assert found is not None
        return SubjectKey.of(*found)

    def for_deployment(self, deployment: str) -> SubjectKey:
        """The key for predictions without a subject (one per NAME@STAGE; never erased)."""
        key = self._deployment_cache.get(deployment)
        if key is None:
            key = self._deployment_cache[deployment] = SubjectKey.of(*self._table.deployment(deployment))
        return key

    def many_for_subjects(self, subjects: Iterable[str]) -> dict[str, SubjectKey]:
        """Keys for many subjects at once (batch scoring)."""
        wanted = sorted(set(subjects))
        for s in wanted:
            _check_subject(s)
        return {s: SubjectKey.of(*found) for s, found in self._table.many(wanted).items()}

    def existing_for_subject(self, subject: str) -> SubjectKey | None:
        """The subject's live key if there is one (never creates one)."""
        _check_subject(subject)
        found = self._table.subject(subject, create=False)
        return None if found is None else SubjectKey.of(*found)

    def by_id(self, key_id: str) -> SubjectKey | None:
        """A live key by id; None once erased or never existed."""
        found = self._table.by_id(key_id)
        return None if found is None else SubjectKey.of(*found)

    def status(self, key_id: str) -> str:
        """``live``, ``erased`` or ``unknown``."""
        row = self._table.row(key_id)
        return "unknown" if row is None else ("erased" if row.secret is None else "live")

    # -- sealed inputs ----------------------------------------------------------------

    def store_sealed(self, items: Iterable[tuple[SubjectKey, bytes, Mapping[str, Any]]]) -> int:
        """Seal and store raw inputs: ``(key, commitment, record)`` each. Returns how many."""
        sealed: dict[tuple[str, bytes], tuple[bytes, bytes]] = {}
        for key, digest, record in items:  # the same input under the same key: one copy
            if (key.key_id, digest) not in sealed:
                sealed[(key.key_id, digest)] = key.seal(digest, record)
        if sealed:
            with self._table.writing() as conn:
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
        found = self._table.subject(subject, create=False)
        if found is None:
            raise InputError("no live key for that subject: nothing was recorded for it, or it was already "
                             "erased (see 'mlledger log --kind subject.erased')")
        key_id = found[0]
        event = Event.from_json({"kind": "subject.erased", "actor": actor, "subject": f"key:{key_id}",
                                 "payload": {"key_id": key_id, "request_ref": request_ref,
                                             "legal_ground": legal_ground, "reason": reason}})
        receipt = self.ledger.append(event)
        self._destroy({key_id: receipt.seq})
        return receipt

    def finish_erasures(self) -> list[str]:
        """Destroy every key whose ``subject.erased`` is on the ledger but which is still live, and
        every KEK generation that a completed rotation left in the file."""
        erased = {e.payload["key_id"]: e.seq for e in self.ledger.iter(kind="subject.erased")}
        live = self._table.live(erased) if erased else []
        if live:
            self._destroy({k: erased[k] for k in live})
        else:
            self._table.prune()
        return live

    def _destroy(self, erasures: Mapping[str, int]) -> None:
        """Rotate the erased keys' buckets (``KeyTable.rotate``), then clear old database pages."""
        try:
            self.rewrapped = self._table.rotate(erasures)
            self._clear_old_pages()
        except (DBAPIError, OSError, MlledgerError) as exc:  # the database, the KEK file, or its contents
            why = exc.orig if isinstance(exc, DBAPIError) else exc
            raise StorageError(f"the key(s) {', '.join(sorted(erasures))} could not be destroyed ({why}); the "
                               f"erasure is recorded at seq {min(erasures.values())}: fix that, then run 'mlledger "
                               f"erase --finish' to complete it (KEK file {self._table.file.path})") from None

    def _clear_old_pages(self) -> None:
        """Defence in depth (the rows are already wrapped): VACUUM on PostgreSQL, a WAL truncation on SQLite."""
        if self._table.pg:
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM subject_keys, sealed_inputs")
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
