"""Sequencing: a batch of prepared entries becomes rows, in one transaction holding the write lock.

Each entry gets the next ``seq``, the previous leaf hash as ``prev`` and the batch's time (never
earlier than the tail's). Governed kinds pass the access guards and checked kinds their checks
(``ledger.events``) against the ledger including every earlier entry of the batch: rows are
buffered and written, with the Merkle nodes they complete, before a check's first read, so a check
that reads nothing costs no statement, and a refusal rolls the whole batch back.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import sqlite3
import time
from binascii import hexlify
from collections.abc import Callable, Sequence
from typing import Any, Final

from ledger import merkle
from ledger._store import Receipt, Store, Tail, Tx
from ledger.canonical import GENESIS_PREV, MAX_PAYLOAD_BYTES, EntryPrefix, entry_bytes, format_ts
from ledger.entry_rows import EntryRows, Receipts
from ledger.errors import InputError, IntegrityError
from ledger.events import check_for, check_reads, guards, payload_model
from ledger.schema import NODE_MIN_LEVEL
from ledger.view import LedgerView

__all__ = ["Sequencer"]

_LEAF: Final = b"\x00"


class _Rows:
    """Entry rows of one sequencing batch, buffered until a read needs them or the batch ends."""

    __slots__ = ("frontier", "leaves", "rows", "tx")

    def __init__(self, tx: Tx, frontier: merkle.Frontier) -> None:
        self.tx, self.frontier = tx, frontier
        self.rows: list[tuple[Any, ...]] = []
        self.leaves: list[bytes] = []

    @staticmethod
    def reading(tx: Tx, flush: Callable[[], None]) -> Tx:
        """``tx``, writing the buffered rows before each statement."""
        return Tx(tx._exec, tx.dialect, before=flush)

    def flush(self) -> None:
        """Write the buffered entries and the Merkle nodes they complete (one statement each)."""
        if not self.rows:
            return
        tx = self.tx
        node_rows = self.frontier.extend(self.leaves, min_level=NODE_MIN_LEVEL)
        _insert(tx, _ENTRY_SQL, self.rows)
        if node_rows:
            _insert(tx, _NODE_SQL, node_rows)
        self.rows.clear()
        self.leaves.clear()


class Sequencer:
    """Assigns seq, prev and ts and writes a batch of entries in one transaction.

    Keeps the Merkle frontier of the tail it last wrote; when another process
    has appended since, the frontier is reloaded (O(log n) reads).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: tuple[int, bytes, merkle.Frontier] | None = None
        self._pending: tuple[int, bytes, merkle.Frontier] | None = None

    def write(
        self, tx: Tx, batch: Sequence[EntryPrefix | EntryRows], *, expect_size: int | None = None,
        tail: Tail | bool = False,
    ) -> list[Receipt | Receipts]:
        """Inside a transaction holding the write lock: append ``batch``; one result per item of it
        (a ``Receipt`` for an ``EntryPrefix``, ``Receipts`` for ``EntryRows``).

        ``tail``: the tail as read when the lock was taken, if it was.
        """
        store = self.store
        if tail is False or tail is True:
            tail = store.tail(tx)
        if tail is None:
            size, prev, last_ts = 0, bytes.fromhex(GENESIS_PREV), 0
        else:
            size, prev, last_ts = tail[0] + 1, tail[1], tail[2]
        if expect_size is not None and size != expect_size:
            raise IntegrityError(f"expected a ledger of {expect_size} entries, found {size}")
        if self._cache is not None and self._cache[0] == size and self._cache[1] == prev:
            frontier = self._cache[2].copy()
        else:
            if tail is not None and merkle.leaf_hash(store.entry_bytes(tx, tail[0])) != tail[1]:
                raise IntegrityError(
                    f"entry {tail[0]} (the tail) does not match its stored leaf hash; "
                    "the ledger fails verification: run 'mlledger verify'"
                )
            frontier = store.frontier(tx, size)
        ts_us = max(time.time_ns() // 1000, last_ts)
        ts = format_ts(ts_us)
        receipts: list[Receipt | Receipts] = []
        out = _Rows(tx, frontier)
        # A checked entry (key event or registered check) is checked against the ledger
        # including every entry before it in this batch: the rows buffered so far are written,
        # in the same transaction, before the check's first read (``_Rows.reading``), so its
        # view sees them (and a refusal rolls all back). A check that reads nothing (e.g. a
        # decision under a deployment key) costs no statement.
        checked = _Rows.reading(tx, out.flush)
        sha, leaf_prefix = hashlib.sha256, _LEAF
        rows, leaves = out.rows, out.leaves
        seq = size
        plans: dict[str, Callable[[Tx, EntryPrefix, int], None] | None] = {}
        for pre in batch:
            if type(pre) is EntryRows:
                mine = self._write_rows(checked, out, pre, seq, prev, ts, ts_us)
                receipts.append(Receipts(seq, mine, ts))
                seq, prev = seq + len(mine), mine[-1] if mine else prev
                continue
            assert type(pre) is EntryPrefix
            if pre.payload is not None:
                kind = pre.kind
                plan = plans[kind] if kind in plans else plans.setdefault(kind, self._plan(kind))
                if plan is not None:
                    plan(checked, pre, seq)
            data = entry_bytes(pre, seq, prev.hex(), ts)
            leaf = sha(leaf_prefix + data).digest()
            rows.append((seq, leaf, prev, ts_us, pre.kind, pre.subject, data))
            receipts.append(Receipt(seq, leaf, ts))
            leaves.append(leaf)
            prev = leaf
            seq += 1
        out.flush()
        self._pending = (seq, prev, frontier)
        return receipts

    def _write_rows(self, checked: Tx, out: _Rows, item: EntryRows, seq: int, prev: bytes, ts: str,
                    ts_us: int) -> list[bytes]:
        """Buffer the entries of ``item`` from ``seq`` after ``prev``; their leaf hashes.

        The kind's check runs first: once per distinct value of the fields it reads when it declares
        them (``register_check(..., reads=...)``: entries of its own kind do not change its outcome,
        so each distinct case is checked at its first seq), else before each entry.
        """
        kind, store = item.kind, self.store
        check = check_for(kind)
        reads = check_reads(kind)
        if check is not None and reads is not None:
            seen: set[tuple[Any, ...]] = set()
            for i, key in enumerate(item.read_keys(reads)):
                if key not in seen:
                    seen.add(key)
                    check(LedgerView(store, checked, seq + i), seq + i, item.actor, item.payload(i))
        fmt = item.entry_format(ts)
        cap = MAX_PAYLOAD_BYTES + item.overhead(ts)  # (a longer entry may still fit: its seq has digits)
        sha, leaf_prefix, subject = hashlib.sha256, _LEAF, item.subject
        rows, leaves = out.rows, out.leaves
        if check is not None and reads is None:  # checked before each entry, seeing the ones before it
            mine: list[bytes] = []
            for i, row in enumerate(item.rows):
                check(LedgerView(store, checked, seq), seq, item.actor, item.payload(i))  # (may flush)
                data = fmt % (*row, hexlify(prev), seq)
                if len(data) > cap and (error := item.too_large(data, seq, ts)) is not None:
                    raise error
                leaf = sha(leaf_prefix + data).digest()
                rows.append((seq, leaf, prev, ts_us, kind, subject, data))
                leaves.append(leaf)
                mine.append(leaf)
                prev = leaf
                seq += 1
            return mine
        start = len(leaves)
        for row in item.rows:
            data = fmt % (*row, hexlify(prev), seq)
            if len(data) > cap and (error := item.too_large(data, seq, ts)) is not None:
                raise error
            leaf = sha(leaf_prefix + data).digest()
            rows.append((seq, leaf, prev, ts_us, kind, subject, data))
            leaves.append(leaf)
            prev = leaf
            seq += 1
        return leaves[start:]

    def _plan(self, kind: str) -> Callable[[Tx, EntryPrefix, int], None] | None:
        """What sequencing an entry of ``kind`` must check (looked up once per kind and batch): access
        control for a governed kind, then the key history for a key event or the kind's check."""
        governed = payload_model(kind).GOVERNED
        key_event = kind.startswith("key.")
        check = None if key_event else check_for(kind)
        if not (governed or key_event or check):
            return None
        store = self.store

        def run(tx: Tx, pre: EntryPrefix, seq: int) -> None:
            payload = pre.payload
            assert payload is not None
            if governed:  # access control first (issue 12)
                for guard in guards():
                    guard(LedgerView(store, tx, seq), seq, kind, pre.actor, pre.subject, payload)
            if key_event:
                try:
                    store.key_history(tx).apply(seq, kind, payload)
                except IntegrityError as exc:
                    raise InputError(f"{kind}: refused: {exc}") from None
            elif check is not None:
                check(LedgerView(store, tx, seq), seq, pre.actor, payload)

        return run

    @property
    def size(self) -> int | None:
        """The ledger's size after the last committed ``write`` (None before one, or after a rollback)."""
        return None if self._cache is None else self._cache[0]

    def committed(self) -> None:
        """Call after the transaction of the last ``write`` committed."""
        self._cache = self._pending

    def rolled_back(self) -> None:
        self._cache = None


_ENTRY_SQL: Final = "INSERT INTO entries (seq, leaf_hash, prev, ts_us, kind, subject, entry) VALUES "
_NODE_SQL: Final = "INSERT INTO nodes (level, idx, hash) VALUES "
#: Bound parameters one SQLite statement may take (SQLITE_MAX_VARIABLE_NUMBER's default since 3.32).
_SQLITE_PARAMS: Final = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


def _insert(tx: Tx, head: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (tuples of equal width) with the statement ``head`` + ``VALUES`` tuples.

    On SQLite, as few multi-row statements as the parameter limit allows: one step per statement,
    so the driver releases the GIL once per thousands of rows rather than once per row (per-row
    ``executemany`` on a writer thread waited for the GIL after every row: 14k rows/s against 150k
    with another thread busy, bench/predict.py). PostgreSQL: the driver's ``executemany``.
    """
    width = len(rows[0])
    if tx.dialect != "sqlite":
        tx.many(tx.sql(_values(head, width, 1)), rows)
        return
    per = _SQLITE_PARAMS // width
    for at in range(0, len(rows), per):
        part = rows[at : at + per]
        tx._exec(tx.sql(_values(head, width, len(part))), tuple(itertools.chain.from_iterable(part)))


@functools.lru_cache(maxsize=64)
def _values(head: str, width: int, count: int) -> str:
    one = "(" + ",".join(["{p}"] * width) + ")"
    return head + ",".join([one] * count)
