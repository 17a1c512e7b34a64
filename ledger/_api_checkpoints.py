"""The Ledger's checkpoint, cosignature, key-history and proof methods (a mixin of
``ledger.api.Ledger``; state lives on the Ledger instance)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ledger import merkle
from ledger._checkpoints import Checkpoints, StoredCheckpoint
from ledger._store import root_of_head
from ledger.errors import InputError, MlledgerError
from ledger.keyhistory import KeyHistory
from ledger.note import Checkpoint, Signer, Verifier, add_signatures, sign_checkpoint, verify_cosignatures

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ledger._store import Store, Writer

__all__ = ["_CheckpointsMixin"]


class _CheckpointsMixin:
    _store: Store
    _signer: Signer | None
    _every: int | None
    _cps: Checkpoints
    _last_cp_size: int | None
    _mutex: threading.Lock
    _writer: Writer | None
    checkpoint_error: MlledgerError | None

    def _read(self) -> Connection:
        raise NotImplementedError

    # -- checkpoints and proofs ----------------------------------------------------

    def _auto_checkpoint(self, size: int | None) -> None:
        """A due automatic checkpoint (``size`` None: on close, if anything is new).

        Runs after the entries committed, so a failure must not turn the append
        into an error: it is kept in ``checkpoint_error`` for the caller to report.
        """
        if size is not None and not self._checkpoint_due(size):
            return
        try:
            self._checkpoint_locked(only_if_new=True)
            self.checkpoint_error = None
        except MlledgerError as exc:
            self.checkpoint_error = exc

    def _checkpoint_due(self, size: int) -> bool:
        if self._signer is None or self._every is None:
            return False
        if self._last_cp_size is None:
            with self._read() as conn, conn.begin():
                last = self._cps.latest(self._store.tx(conn))
            self._last_cp_size = last.size if last else 0
        return size - self._last_cp_size >= self._every

    def checkpoint(self) -> StoredCheckpoint:
        """Sign and store a checkpoint of the whole log now (or return the latest if current)."""
        if self._signer is None:
            raise InputError("no checkpoint key loaded: open the ledger with its signer")
        with self._mutex:
            return self._checkpoint_locked(only_if_new=False)

    def _checkpoint_locked(self, *, only_if_new: bool) -> StoredCheckpoint:
        signer = self._signer
        assert signer is not None
        if self._writer is None:
            self._writer = self._store.writer()
        writer = self._writer
        try:
            tx = writer.begin()
            head = root_of_head(self._store, tx)
            last = self._cps.latest(tx)
            self._cps.check_consistent(tx, head.size, last)
            if last is not None and last.size == head.size:
                writer.rollback()
                self._last_cp_size = last.size
                return last
            history = self._store.key_history(tx)
            current = history.current_key()
            if current.vkey != signer.verifier_key:
                raise InputError(
                    f"the loaded key {signer.verifier_key} is not the log's current checkpoint key "
                    f"{current.vkey}"
                )
            note = sign_checkpoint(Checkpoint(history.origin, head.size, head.root), signer)
            stored = self._cps.insert(tx, size=head.size, root=head.root, note=note,
                                      ts_us=time.time_ns() // 1000)
            writer.commit()
        except BaseException:
            writer.rollback()
            raise
        self._last_cp_size = stored.size
        return stored

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every stored checkpoint, oldest first, with its cosignatures."""
        with self._read() as conn, conn.begin():
            return self._cps.all(self._store.tx(conn))

    def latest_checkpoint(self, *, covering: int | None = None) -> StoredCheckpoint | None:
        """The newest checkpoint, or the newest whose tree contains seq ``covering``."""
        with self._read() as conn, conn.begin():
            tx = self._store.tx(conn)
            return self._cps.latest(tx) if covering is None else self._cps.covering(tx, covering)

    def checkpoint_of_size(self, size: int) -> StoredCheckpoint | None:
        with self._read() as conn, conn.begin():
            return self._cps.of_size(self._store.tx(conn), size)

    def attach_cosignature(self, size: int, line: str, witness: Verifier) -> bool:
        """Verify a witness cosignature on the checkpoint of ``size`` and store it.

        Returns False if that witness had already cosigned it.
        """
        cp = self.checkpoint_of_size(size)
        if cp is None:
            raise InputError(f"no checkpoint of size {size}; list them with 'mlledger checkpoint list'")
        text = line if line.endswith("\n") else line + "\n"
        verify_cosignatures(add_signatures(cp.note, [text]), [witness], 1)
        with self._read() as conn, conn.begin():
            return self._cps.insert_cosignature(self._store.tx(conn), cp.id, str(witness), text,
                                                time.time_ns() // 1000)

    def key_history(self) -> KeyHistory:
        with self._read() as conn, conn.begin():
            return self._store.key_history(self._store.tx(conn))

    def root_at(self, size: int) -> bytes:
        """The Merkle root of the first ``size`` entries, from stored nodes."""
        if size == 0:
            return merkle.EMPTY_ROOT
        return self._ranges(size, [(0, size)])[0]

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``seq`` in the tree of ``size``: O(log n) reads."""
        if not 0 <= seq < size:
            raise InputError(f"seq {seq} is not in a tree of size {size}")
        return self._ranges(size, merkle.inclusion_ranges(seq, size))

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 consistency proof from tree size ``old`` to ``new``."""
        if not 0 < old <= new:
            raise InputError(f"a consistency proof needs 0 < old <= new, got {old} and {new}")
        return self._ranges(new, merkle.consistency_ranges(old, new))

    def _ranges(self, size: int, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Range hashes for a tree of ``size``, in three reads: tail, nodes, low leaves."""
        if size < 0:
            raise InputError(f"tree size {size} is negative")
        with self._read() as conn:
            tx = self._store.raw_tx(conn)
            tail = self._store.tail(tx)
            have = 0 if tail is None else tail[0] + 1
            if size > have:
                raise InputError(f"tree size {size} is larger than the ledger ({have} entries)")
            return self._store.range_hashes(tx, ranges)

