"""Chain verification: pure functions over stored rows, no I/O.

For each entry, in order (the steps match the code):
1. ``seq`` is contiguous from 0.
2. SHA-256(0x00 || stored bytes) equals the stored leaf hash.
3. The bytes are one JSON object with exactly the envelope keys, ``v == 1``,
   and ``seq`` equal to its position.
4. ``prev`` is the previous leaf hash (64 zeros for seq 0), and entry 0, and only
   entry 0, is ``ledger.created``.
5. ``ts`` has the canonical form and never decreases.
6. Field types are right and the top-level layout is canonical: the bytes before
   the payload and after it are exactly what the parsed fields encode to (no
   duplicate, reordered or re-encoded keys).
7. The indexed columns (kind, subject, ts) agree with the bytes.
Then the Merkle tree is rebuilt from the leaves and every stored interior node
must match it. The first failure stops verification and names its seq.

Payloads are not re-validated against their models here (``deep=True`` in the
API does that): integrity is about the bytes, which are hashed as stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ledger import merkle
from ledger.canonical import GENESIS_PREV, parse_ts
from ledger.errors import InputError

__all__ = ["ChainVerifier", "VerifyResult"]

_KEYS: Final = frozenset({"v", "seq", "prev", "ts", "kind", "actor", "subject", "payload"})


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a verification. ``ok`` False carries the first bad seq and why."""

    ok: bool
    size: int
    root: bytes | None = None
    bad_seq: int | None = None
    reason: str | None = None
    last_ts: str | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": self.root.hex() if self.root is not None else None,
            "bad_seq": self.bad_seq,
            "reason": self.reason,
            "last_ts": self.last_ts,
        }


class _Bad(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


class ChainVerifier:
    """Feed rows in seq order; ask for the result at the end."""

    def __init__(self, *, keep_nodes_from: int = 4) -> None:
        self.size = 0
        self._prev_hex = GENESIS_PREV
        self._last_ts = ""
        self._ts_cache: tuple[str, int] = ("", -1)
        self.frontier = merkle.Frontier()
        self._min_level = keep_nodes_from
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.failure: _Bad | None = None

    def feed(self, rows: Iterable[Sequence[Any]]) -> bool:
        """Check rows ``(seq, leaf_hash, ts_us, kind, subject, entry)``; False once failed."""
        if self.failure is not None:
            return False
        try:
            self._feed(rows)
        except _Bad as bad:
            self.failure = bad
            return False
        return True

    def _feed(self, rows: Iterable[Sequence[Any]]) -> None:
        sha = hashlib.sha256
        loads = orjson.loads
        dumps = orjson.dumps
        leaves: list[bytes] = []
        expected = self.size
        prev_hex = self._prev_hex
        last_ts = self._last_ts
        for seq, stored_leaf, ts_us, kind, subject, raw in rows:
            data = bytes(raw)
            # (1) contiguity
            if seq != expected:
                if seq > expected:
                    raise _Bad(expected, f"entry {expected} is missing (next stored seq is {seq})")
                raise _Bad(seq, f"seq {seq} appears twice")
            # (2) leaf hash over the stored bytes
            leaf = sha(b"\x00" + data).digest()
            if leaf != bytes(stored_leaf):
                raise _Bad(seq, "entry bytes do not match the stored leaf hash (modified entry)")
            # (3) envelope shape
            try:
                obj = loads(data)
            except orjson.JSONDecodeError as exc:
                raise _Bad(seq, f"entry is not valid JSON: {exc}") from None
            if type(obj) is not dict or obj.keys() != _KEYS:
                raise _Bad(seq, "entry is not an object with exactly the envelope fields")
            if obj["v"] != 1 or type(obj["v"]) is not int:
                raise _Bad(seq, f"unsupported format version {obj['v']!r}")
            if obj["seq"] != seq or type(obj["seq"]) is not int:
                raise _Bad(seq, f"entry stored at seq {seq} says seq {obj['seq']!r} (reordered)")
            # (4) chain link
            if obj["prev"] != prev_hex:
                raise _Bad(seq, "prev does not match the previous entry's leaf hash "
                                "(an entry was inserted, deleted or rewritten before it)")
            if (seq == 0) != (obj["kind"] == "ledger.created"):
                raise _Bad(seq, "ledger.created must be entry 0 and only entry 0")
            # (5) time never decreases
            ts = obj["ts"]
            if ts != self._ts_cache[0]:
                try:
                    self._ts_cache = (ts, parse_ts(ts))
                except (InputError, AttributeError, TypeError):
                    raise _Bad(seq, f"ts {ts!r} is not canonical RFC 3339 UTC") from None
            if ts < last_ts:
                raise _Bad(seq, f"ts {ts} is earlier than the previous entry's {last_ts}")
            # (6) field types, and the canonical top-level layout: exactly these bytes
            # around the payload, so no key is duplicated, reordered or re-encoded
            actor, subj = obj["actor"], obj["subject"]
            if (type(actor) is not str or type(obj["kind"]) is not str or type(obj["payload"]) is not dict
                    or (subj is not None and type(subj) is not str)):
                raise _Bad(seq, "an envelope field has the wrong type")
            if not (data.startswith(b'{"actor":' + dumps(actor) + b',"kind":' + dumps(obj["kind"])
                                    + b',"payload":{')
                    and data.endswith(b'","seq":' + str(seq).encode() + b',"subject":' + dumps(subj)
                                      + b',"ts":"' + ts.encode() + b'","v":1}')):
                raise _Bad(seq, "entry is not in canonical form (envelope keys, order or encoding)")
            # (7) indexed columns agree with the bytes
            if obj["kind"] != kind or obj["subject"] != subject or self._ts_cache[1] != ts_us:
                raise _Bad(seq, "indexed columns (kind, subject, ts) disagree with the entry bytes")
            leaves.append(leaf)
            prev_hex = leaf.hex()
            last_ts = ts
            expected += 1
            self.size = expected
            self._prev_hex = prev_hex
            self._last_ts = last_ts
        self._extend(leaves)

    def _extend(self, leaves: list[bytes]) -> None:
        for level, idx, h in self.frontier.extend(leaves, min_level=self._min_level):
            self.nodes[(level, idx)] = h

    def check_nodes(self, stored: Iterable[tuple[int, int, bytes]]) -> bool:
        """Compare stored interior nodes with those rebuilt from the leaves."""
        if self.failure is not None:
            return False
        seen: set[tuple[int, int]] = set()
        for level, idx, h in stored:
            if (idx + 1) << level > self.size:
                continue  # covers entries appended after the scan
            want = self.nodes.get((level, idx))
            if want is None or want != bytes(h):
                first = min(idx << level, max(self.size - 1, 0))
                self.failure = _Bad(
                    first, f"stored Merkle node (level {level}, index {idx}) does not match the entries"
                )
                return False
            seen.add((level, idx))
        if len(seen) != len(self.nodes):
            missing = min((k for k in self.nodes if k not in seen), key=lambda k: k[1] << k[0])
            self.failure = _Bad(
                missing[1] << missing[0],
                f"{len(self.nodes) - len(seen)} Merkle node(s) missing, first at level {missing[0]} "
                f"index {missing[1]}",
            )
            return False
        return True

    def result(self) -> VerifyResult:
        if self.failure is not None:
            return VerifyResult(False, self.size, None, self.failure.seq, self.failure.reason,
                                self._last_ts or None)
        if self.size == 0:
            return VerifyResult(False, 0, None, 0, "the ledger is empty (no genesis entry)")
        return VerifyResult(True, self.size, self.frontier.root(), last_ts=self._last_ts)
