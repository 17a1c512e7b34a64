"""Many entries of one kind, actor and subject whose payloads differ only in a few fields.

The batch fast path (``backends._batch``): instead of one encoded prefix per entry, the caller
gives one payload format (``ledger.canonical.row_format``) and a tuple of slot values per entry.
Under the write lock the sequencer formats each whole entry at once, ``prev`` and ``seq``
included (``EntryRows.entry_format``), which is the same bytes ``ledger.canonical.entry_bytes``
gives (tests/unit/ledger/test_entry_rows.py).

``Receipts`` is what such an append returns: the receipts of a contiguous run of entries, built
on demand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import orjson

from ledger._store import Receipt
from ledger.canonical import MAX_PAYLOAD_BYTES, _head, _name
from ledger.errors import InputError
from ledger.events import check_name, payload_model

if TYPE_CHECKING:
    from ledger._sequencer import Ahead

__all__ = ["EntryRows", "Receipts", "refuse_kind"]


def refuse_kind(kind: str) -> None:
    """Refuse rows of a kind whose access guards or key history must see each entry on its own."""
    if payload_model(kind).GOVERNED or kind.startswith("key."):
        raise InputError(f"kind: {kind} cannot be appended as rows; use append_many")


class EntryRows:
    """``len(rows)`` entries: entry ``i`` has payload ``payload_format % rows[i]``.

    ``payload_format`` and ``slots``, the names of the fields each row's values fill in that order,
    come from ``row_format(const, slots)``; the caller vouches, as for ``ledger.canonical.prefix``,
    that each value fits its slot's kind and that each payload is a valid payload of ``kind``. The
    kind's check sees each payload as its stored bytes decode (``payload``), never a copy the caller
    keeps beside them. Rows are grouped for the check by their slot values, so a "json" value must
    be exactly one canonical JSON value (one that spliced in a second key could hide it from the
    check; deep verification refuses such bytes).
    """

    __slots__ = ("actor", "ahead", "head", "kind", "payload_format", "rows", "slots", "subject", "subject_json")

    def __init__(self, kind: str, actor: str, subject: str | None, payload_format: bytes, slots: Sequence[str],
                 rows: Sequence[tuple[Any, ...]]) -> None:
        if len(set(slots)) != len(slots) or (rows and set(map(len, rows)) != {len(slots)}):
            raise ValueError("EntryRows: slots must name each value of a row once")
        check_name(actor, "actor")  # as an Event does: verification refuses what it refuses
        if subject is not None:
            check_name(subject, "subject")
        self.kind, self.actor, self.subject = kind, actor, subject
        self.head = _head(kind, actor)
        self.subject_json = _name(subject, "subject")
        self.payload_format = payload_format
        self.slots = tuple(slots)
        self.rows = rows
        #: Set by ``Ledger.sequence_ahead``: these entries sequenced outside the write lock.
        self.ahead: Ahead | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def payload(self, i: int) -> dict[str, Any]:
        """The payload of entry ``i``, decoded from its bytes (as a reader of the entry sees it)."""
        return orjson.loads(self.payload_format % self.rows[i])  # type: ignore[no-any-return]

    def cases(self, fields: Sequence[str]) -> dict[tuple[Any, ...], int]:
        """The index of the first entry of each distinct value of ``fields`` (keyed by their slot
        values; a field that is not a slot is the same in every entry)."""
        at = [self.slots.index(f) for f in fields if f in self.slots]
        first: dict[tuple[Any, ...], int] = {}
        if not at:
            return {(): 0} if self.rows else {}
        for i, key in enumerate(zip(*[[row[j] for row in self.rows] for j in at], strict=True)):
            first.setdefault(key, i)
        return first

    def entry_format(self, ts: str) -> bytes:
        """A %-format of the whole entry at time ``ts``: takes a row's slot values, then ``prev`` (hex,
        bytes) and ``seq``. Keys in canonical order: actor, kind, payload, prev, seq, subject, ts, v."""
        return b"".join((self.head.replace(b"%", b"%%"), self.payload_format, b',"prev":"%s","seq":%d,"subject":',
                         self.subject_json.replace(b"%", b"%%"), b',"ts":"', ts.encode(), b'","v":1}'))

    def overhead(self, ts: str) -> int:
        """Bytes of an entry that are not its payload, but for the digits of its seq."""
        return len(self.head) + len(b',"prev":"') + 64 + len(b'","seq":,"subject":') + len(self.subject_json) + len(
            b',"ts":"') + len(ts) + len(b'","v":1}')

    def too_large(self, data: bytes, seq: int, ts: str, row: int | None = None) -> InputError | None:
        """The error for entry ``data`` (of row ``row``) at ``seq`` if its payload is over the limit."""
        size = len(data) - self.overhead(ts) - len(str(seq))
        if size <= MAX_PAYLOAD_BYTES:
            return None
        which = "" if row is None else f"row {row} of {len(self.rows)}, "
        return InputError(f"payload of the {self.kind} entry at seq {seq} ({which}nothing of these rows was "
                          f"written): {size} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit; store large content "
                          "as an artifact and record its hash")


class Receipts(Sequence[Receipt]):
    """The receipts of ``len(leaf_hashes)`` entries from seq ``first``, all written at ``ts``."""

    __slots__ = ("first", "leaf_hashes", "ts")

    def __init__(self, first: int, leaf_hashes: list[bytes], ts: str) -> None:
        self.first, self.leaf_hashes, self.ts = first, leaf_hashes, ts

    @property
    def seqs(self) -> range:
        return range(self.first, self.first + len(self.leaf_hashes))

    def __len__(self) -> int:
        return len(self.leaf_hashes)

    @overload
    def __getitem__(self, i: int) -> Receipt: ...
    @overload
    def __getitem__(self, i: slice) -> list[Receipt]: ...
    def __getitem__(self, i: int | slice) -> Receipt | list[Receipt]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self.leaf_hashes)
        if not -n <= i < n:
            raise IndexError("receipt index out of range")
        i %= n
        return Receipt(self.first + i, self.leaf_hashes[i], self.ts)

    def __repr__(self) -> str:
        return f"Receipts(seqs {self.first}..{self.first + len(self) - 1}, ts {self.ts})"
