"""A read-only view of the committed ledger for checks that run while sequencing.

Checks registered with ``ledger.events.register_check`` receive one. It reads through
the sequencing transaction (so it sees exactly the entries the new ones will follow)
and decodes entries with orjson. Entries of the batch being written that come before the one
being checked are visible (the sequencer writes them first, in the same transaction, so a
refusal rolls all back); a cache built from a view must allow for that rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from ledger._store import Store, Tx

__all__ = ["LedgerView", "ViewEntry"]


@dataclass(frozen=True, slots=True)
class ViewEntry:
    seq: int
    kind: str
    actor: str
    subject: str | None
    ts: str
    leaf_hash: bytes
    payload: dict[str, Any]


class LedgerView:
    def __init__(self, store: Store, tx: Tx, size: int) -> None:
        self._store, self._tx, self.size = store, tx, size

    def _entry(self, row: Any) -> ViewEntry:
        seq, leaf, raw = row
        d = orjson.loads(bytes(raw))
        return ViewEntry(seq, d["kind"], d["actor"], d["subject"], d["ts"], bytes(leaf), d["payload"])

    def get(self, seq: int) -> ViewEntry | None:
        rows = self._tx.rows(self._tx.sql("SELECT seq, leaf_hash, entry FROM entries WHERE seq = {p}"), (seq,))
        return self._entry(rows[0]) if rows else None

    def of_kind(self, *kinds: str, subject: str | None = None) -> list[ViewEntry]:
        """Entries of these kinds (optionally about ``subject``), in seq order."""
        marks = ",".join(["{p}"] * len(kinds))
        sql = f"SELECT seq, leaf_hash, entry FROM entries WHERE kind IN ({marks})"  # noqa: S608
        params: list[Any] = list(kinds)
        if subject is not None:
            sql += " AND subject = {p}"
            params.append(subject)
        return [self._entry(r) for r in self._tx.rows(self._tx.sql(sql + " ORDER BY seq"), params)]

    @property
    def store(self) -> Store:
        return self._store

    @property
    def owner(self) -> Any:
        """What per-ledger caches key on: the store, or the view itself when it has none (a bundle)."""
        return self._store if self._store is not None else self

    @property
    def memo(self) -> dict[str, Any]:
        """Scratch space shared by the checks of one transaction (a sequencing batch)."""
        return self._tx.memo

    def leaf(self, seq: int) -> bytes | None:
        """The leaf hash of ``seq``, if that entry exists."""
        rows = self._tx.rows(self._tx.sql("SELECT leaf_hash FROM entries WHERE seq = {p}"), (seq,))
        return bytes(rows[0][0]) if rows else None

    def raw_between(self, lo: int, hi: int) -> list[tuple[int, bytes, bytes]]:
        """``(seq, leaf_hash, entry bytes)`` of every entry with ``lo <= seq < hi``, undecoded."""
        rows = self._tx.rows(self._tx.sql(
            "SELECT seq, leaf_hash, entry FROM entries WHERE seq >= {p} AND seq < {p} ORDER BY seq"), (lo, hi))
        return [(seq, bytes(leaf), bytes(raw)) for seq, leaf, raw in rows]

    def first_at_or_after(self, ts_us: int) -> int:
        """The first seq whose time is at or after ``ts_us`` (``size`` if none): times never decrease
        along the log, so a binary search over the primary key finds it in O(log n) reads."""
        lo, hi = 0, self.size
        sql = self._tx.sql("SELECT ts_us FROM entries WHERE seq = {p}")
        while lo < hi:
            mid = (lo + hi) // 2
            rows = self._tx.rows(sql, (mid,))
            if rows and rows[0][0] >= ts_us:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def origin(self) -> str:
        genesis = self.get(0)
        return "" if genesis is None else str(genesis.payload["origin"])

    def key_usable(self, key_id: str) -> bool:
        """Whether a subject key is live and no ``subject.erased`` entry names it (one statement)."""
        rows = self._tx.rows(self._tx.sql(
            "SELECT (SELECT secret IS NOT NULL FROM subject_keys WHERE key_id = {p}), "
            "EXISTS (SELECT 1 FROM entries WHERE subject = {p} AND kind = 'subject.erased')"),
            (key_id, f"key:{key_id}"))
        live, erased = rows[0]
        return bool(live) and not erased

    def usable_keys(self, key_ids: list[str]) -> set[str]:
        """Those of ``key_ids`` that ``key_usable`` accepts (two statements per 500 keys)."""
        out: set[str] = set()
        for at in range(0, len(key_ids), 500):
            part = key_ids[at : at + 500]
            marks = ",".join(["{p}"] * len(part))
            live = {r[0] for r in self._tx.rows(self._tx.sql(
                f"SELECT key_id FROM subject_keys WHERE secret IS NOT NULL AND key_id IN ({marks})"), part)}  # noqa: S608
            erased = {r[0] for r in self._tx.rows(self._tx.sql(
                f"SELECT subject FROM entries WHERE kind = 'subject.erased' AND subject IN ({marks})"),  # noqa: S608
                [f"key:{k}" for k in part])}
            out |= {k for k in live if f"key:{k}" not in erased}
        return out

    def key_status(self, key_id: str) -> str:
        """``live``, ``erased`` or ``unknown``: a key of the erasable ``subject_keys`` table."""
        rows = self._tx.rows(self._tx.sql("SELECT secret FROM subject_keys WHERE key_id = {p}"), (key_id,))
        return "unknown" if not rows else ("erased" if rows[0][0] is None else "live")
