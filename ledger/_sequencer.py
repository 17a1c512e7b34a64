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
from dataclasses import dataclass
from typing import Any, Final

from ledger import merkle
from ledger._store import Receipt, Store, Tail, Tx
from ledger.canonical import GENESIS_PREV, MAX_PAYLOAD_BYTES, EntryPrefix, entry_bytes, format_ts
from ledger.entry_rows import EntryRows, Receipts, refuse_kind
from ledger.errors import InputError, IntegrityError
from ledger.events import check_for, check_reads, guards, many_check_for, payload_model
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
        #: (size, last leaf hash, Merkle frontier, last ts_us) after the last committed write
        self._cache: tuple[int, bytes, merkle.Frontier, int] | None = None
        self._pending: tuple[int, bytes, merkle.Frontier, int] | None = None

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
        seq, end_ts = size, last_ts  # (end_ts: the time of the last entry)
        plans: dict[str, Callable[[Tx, EntryPrefix, int], None] | None] = {}
        for pre in batch:
            if type(pre) is EntryRows:
                refuse_kind(pre.kind)  # (whoever hands rows in, not only ``Ledger.append_rows``)
            if (type(pre) is EntryRows and seq == size and (ahead := pre.ahead) is not None
                    and ahead.fits(seq, prev, last_ts)):
                # sequenced ahead of the lock (``ahead``) after the tail that is there: write its rows
                self._check_rows(checked, pre, seq)
                out.flush()
                _insert(tx, _ENTRY_SQL, ahead.rows)
                if ahead.nodes:
                    _insert(tx, _NODE_SQL, ahead.nodes)
                out.frontier = frontier = ahead.frontier.copy()
                receipts.append(Receipts(seq, ahead.leaves, ahead.ts))
                seq, prev, end_ts = seq + len(ahead.leaves), ahead.leaves[-1], ahead.ts_us
                ts_us, ts = end_ts, ahead.ts  # one time for the whole transaction (not before the tail's)
                continue
            end_ts = ts_us
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
        self._pending = (seq, prev, frontier, end_ts)
        return receipts

    def _write_rows(self, checked: Tx, out: _Rows, item: EntryRows, seq: int, prev: bytes, ts: str,
                    ts_us: int) -> list[bytes]:
        """Buffer the entries of ``item`` from ``seq`` after ``prev``; their leaf hashes.

        The kind's check runs first when it declares the fields it reads (``_check_rows``), else
        before each entry, seeing the ones before it (a read writes the buffered rows first).
        """
        kind, store = item.kind, self.store
        check = check_for(kind)
        if check is None or check_reads(kind) is not None:
            self._check_rows(checked, item, seq)
            start = len(out.leaves)
            _format_rows(item, seq, prev, ts, ts_us, out.rows, out.leaves)
            return out.leaves[start:]
        mine: list[bytes] = []
        for i in range(len(item)):
            check(LedgerView(store, checked, seq + i), seq + i, item.actor, item.payload(i))  # (may flush)
            _format_rows(item, seq + i, prev, ts, ts_us, out.rows, out.leaves, i)
            prev = out.leaves[-1]
            mine.append(prev)
        return mine

    def _check_rows(self, checked: Tx, item: EntryRows, seq: int) -> None:
        """Run the check of ``item``'s kind, which declares the fields it reads
        (``register_check(..., reads=...)``), once per distinct value of them: entries of its own kind
        do not change its outcome, so each distinct case is checked at its first seq, or all of them
        at once at ``seq`` by the kind's check of many (``register_many_check``) if it has one."""
        check, reads = check_for(item.kind), check_reads(item.kind)
        if check is None:
            return
        assert reads is not None
        first = item.cases(reads)
        many = many_check_for(item.kind)
        if many is not None and len(first) > 1:
            many(LedgerView(self.store, checked, seq), seq, item.actor, [item.payload(i) for i in first.values()])
            return
        for i in first.values():
            check(LedgerView(self.store, checked, seq + i), seq + i, item.actor, item.payload(i))

    def ahead(self, item: EntryRows, after: EntryRows | None) -> Ahead | None:
        """Sequence ``item`` now, outside the write lock, as if appended right after ``after`` (whose
        ``ahead`` is set) or, with None, after this sequencer's last committed write: entry bytes, leaf
        hashes and Merkle nodes. ``write`` uses them if the tail it finds under the lock is the one
        assumed, and sequences ``item`` again otherwise. None when the kind checks each entry, or
        ``after`` was not sequenced ahead or, as this sequencer's last commit shows, was not written
        where it assumed (then there is nothing to build on: sequence ``item`` after that commit,
        with ``after`` None, once ``after`` is committed)."""
        if check_for(item.kind) is not None and check_reads(item.kind) is None:
            return None
        if after is not None:
            base = after.ahead
            cache = self._cache
            if base is None or (cache is not None and cache[0] >= base.size and cache[:2] != (base.size, base.prev)
                                and cache[:2] != (base.end, base.leaves[-1])):
                return None  # ``after`` was not sequenced ahead, or was not written (or not next) as assumed
            size, prev, frontier, last_ts = base.end, base.leaves[-1], base.frontier, base.ts_us
        elif (cache := self._cache) is not None:
            if item.ahead is not None and cache[:2] == (item.ahead.size, item.ahead.prev):
                return item.ahead  # (sequenced ahead already, and still after this sequencer's last commit)
            size, prev, frontier, last_ts = cache
        else:  # the tail as committed now
            with self.store.engine.connect() as conn, conn.begin():
                tx = self.store.tx(conn)
                tail = self.store.tail(tx)
                size, prev, last_ts = (0, bytes(32), 0) if tail is None else (tail[0] + 1, tail[1], tail[2])
                frontier = self.store.frontier(tx, size)
        ts_us = max(time.time_ns() // 1000, last_ts)
        ts = format_ts(ts_us)
        rows: list[tuple[Any, ...]] = []
        leaves: list[bytes] = []
        _format_rows(item, size, prev, ts, ts_us, rows, leaves)
        if not leaves:
            return None
        frontier = frontier.copy()
        nodes = frontier.extend(leaves, min_level=NODE_MIN_LEVEL)
        return Ahead(size, prev, ts_us, ts, rows, leaves, nodes, frontier)

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


def _format_rows(item: EntryRows, seq: int, prev: bytes, ts: str, ts_us: int, rows: list[tuple[Any, ...]],
                 leaves: list[bytes], only: int | None = None) -> None:
    """Append the entry rows and leaf hashes of ``item``'s entries (or of entry ``only``) from ``seq``
    after ``prev`` at ``ts``, refusing a payload over the limit.

    The rows hold the entry, leaf hash and prev as ``bytearray``: the sqlite3 module binds one
    without a lookup in its adapter registry, which it does for every ``bytes`` (0.35 us each,
    three per row, with the interpreter lock held); PostgreSQL's driver takes either.
    """
    fmt = bytearray(item.entry_format(ts))  # bytearray % args is a bytearray
    cap = MAX_PAYLOAD_BYTES + item.overhead(ts)  # (a longer entry may still fit: its seq has digits)
    sha, leaf_prefix, kind, subject = hashlib.sha256, _LEAF, item.kind, item.subject
    prev_row = bytearray(prev)
    first = seq - (only or 0)  # the seq of row 0
    for row in item.rows if only is None else item.rows[only : only + 1]:
        data = fmt % (*row, hexlify(prev), seq)
        if len(data) > cap and (error := item.too_large(bytes(data), seq, ts, seq - first)) is not None:
            raise error
        leaf = sha(leaf_prefix + data).digest()
        leaf_row = bytearray(leaf)
        rows.append((seq, leaf_row, prev_row, ts_us, kind, subject, data))
        leaves.append(leaf)
        prev, prev_row = leaf, leaf_row
        seq += 1


@dataclass(frozen=True, slots=True)
class Ahead:
    """``EntryRows`` sequenced ahead of the write lock (``Sequencer.ahead``): valid after the tail
    (``size``, ``prev``) it assumed, if that tail is not later than its time."""

    size: int
    prev: bytes
    ts_us: int
    ts: str
    rows: list[tuple[Any, ...]]
    leaves: list[bytes]
    nodes: list[tuple[int, int, bytes]]
    frontier: merkle.Frontier  # after its entries

    @property
    def end(self) -> int:
        return self.size + len(self.leaves)

    def fits(self, size: int, prev: bytes, last_ts: int) -> bool:
        """Whether this was sequenced after the tail ``size``, ``prev`` (whose hash pins everything
        before it, so the Merkle frontier too) and at a time not earlier than ``last_ts``."""
        return size == self.size and prev == self.prev and last_ts <= self.ts_us


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
