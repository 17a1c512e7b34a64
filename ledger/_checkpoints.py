"""Stored checkpoints and cosignatures, and the log's rule for signing a new one.

The log never signs two inconsistent checkpoints: before signing size n it
recomputes, from the stored entries and nodes, the root at the size of its latest
checkpoint and refuses to sign if that root changed or the log shrank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ledger._store import Store, Tx
from ledger.errors import IntegrityError

__all__ = ["DEFAULT_CHECKPOINT_EVERY", "Checkpoints", "StoredCheckpoint", "StoredCosignature"]

#: Automatic checkpoints: after this many new entries, and on close (docs/FORMAT.md 6).
DEFAULT_CHECKPOINT_EVERY: Final = 1000

_COLS: Final = "id, size, root, note, ts_us"


@dataclass(frozen=True, slots=True)
class StoredCosignature:
    witness: str  # the witness vkey
    line: str  # the C2SP signature line, with its final newline


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    id: int
    size: int
    root: bytes
    note: bytes  # the log-signed note, exactly as signed
    ts_us: int
    cosignatures: tuple[StoredCosignature, ...] = ()

    def with_cosignatures(self) -> bytes:
        """The note with every stored witness cosignature line appended."""
        from ledger.note import add_signatures

        if not self.cosignatures:
            return self.note
        return add_signatures(self.note, [c.line for c in self.cosignatures])


class Checkpoints:
    """Reads and writes of the ``checkpoints`` and ``cosignatures`` tables."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _build(self, tx: Tx, rows: Sequence[Any]) -> list[StoredCheckpoint]:
        if not rows:
            return []
        ids = [r[0] for r in rows]
        cos: dict[int, list[StoredCosignature]] = {}
        marks = ",".join(["{p}"] * len(ids))
        for cid, witness, line in tx.rows(
            tx.sql(f"SELECT checkpoint_id, witness, line FROM cosignatures WHERE checkpoint_id IN ({marks}) "  # noqa: S608
                   "ORDER BY checkpoint_id, ts_us, witness"), ids):
            cos.setdefault(cid, []).append(StoredCosignature(witness, line))
        return [StoredCheckpoint(r[0], r[1], bytes(r[2]), bytes(r[3]), r[4], tuple(cos.get(r[0], ())))
                for r in rows]

    def latest(self, tx: Tx) -> StoredCheckpoint | None:
        rows = tx.rows(f"SELECT {_COLS} FROM checkpoints ORDER BY id DESC LIMIT 1")  # noqa: S608
        built = self._build(tx, rows)
        return built[0] if built else None

    def all(self, tx: Tx) -> list[StoredCheckpoint]:
        return self._build(tx, tx.rows(f"SELECT {_COLS} FROM checkpoints ORDER BY id"))  # noqa: S608

    def covering(self, tx: Tx, seq: int) -> StoredCheckpoint | None:
        """The latest checkpoint whose tree contains ``seq``."""
        rows = tx.rows(tx.sql(f"SELECT {_COLS} FROM checkpoints WHERE size > {{p}} "  # noqa: S608
                              "ORDER BY id DESC LIMIT 1"), (seq,))
        built = self._build(tx, rows)
        return built[0] if built else None

    def of_size(self, tx: Tx, size: int) -> StoredCheckpoint | None:
        rows = tx.rows(tx.sql(f"SELECT {_COLS} FROM checkpoints WHERE size = {{p}} "  # noqa: S608
                              "ORDER BY id DESC LIMIT 1"), (size,))
        built = self._build(tx, rows)
        return built[0] if built else None

    def check_consistent(self, tx: Tx, size: int, last: StoredCheckpoint | None) -> None:
        """Refuse to sign ``size`` if the log no longer extends the latest checkpoint."""
        if last is None:
            return
        if size < last.size:
            raise IntegrityError(
                f"the log has {size} entries but checkpoint {last.id} already covers {last.size}: "
                "entries were removed; refusing to sign"
            )
        root = self.store.range_hashes(tx, [(0, last.size)])[0]
        if root != last.root:
            raise IntegrityError(
                f"the first {last.size} entries no longer hash to the root of checkpoint {last.id} "
                f"({root.hex()} != {last.root.hex()}): history was rewritten; refusing to sign"
            )

    def insert(self, tx: Tx, *, size: int, root: bytes, note: bytes, ts_us: int) -> StoredCheckpoint:
        rows = tx.rows("SELECT max(id) FROM checkpoints")
        cid = (rows[0][0] or 0) + 1
        tx.many(tx.sql("INSERT INTO checkpoints (id, size, root, note, ts_us) VALUES ({p},{p},{p},{p},{p})"),
                [(cid, size, root, note, ts_us)])
        return StoredCheckpoint(cid, size, root, note, ts_us)

    def insert_cosignature(self, tx: Tx, checkpoint_id: int, witness: str, line: str, ts_us: int) -> bool:
        """Store a witness line once; False if this witness already cosigned it."""
        have = tx.rows(tx.sql("SELECT 1 FROM cosignatures WHERE checkpoint_id = {p} AND witness = {p}"),
                       (checkpoint_id, witness))
        if have:
            return False
        tx.many(tx.sql("INSERT INTO cosignatures (checkpoint_id, witness, line, ts_us) "
                       "VALUES ({p},{p},{p},{p})"), [(checkpoint_id, witness, line, ts_us)])
        return True
