"""Canonical entry bytes (DESIGN.md section 2, docs/FORMAT.md section 2).

An entry is one JSON object: UTF-8, keys sorted by code point, no insignificant
whitespace, integers within +-(2**53 - 1), finite floats in shortest round-trip
form, control characters escaped. The stored bytes are the record; verifiers hash
them and never re-serialise.

Invariants this module keeps:
1. ``encode`` never produces NaN or Infinity (it raises ``InputError``).
2. ``entry_bytes`` equals ``encode`` of the whole envelope dict; the envelope is
   spliced from a pre-encoded prefix only so that the expensive part (the payload)
   is encoded before the write lock is taken.
3. ``format_ts``/``parse_ts`` are exact inverses on the RFC 3339 form
   ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.
"""

from __future__ import annotations

import calendar
import functools
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from ledger.errors import InputError

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_PREV",
    "MAX_NAME_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_SAFE_INT",
    "EntryPrefix",
    "canonical_value",
    "decode",
    "encode",
    "entry_bytes",
    "format_ts",
    "owned_canonical_value",
    "parse_ts",
    "prefix",
    "row_format",
]

FORMAT_VERSION: Final = 1
GENESIS_PREV: Final = "0" * 64
#: Largest canonical payload accepted, in bytes (1 MiB).
MAX_PAYLOAD_BYTES: Final = 1 << 20
#: Largest ``actor`` or ``subject``, in UTF-8 bytes.
MAX_NAME_BYTES: Final = 512
#: The largest integer JSON carries exactly in every common implementation (I-JSON).
MAX_SAFE_INT: Final = (1 << 53) - 1

_OPTS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
Fragment: Final = orjson.Fragment
_TS_RE: Final = re.compile(rb"\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})Z\Z")


def encode(value: Any, *, where: str = "value", owned: bool = False) -> bytes:
    """Canonical JSON bytes of ``value``; raise ``InputError`` naming ``where``.

    ``owned``: the caller owns ``value`` (e.g. a fresh ``model_dump``), so floats
    may be rewritten in place instead of copying.
    """
    try:
        fixed = owned_canonical_value(value, where) if owned else canonical_value(value, where)
        return orjson.dumps(fixed, option=_OPTS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InputError(f"{where}: cannot be encoded as canonical JSON: {exc}") from None


class _Bad(Exception):
    pass


def _fast(value: Any) -> Any:
    """The hot path of ``owned_canonical_value``: no path bookkeeping, raises ``_Bad``.

    Rewrites floats in place (containers are the caller's fresh copies) and
    recurses only into containers.
    """
    t = type(value)
    if t is dict:
        for key, sub in value.items():
            if type(key) is not str:
                raise _Bad
            ts = type(sub)
            if ts is str or ts is bool or sub is None:
                continue
            if ts is int:
                if not -MAX_SAFE_INT <= sub <= MAX_SAFE_INT:
                    raise _Bad
                continue
            if ts is float:
                if sub - sub != 0.0:  # not finite
                    raise _Bad
                value[key] = Fragment(repr(sub))
                continue
            value[key] = _fast(sub)
        return value
    if t is list:
        for i, sub in enumerate(value):
            ts = type(sub)
            if ts is str or ts is bool or sub is None:
                continue
            if ts is int:
                if not -MAX_SAFE_INT <= sub <= MAX_SAFE_INT:
                    raise _Bad
                continue
            value[i] = _fast(sub)
        return value
    if t is tuple:
        return _fast(list(value))
    return _scalar(value)


def _scalar(value: Any) -> Any:
    t = type(value)
    if t is float:
        if value - value == 0.0:  # finite
            return Fragment(repr(value))
        raise _Bad
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return value
        raise _Bad
    raise _Bad


def _fresh(value: Any) -> Any:
    """``_fast`` on a copy, in one pass: new containers, the caller's value untouched."""
    t = type(value)
    if t is dict:
        out = {}
        for key, sub in value.items():
            if type(key) is not str:
                raise _Bad
            ts = type(sub)
            if ts is str or ts is bool or sub is None:
                out[key] = sub
            elif ts is int:
                if not -MAX_SAFE_INT <= sub <= MAX_SAFE_INT:
                    raise _Bad
                out[key] = sub
            elif ts is float:
                if sub - sub != 0.0:  # not finite
                    raise _Bad
                out[key] = Fragment(repr(sub))
            else:
                out[key] = _fresh(sub)
        return out
    if t is list or t is tuple:
        return [_fresh(sub) for sub in value]
    return _scalar(value)


def canonical_value(value: Any, where: str) -> Any:
    """Check ``value`` is canonical-JSON-able and fix the float form; returns a copy.

    Refuses non-finite floats, integers beyond +-(2**53 - 1), non-string keys and
    anything that is not a JSON value, naming the path. Python's repr is the
    normative float form (docs/FORMAT.md); orjson's own differs between releases,
    so floats are spliced in as pre-encoded fragments.
    """
    try:
        return _fresh(value)
    except _Bad:
        _explain(value, where)
        raise AssertionError("unreachable") from None


def owned_canonical_value(value: Any, where: str) -> Any:
    """``canonical_value`` for a value the caller owns: floats are replaced in place."""
    try:
        return _fast(value)
    except _Bad:
        _explain(value, where)
        raise AssertionError("unreachable") from None


def _explain(value: Any, path: str) -> None:
    """Raise the ``InputError`` that names where ``value`` is not canonical JSON."""
    if type(value) not in (str, bool, type(None), int, float, dict, list, tuple):
        raise InputError(f"{path}: {type(value).__name__} is not a plain JSON value")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise InputError(f"{path}: integer {value} is outside +-(2**53 - 1)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"{path}: {value!r} is not a finite number (NaN and Infinity are refused)")
    elif isinstance(value, dict):
        for key, sub in value.items():
            if not isinstance(key, str):
                raise InputError(f"{path}: object key {key!r} is not a string")
            _explain(sub, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            _explain(sub, f"{path}[{i}]")


#: How a slot of ``row_format`` renders its value.
_SLOTS: Final = {"float": b"%r", "int": b"%d", "json": b"%s", "ascii": b'"%s"'}


def row_format(const: Mapping[str, Any], slots: Sequence[tuple[str, str]], *,
               where: str = "value") -> tuple[bytes, list[str]]:
    """A bytes %-format for many objects that differ only in the fields ``slots`` (the batch fast path),
    and the slot names in the order the format takes their values (the canonical key order).

    ``fmt % row == encode({**const, **dict(zip(order, row))})`` when each value of ``row`` is, by
    its slot's kind:

    - ``"float"``: a finite float (``%r`` is Python's repr, the canonical float form);
    - ``"int"``: an ``int``, not a ``bool``, within +-(2**53 - 1);
    - ``"json"``: ``bytes``, the value's canonical encoding;
    - ``"ascii"``: ``bytes`` of a string that JSON writes as itself between quotes (printable ASCII
      without ``"`` or ``\\``, e.g. lowercase hex).

    The caller checks those conditions, per column (tests/unit/ledger/test_row_format.py holds the
    two forms equal).
    """
    marks = {name: f"\ue000{i}\ue000" for i, (name, _) in enumerate(slots)}
    if len(marks) != len(slots) or set(marks) & set(const):
        raise ValueError("row_format: each slot must be named once and not be a constant field")
    fmt = encode({**const, **marks}, where=where).replace(b"%", b"%%")
    at: dict[str, int] = {}
    for name, _kind in slots:
        mark = orjson.dumps(marks[name])
        if fmt.count(mark) != 1:
            raise InputError(f"{where}: a constant field holds the reserved text {marks[name]!r}")
        at[name] = fmt.index(mark)
    for name, kind in slots:
        fmt = fmt.replace(orjson.dumps(marks[name]), _SLOTS[kind])
    return fmt, sorted(at, key=at.__getitem__)


def decode(data: bytes, *, where: str = "input") -> Any:
    """Parse JSON strictly (UTF-8, no NaN/Infinity, no lone surrogates)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{where}: malformed JSON: {exc}") from None


class EntryPrefix:
    """An entry's bytes up to ``"prev":"``, plus its encoded subject.

    Built outside the write lock; ``entry_bytes`` completes it under the lock.
    """

    __slots__ = ("actor", "data", "kind", "payload", "subject", "subject_json")

    def __init__(self, data: bytes, kind: str, subject: str | None, subject_json: bytes) -> None:
        self.data = data
        self.kind = kind
        self.subject = subject
        self.subject_json = subject_json
        #: Set for kinds the sequencer must check against ledger state (key events, checked kinds).
        self.payload: dict[str, Any] | None = None
        self.actor: str | None = None


@functools.lru_cache(maxsize=4096)
def _name(value: str | None, field: str) -> bytes:
    """The JSON form of an actor or subject (cached: names repeat, e.g. over a batch)."""
    try:
        out = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise InputError(f"{field}: {exc}") from None
    # The JSON form is never shorter than the UTF-8 form plus its two quotes.
    if len(out) > MAX_NAME_BYTES + 2 and len(value.encode()) > MAX_NAME_BYTES:  # type: ignore[union-attr]
        raise InputError(f"{field}: longer than {MAX_NAME_BYTES} bytes")
    return out


@functools.lru_cache(maxsize=1024)
def _head(kind: str, actor: str) -> bytes:
    return b"".join((b'{"actor":', _name(actor, "actor"), b',"kind":', orjson.dumps(kind), b',"payload":'))


def prefix(kind: str, actor: str, subject: str | None, payload: bytes) -> EntryPrefix:
    """Pre-encode the envelope fields that sort before ``prev``.

    ``payload`` must already be canonical (``encode``).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InputError(
            f"payload: {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit; "
            "store large content as an artifact and record its hash"
        )
    return EntryPrefix(_head(kind, actor) + payload + b',"prev":"', kind, subject, _name(subject, "subject"))


def entry_bytes(pre: EntryPrefix, seq: int, prev_hex: str, ts: str) -> bytes:
    """The canonical entry: keys actor, kind, payload, prev, seq, subject, ts, v."""
    return b"".join(
        (pre.data, prev_hex.encode(), b'","seq":', str(seq).encode(), b',"subject":',
         pre.subject_json, b',"ts":"', ts.encode(), b'","v":1}')
    )


def format_ts(micros: int) -> str:
    """RFC 3339 UTC with microseconds and ``Z`` from microseconds since the epoch."""
    secs, frac = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


def parse_ts(text: str | bytes) -> int:
    """Microseconds since the epoch from the exact form ``format_ts`` writes."""
    raw = text.encode() if isinstance(text, str) else text
    m = _TS_RE.match(raw)
    if m is None:
        raise InputError(f"timestamp {raw!r} is not of the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    y, mo, d, h, mi, s, us = (int(g) for g in m.groups())
    try:
        secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
        if time.gmtime(secs)[:6] != (y, mo, d, h, mi, s):
            raise ValueError("out of range")
    except (ValueError, OverflowError):
        raise InputError(f"timestamp {raw!r} is not a valid date and time") from None
    return secs * 1_000_000 + us
