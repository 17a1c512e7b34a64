"""A checkpoint witness (C2SP tlog-witness): cosign a log's checkpoint only if it extends the last.

Request (``add-checkpoint`` body, byte for byte): ``old <size>\\n``, then zero to 63 consistency
proof hashes (canonical base64 of 32 bytes, one a line), then an empty line, then the signed
checkpoint note. The response is one cosignature line (c2sp.org/tlog-cosignature).

Invariants:

* The witness keeps one record per (log origin, log verifier key): the size and root of the
  latest checkpoint it cosigned. A record only ever moves to a checkpoint that a verified
  consistency proof links to it, so the recorded roots of one log form a single history.
* It cosigns only a checkpoint signed by the given log key and naming that key as its origin.
* The request's ``old`` must equal the recorded size (0 when none), else ConflictError names
  the recorded size. A smaller checkpoint is a RollbackError, an equal size with another root a
  ForkError, a proof that does not link the roots a ProofError; nothing changes on any error.
* Check and persist are one step: under an exclusive ``flock`` on ``<state>.lock`` the state is
  read, checked, written to ``<state>.tmp``, fsynced, renamed over the state and the directory
  fsynced. A process killed at any point leaves the old or the new state, never a torn one.
* The cosignature is computed only after the new record is durable.

verify_request is pure; WitnessState does the storage.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from ledger import merkle, note
from ledger.errors import InputError, IntegrityError, ProofError, StorageError
from ledger.events import describe_validation_error
from ledger.note import Checkpoint, Signer, Verifier

__all__ = [
    "MAX_PROOF_LINES",
    "STATE_FORMAT",
    "AddCheckpointRequest",
    "ConflictError",
    "ForkError",
    "LogRecord",
    "RollbackError",
    "WitnessState",
    "add_checkpoint",
    "attach_cosignatures",
    "make_request",
    "parse_request",
    "verify_request",
]

MAX_PROOF_LINES = 63
STATE_FORMAT = "mlledger-witness-state/v1"
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")
_MAX_U64 = 2**64 - 1
_MAX_TIME = 2**63 - 1


class ConflictError(IntegrityError):
    """The request's old size is not the recorded size (tlog-witness "409 Conflict")."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class RollbackError(IntegrityError):
    """The checkpoint is smaller than the one the witness has cosigned."""


class ForkError(IntegrityError):
    """The checkpoint has the recorded size but another root."""


@dataclass(frozen=True)
class AddCheckpointRequest:
    old_size: int
    proof: tuple[bytes, ...]
    note: bytes


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def parse_request(data: bytes) -> AddCheckpointRequest:
    """Parse an add-checkpoint body strictly; InputError names the line."""
    split = data.find(b"\n\n")
    if split < 0:
        raise InputError("request: no empty line after the 'old <size>' and proof lines")
    try:
        lines = data[:split].decode("ascii").split("\n")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"request line {line}: non-ASCII byte before the checkpoint") from None
    m = _OLD.fullmatch(lines[0])
    if not m or int(m.group(1)) > _MAX_U64:
        raise InputError(
            f"request line 1: expected 'old <size>' (decimal, no leading zeros), got {lines[0]!r}"
        )
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise InputError(f"request: {len(lines) - 1} proof lines, at most {MAX_PROOF_LINES}")
    proof = []
    for n, text in enumerate(lines[1:], 2):
        try:
            h = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            h = b""
        if len(h) != merkle.HASH_SIZE or _b64(h) != text:
            raise InputError(
                f"request line {n}: expected a proof hash (canonical base64 of 32 bytes), "
                f"got {text!r}"
            )
        proof.append(h)
    body = data[split + 2 :]
    try:
        Checkpoint.parse_body(note.Note.parse(body).body)
    except InputError as exc:
        raise InputError(f"request: checkpoint note starting on line {len(lines) + 2}: {exc}") from None
    return AddCheckpointRequest(int(m.group(1)), tuple(proof), body)


def make_request(old_size: int, proof: Sequence[bytes], checkpoint_note: bytes) -> bytes:
    """The add-checkpoint body a log sends: old size, proof from it, and the signed note."""
    if isinstance(old_size, bool) or not 0 <= old_size <= _MAX_U64:
        raise ValueError(f"old size {old_size!r} is not in 0..2^64-1")
    if len(proof) > MAX_PROOF_LINES or any(len(h) != merkle.HASH_SIZE for h in proof):
        raise ValueError(f"proof must be at most {MAX_PROOF_LINES} hashes of 32 bytes")
    if old_size == 0 and proof:
        raise ValueError("a proof from old size 0 must be empty")
    head = "".join(f"{line}\n" for line in [f"old {old_size}", *map(_b64, proof)])
    data = (head + "\n").encode() + checkpoint_note
    parse_request(data)
    return data


def attach_cosignatures(checkpoint_note: bytes, response: str) -> bytes:
    """The note with a witness response's cosignature lines appended (not verified here)."""
    if not response.endswith("\n"):
        raise InputError("witness response: must be signature lines, each ending in a newline")
    return note.add_signatures(checkpoint_note, response[:-1].split("\n"))


class LogRecord(BaseModel):
    """What the witness remembers about one log: its latest cosigned size and root."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    origin: str
    log_vkey: str
    size: int = Field(ge=0, le=_MAX_U64)
    root_hex: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    updated: int = Field(ge=0, le=_MAX_TIME)

    @model_validator(mode="after")
    def _key_names_origin(self) -> Self:
        try:
            key = Verifier.parse(self.log_vkey)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        if key.name != self.origin or key.kind != "ed25519":
            raise ValueError(f"log_vkey is not a note key named {self.origin!r}")
        return self

    @property
    def root(self) -> bytes:
        return bytes.fromhex(self.root_hex)


class _StateFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    format: Literal["mlledger-witness-state/v1"]
    logs: tuple[LogRecord, ...]


def verify_request(
    request: AddCheckpointRequest, log_key: Verifier, record: LogRecord | None
) -> Checkpoint:
    """Steps (1)-(5) of add_checkpoint: the checkpoint to cosign, or an exception. Pure."""
    # (1): the checkpoint is signed by the log key and its origin is that key's name (no replay
    #      of another log's checkpoint).
    cp = note.open_checkpoint(request.note, log_key)
    # (2): the recorded size and root for this origin and key; first sight is size 0.
    size, root = (record.size, record.root) if record else (0, merkle.EMPTY_ROOT)
    # (3): the request must start from the recorded size.
    if request.old_size != size:
        seen = f"has cosigned {cp.origin} up to size {size}" if record else (
            f"has never cosigned {cp.origin} (size 0)")
        raise ConflictError(
            f"conflict: the request says old {request.old_size} but the witness {seen}; "
            f"re-request with 'old {size}' and a consistency proof from size {size}", size=size)
    what = f"{cp.origin}: checkpoint size {cp.size} root {cp.root.hex()}"
    mine = f"the cosigned size {size} root {root.hex()}"
    # (4): never go back, never accept a second root for the same size.
    if cp.size < size:
        raise RollbackError(f"rollback refused: {what} is smaller than {mine}")
    if cp.size == size and record is not None and cp.root != root:
        raise ForkError(f"fork refused: {what} differs from {mine}")
    # (5): the proof links the recorded root to the new one (empty from size 0 or for the same
    #      checkpoint).
    try:
        merkle.verify_consistency(size, cp.size, root, cp.root, request.proof)
    except ProofError as exc:
        if record is None:
            raise ProofError(f"{what} does not extend the empty tree: {exc}") from None
        raise ProofError(f"fork refused: {what} is not proven consistent with {mine}: {exc}") from None
    return cp


class WitnessState:
    """The witness's records in one JSON file, updated atomically under ``<state>.lock``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = path.with_name(path.name + ".lock")
        self._tmp = path.with_name(path.name + ".tmp")

    @classmethod
    def create(cls, path: Path) -> WitnessState:
        """Write an empty state; refuse to overwrite one."""
        state = cls(path)
        with state._locked(create=True):
            if path.exists():
                raise InputError(f"{path} already exists; refusing to overwrite witness state")
            state._write({})
        return state

    def records(self) -> list[LogRecord]:
        """All records, by origin (a reader sees a whole state: writes are renames)."""
        return sorted(self._read().values(), key=lambda r: (r.origin, r.log_vkey))

    def get(self, origin: str, log_vkey: str) -> LogRecord | None:
        return self._read().get((origin, log_vkey))

    @contextmanager
    def update(self) -> Iterator[dict[tuple[str, str], LogRecord]]:
        """Lock, load, yield the records to change, then persist them atomically if changed."""
        with self._locked():
            records = self._read()
            before = dict(records)
            yield records
            if records != before:
                self._write(records)

    @contextmanager
    def _locked(self, *, create: bool = False) -> Iterator[None]:
        if not create and not self.path.exists():
            self._read()  # raises the "no witness state" error
        try:
            fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"{self._lock}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> dict[tuple[str, str], LogRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise InputError(
                f"{self.path}: no witness state here; create it with 'mlledger witness init'"
            ) from None
        except OSError as exc:
            raise InputError(f"{self.path}: {exc.strerror}") from None
        try:
            state = _StateFile.model_validate_json(data)
        except ValidationError as exc:
            raise IntegrityError(
                f"{self.path}: corrupt witness state: {describe_validation_error(exc, 'state')}"
            ) from None
        records: dict[tuple[str, str], LogRecord] = {}
        for r in state.logs:
            if records.setdefault((r.origin, r.log_vkey), r) is not r:
                raise IntegrityError(f"{self.path}: corrupt witness state: {r.origin} twice")
        return records

    def _write(self, records: dict[tuple[str, str], LogRecord]) -> None:
        logs = [r.model_dump() for _, r in sorted(records.items())]
        data = json.dumps({"format": STATE_FORMAT, "logs": logs}, indent=2, sort_keys=True) + "\n"
        try:
            # A stale .tmp from a killed writer is harmless: we hold the lock and truncate it.
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(self._tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise StorageError(f"cannot write witness state {self.path}: {exc.strerror}") from None


def add_checkpoint(
    state_path: Path,
    request: bytes | AddCheckpointRequest,
    *,
    log_key: Verifier,
    witness: Signer,
    now: int | None = None,
) -> str:
    """Verify an add-checkpoint request against the witness state; return the cosignature line.

    Raises InputError (malformed request, bad witness key, no state), SignatureError (wrong log
    or signature), ConflictError, RollbackError, ForkError or ProofError, and then the state is
    unchanged; StorageError if the state cannot be written.
    """
    # (0): refuse a key or time that could not cosign, before anything is persisted.
    timestamp = int(time.time()) if now is None else now
    if witness.kind != "cosignature":
        raise InputError(f"witness key {witness.name} is a note (0x01) key, not a cosignature key")
    if isinstance(timestamp, bool) or not 0 <= timestamp <= _MAX_TIME:
        raise InputError(f"cosignature time {timestamp!r} is not in 0..2^63-1")
    req = request if isinstance(request, AddCheckpointRequest) else parse_request(request)
    state, log_vkey = WitnessState(Path(state_path)), str(log_key)
    with state.update() as records:
        # (1)-(5): signature, recorded state, old size, rollback and fork, consistency proof.
        key = (log_key.name, log_vkey)
        old = records.get(key)
        cp = verify_request(req, log_key, old)
        # (6): persist the new size and root (update() writes atomically if they changed).
        if old is None or (old.size, old.root) != (cp.size, cp.root):
            records[key] = LogRecord(origin=cp.origin, log_vkey=log_vkey, size=cp.size,
                                     root_hex=cp.root.hex(), updated=timestamp)
    # (7): only now, cosign the checkpoint text exactly as received.
    return note.cosign(req.note, witness, timestamp)
