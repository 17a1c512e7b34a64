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

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

from ledger._store import Receipt
from ledger.canonical import MAX_PAYLOAD_BYTES, _head, _name
from ledger.errors import InputError
from ledger.events import check_name

__all__ = ["EntryRows", "Receipts"]


class EntryRows:
    """``len(rows)`` entries: entry ``i`` has payload ``payload_format % rows[i]``.

    ``payload_format`` and the slot order of each row come from ``row_format(const, slots)``, and
    the caller vouches, as for ``ledger.canonical.prefix``, that each value fits its slot's kind
    and that each payload is a valid payload of ``kind``. ``values`` holds the same per-entry
    values as a reader of the stored entry sees them (name -> one value per entry), and ``const``
    the fields every payload shares: the kind's check reads them (``payload``).
    """

    __slots__ = (
        "actor",
        "ahead",
        "const",
        "head",
        "kind",
        "payload_format",
        "rows",
        "subject",
        "subject_json",
        "values",
    )

    def __init__(self, kind: str, actor: str, subject: str | None, payload_format: bytes,
                 rows: Sequence[tuple[Any, ...]], *, const: Mapping[str, Any],
                 values: Mapping[str, Sequence[Any]]) -> None:
        if any(len(v) != len(rows) for v in values.values()):
            raise ValueError("EntryRows: each of values must hold one value per row")
        check_name(actor, "actor")  # as an Event does: verification refuses what it refuses
        if subject is not None:
            check_name(subject, "subject")
        self.kind, self.actor, self.subject = kind, actor, subject
        self.head = _head(kind, actor)
        self.subject_json = _name(subject, "subject")
        self.payload_format = payload_format
        self.rows = rows
        self.const = dict(const)
        self.values = dict(values)
        #: Set by ``Ledger.sequence_ahead``: these entries sequenced outside the write lock.
        self.ahead: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def payload(self, i: int) -> dict[str, Any]:
        """The payload of entry ``i`` as a reader of its stored bytes sees it."""
        return {**self.const, **{name: v[i] for name, v in self.values.items()}}

    def read_keys(self, fields: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """For each entry, the values of ``fields`` (constant or per entry)."""
        cols = [self.values[f] if f in self.values else [self.const.get(f)] * len(self.rows) for f in fields]
        return zip(*cols, strict=True)

    def entry_format(self, ts: str) -> bytes:
        """A %-format of the whole entry at time ``ts``: takes a row's slot values, then ``prev`` (hex,
        bytes) and ``seq``. Keys in canonical order: actor, kind, payload, prev, seq, subject, ts, v."""
        return b"".join((self.head.replace(b"%", b"%%"), self.payload_format, b',"prev":"%s","seq":%d,"subject":',
                         self.subject_json.replace(b"%", b"%%"), b',"ts":"', ts.encode(), b'","v":1}'))

    def overhead(self, ts: str) -> int:
        """Bytes of an entry that are not its payload, but for the digits of its seq."""
        return len(self.head) + len(b',"prev":"') + 64 + len(b'","seq":,"subject":') + len(self.subject_json) + len(
            b',"ts":"') + len(ts) + len(b'","v":1}')

    def too_large(self, data: bytes, seq: int, ts: str) -> InputError | None:
        """The error for entry ``data`` at ``seq`` if its payload is over the limit."""
        size = len(data) - self.overhead(ts) - len(str(seq))
        if size <= MAX_PAYLOAD_BYTES:
            return None
        return InputError(f"payload of the {self.kind} entry at seq {seq}: {size} bytes is over the "
                          f"{MAX_PAYLOAD_BYTES}-byte limit; store large content as an artifact and record its hash")


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
