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

import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ledger import merkle
from ledger.canonical import GENESIS_PREV, parse_ts
from ledger.errors import InputError

__all__ = ["ChainVerifier", "VerifyResult"]

_STRING: Final = rb'"[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*"'
_HEAD: Final = re.compile(
    rb'\{"actor":(' + _STRING + rb'),"kind":"([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)","payload":(?=\{)'
)
_TAIL_START: Final = b'},"prev":"'
_TAIL: Final = re.compile(
    rb'\},"prev":"([0-9a-f]{64})","seq":(0|[1-9][0-9]{0,15}),"subject":(null|' + _STRING
    + rb'),"ts":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)","v":1\}'
)


def _reencoded(json_string: bytes) -> bytes | None:
    try:
        return orjson.dumps(orjson.loads(json_string))
    except orjson.JSONDecodeError:
        return None


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

    def __init__(self, *, keep_nodes_from: int = 4, start: int = 0) -> None:
        """``start`` > 0 verifies a segment: its first ``prev`` and ``ts`` are recorded
        (``first_prev``, ``first_ts``) for the caller to link to the previous segment,
        and the Merkle nodes it keeps are relative to ``start`` (aligned by the caller).
        """
        self.start = start
        self.size = start
        self._prev_hex: str | None = GENESIS_PREV if start == 0 else None
        self.first_prev: str | None = None
        self.first_ts: str | None = None
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
        hexlify = binascii.hexlify
        head_match, tail_match = _HEAD.match, _TAIL.fullmatch
        leaves: list[bytes] = []
        expected = self.size
        if self._prev_hex is None:  # first row of a segment: link checked by the caller
            rows = list(rows)
            t = _TAIL.fullmatch(rows[0][5], bytes(rows[0][5]).rfind(_TAIL_START)) if rows else None
            if t is not None:
                self.first_prev, self.first_ts = t[1].decode(), t[4].decode()
            self._prev_hex = self.first_prev or ""
            self._last_ts = self.first_ts or ""
        prev_hex = self._prev_hex.encode()
        last_ts = self._last_ts.encode()
        ts_text, ts_value = self._ts_cache
        ts_bytes = ts_text.encode()
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
            # (3) envelope: a fixed head, one JSON object as payload, a fixed tail
            head = head_match(data)
            split = data.rfind(_TAIL_START)
            tail = tail_match(data, split) if head is not None and split > 0 else None
            if head is None or tail is None:
                raise _Bad(seq, "entry is not a canonical envelope "
                                "(actor, kind, payload, prev, seq, subject, ts, v=1)")
            try:
                payload = loads(data[head.end() : split + 1])
            except orjson.JSONDecodeError as exc:
                raise _Bad(seq, f"payload is not one JSON object: {exc}") from None
            if type(payload) is not dict:
                raise _Bad(seq, "payload is not a JSON object")
            if int(tail[2]) != seq:
                raise _Bad(seq, f"entry stored at seq {seq} says seq {tail[2].decode()} (reordered)")
            # (4) chain link
            if tail[1] != prev_hex:
                raise _Bad(seq, "prev does not match the previous entry's leaf hash "
                                "(an entry was inserted, deleted or rewritten before it)")
            entry_kind = head[2].decode()
            if (seq == 0) != (entry_kind == "ledger.created"):
                raise _Bad(seq, "ledger.created must be entry 0 and only entry 0")
            # (5) time never decreases
            ts = tail[4]
            if ts != ts_bytes:
                try:
                    ts_value = parse_ts(ts)
                except InputError:
                    raise _Bad(seq, f"ts {ts.decode()} is not a valid RFC 3339 UTC time") from None
                ts_bytes = ts
            if ts < last_ts:
                raise _Bad(seq, f"ts {ts.decode()} is earlier than the previous entry's {last_ts.decode()}")
            # (6) strings in canonical encoding (only escapes can differ)
            actor_json, subject_json = head[1], tail[3]
            try:
                actor_json.decode()
                subject_json.decode()
            except UnicodeDecodeError:
                raise _Bad(seq, "actor or subject is not valid UTF-8") from None
            if b"\\" in actor_json and _reencoded(actor_json) != actor_json:
                raise _Bad(seq, "actor is not in canonical JSON string form")
            if subject_json == b"null":
                entry_subject = None
            elif b"\\" in subject_json:
                if _reencoded(subject_json) != subject_json:
                    raise _Bad(seq, "subject is not in canonical JSON string form")
                entry_subject = loads(subject_json)
            else:
                entry_subject = subject_json[1:-1].decode()
            # (7) indexed columns agree with the bytes
            if entry_kind != kind or entry_subject != subject or ts_value != ts_us:
                raise _Bad(seq, "indexed columns (kind, subject, ts) disagree with the entry bytes")
            leaves.append(leaf)
            prev_hex = hexlify(leaf)
            last_ts = ts
            expected += 1
        self.size = expected
        self._prev_hex = prev_hex.decode()
        self._last_ts = last_ts.decode()
        self._ts_cache = (ts_bytes.decode(), ts_value)
        self._extend(leaves)

    @property
    def last_leaf_hex(self) -> str:
        """The leaf hash of the last entry checked (the next entry's expected prev)."""
        return self._prev_hex or ""

    @property
    def last_ts(self) -> str:
        return self._last_ts

    def _extend(self, leaves: list[bytes]) -> None:
        for level, idx, h in self.frontier.extend(leaves, min_level=self._min_level):
            self.nodes[(level, idx)] = h

    def check_nodes(self, stored: Iterable[tuple[int, int, bytes]]) -> bool:
        """Compare stored interior nodes with those rebuilt from the leaves.

        ``stored`` must be the stored nodes inside [start, size) (all of them when
        start is 0); nodes reaching past ``size`` are ignored.
        """
        if self.failure is not None:
            return False
        seen: set[tuple[int, int]] = set()
        start = self.start
        for level, abs_idx, h in stored:
            if (abs_idx + 1) << level > self.size:
                continue  # covers entries appended after the scan
            idx = abs_idx - (start >> level)
            want = self.nodes.get((level, idx))
            if want is None or want != bytes(h):
                first = min(abs_idx << level, max(self.size - 1, 0))
                self.failure = _Bad(
                    first, f"stored Merkle node (level {level}, index {idx}) does not match the entries"
                )
                return False
            seen.add((level, idx))
        if len(seen) != len(self.nodes):
            missing = min((k for k in self.nodes if k not in seen), key=lambda k: k[1] << k[0])
            self.failure = _Bad(
                start + (missing[1] << missing[0]),
                f"{len(self.nodes) - len(seen)} Merkle node(s) missing, first at level {missing[0]} "
                f"index {missing[1] + (start >> missing[0])}",
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
