"""The subject key-encryption key (KEK): why an erased subject stays erased in WAL and backups.

A database keeps old row images where ``DELETE`` cannot reach them: PostgreSQL's WAL and its
archives, replicas, SQLite's WAL before a checkpoint, and every backup. So subject secrets and
subject ids are never written to the database in the clear. They are wrapped under keys held
only in the ledger's KEK file, ``<home>/keys/subjects-<ledger id>.kek`` (mode 0600, never in the
database; the ledger id is the first 16 hex digits of the genesis entry's leaf hash, and the file
names the whole leaf hash, so two ledgers that share a home never share a KEK file):

* every subject (or deployment) falls in one of 256 buckets,
  ``bucket = HMAC-SHA256(pepper, "s:" || subject)[0]`` (``"d:" || NAME@STAGE`` for deployments);
* each bucket has a current generation ``g`` (the ``subject_kek`` table) and a random 32-byte
  key ``K[b][g]`` (the file). From it, by HKDF-SHA256 with distinct info strings:
  ``tag = HMAC(K_tag, subject)`` is the lookup column, and the row's secret column holds
  ``nonce || AES-256-GCM(K_wrap, nonce, secret || subject, aad = key_id)``.

Erasure *rotates* the subject's bucket: a new key ``K[b][g+1]`` is written to the file, every
other live row of the bucket is re-wrapped and re-tagged and the erased row cleared, in one
transaction; then ``K[b][g]`` is deleted from the file (whose old copy is overwritten). Every
surviving copy of the erased row is then ciphertext and a tag under a key that no longer exists.
Buckets bound the work: an erasure re-wraps about 1/256 of the live keys.

Whoever keeps a copy of the KEK file from before an erasure can still unwrap that backup: keep
the file out of database backups, on a secret store with its own retention (docs/guides).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger.errors import InputError, StorageError
from ledger.keys import read_private_file

__all__ = ["BUCKETS", "FILE_FORMAT", "BucketKey", "KekFile", "KekState", "StaleGeneration", "kek_path"]

BUCKETS: Final = 256
FILE_FORMAT: Final = "mlledger-subject-kek/1"
TAG_INFO: Final = b"mlledger/v1 subject-tag"
WRAP_INFO: Final = b"mlledger/v1 subject-wrap"
_BUCKET_INFO: Final = b"mlledger/v1 subject-bucket"


def kek_path(home: str | os.PathLike[str], ledger: str) -> Path:
    """Where a home keeps the KEK file of the ledger whose genesis leaf hash is ``ledger`` (hex)."""
    return Path(home) / "keys" / f"subjects-{ledger[:16]}.kek"


class StaleGeneration(Exception):
    """A row was wrapped under a generation this process does not hold (a rotation raced it): read again."""


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


@dataclass(frozen=True, slots=True)
class BucketKey:
    """One bucket generation's derived keys (never stored)."""

    bucket: int
    gen: int
    tag_key: bytes
    aead: AESGCM = field(repr=False)

    @classmethod
    def of(cls, bucket: int, gen: int, key: bytes) -> BucketKey:
        return cls(bucket, gen, _hkdf(key, TAG_INFO), AESGCM(_hkdf(key, WRAP_INFO)))

    def tag(self, ident: str) -> bytes:
        return hmac.new(self.tag_key, ident.encode(), sha256).digest()

    def wrap(self, key_id: str, secret: bytes, ident: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self.aead.encrypt(nonce, secret + ident.encode(), key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> tuple[bytes, str]:
        """(secret, subject) of a wrapped row; ``StorageError`` if it does not authenticate."""
        try:
            plain = self.aead.decrypt(bytes(wrapped[:12]), bytes(wrapped[12:]), key_id.encode())
        except InvalidTag:
            raise StorageError(f"subject key {key_id} does not decrypt under bucket {self.bucket} generation "
                               f"{self.gen}: the row or the KEK file was altered") from None
        return plain[:32], plain[32:].decode()


@dataclass
class KekState:
    """The parsed KEK file: its id (also kept in the database), the ledger it belongs to (genesis
    leaf hash, hex), the bucket pepper, and the keys."""

    kek_id: str
    ledger: str
    pepper: bytes
    keys: dict[int, dict[int, bytes]]

    @classmethod
    def new(cls, ledger: str) -> KekState:
        return cls(secrets.token_hex(16), ledger, secrets.token_bytes(32),
                   {b: {1: secrets.token_bytes(32)} for b in range(BUCKETS)})

    def bucket_of(self, ident: str) -> int:
        return hmac.new(self.pepper, _BUCKET_INFO + b"\x00" + ident.encode(), sha256).digest()[0]

    def to_bytes(self) -> bytes:
        doc = {"format": FILE_FORMAT, "id": self.kek_id, "ledger": self.ledger,
               "pepper": base64.b64encode(self.pepper).decode(),
               "keys": {str(b): {str(g): base64.b64encode(k).decode() for g, k in sorted(gens.items())}
                        for b, gens in sorted(self.keys.items())}}
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes, where: Path) -> KekState:
        def bad(why: str) -> InputError:
            return InputError(f"{where}: not a subject KEK file ({why}); restore it from its secure copy")

        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise bad(f"invalid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
            raise bad(f"format is not {FILE_FORMAT!r}")
        try:
            keys = {int(b): {int(g): base64.b64decode(k, validate=True) for g, k in gens.items()}
                    for b, gens in doc["keys"].items()}
            pepper = base64.b64decode(doc["pepper"], validate=True)
            kek_id, ledger = str(doc["id"]), str(doc["ledger"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise bad(f"field {exc}") from None
        if set(keys) != set(range(BUCKETS)) or len(pepper) != 32 or not all(keys.values()) or any(
                len(k) != 32 for gens in keys.values() for k in gens.values()):
            raise bad(f"it must hold {BUCKETS} non-empty buckets of 32-byte keys and a 32-byte pepper")
        return cls(kek_id, ledger, pepper, keys)


class KekFile:
    """The KEK file of one home: read, created once, rewritten atomically under a file lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> KekState:
        self._check_directory()
        try:
            raw = read_private_file(self.path)
        except InputError as exc:
            raise InputError(f"the subject key-encryption key: {exc}; it must be a plain file of this user, "
                             f"mode 0600 (restore it from its secure copy if it was replaced)") from None
        return KekState.parse(raw, self.path)

    def _check_directory(self) -> None:
        if self.path.parent.is_symlink():
            raise InputError(f"{self.path.parent} is a symbolic link; the subject key-encryption key must live in "
                             f"a real directory of this home: replace the link with the directory")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock between processes that create or rotate (readers need none)."""
        import fcntl

        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def create(self, ledger: str) -> KekState:
        """A new file for ``ledger`` (call under ``locked``); ``FileExistsError`` if one appeared meanwhile."""
        self._check_directory()
        state = KekState.new(ledger)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(state.to_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(self.path.parent)
        return state

    def replace(self, state: KekState) -> None:
        """Write ``state`` atomically (call under ``locked``), then overwrite the old file's bytes."""
        tmp = self.path.with_name(self.path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a crash: never holds anything the current file lacks
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(state.to_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            old = os.open(self.path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            old = -1
        try:
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
            if old >= 0:  # the old inode is unlinked now: zero its blocks (best effort on SSDs/CoW)
                size = os.fstat(old).st_size
                os.pwrite(old, b"\x00" * size, 0)
                os.fsync(old)
        finally:
            if old >= 0:
                os.close(old)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
