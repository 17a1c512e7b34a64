"""``EntryRows`` and ``Ledger.append_rows`` (the batch fast path) write what ``append_many`` writes.

- ``EntryRows.entry_format(ts) % (*row, hexlify(prev), seq)`` is ``entry_bytes(prefix(...), seq, prev.hex(), ts)``
  byte for byte (a property over random constants, slots, rows, actors and subjects);
- on a ledger (SQLite and, with MLLEDGER_TEST_PG_URL, PostgreSQL) each stored entry is the bytes
  ``append_many`` stores for the same event at that seq, prev and ts; the ``Receipts`` are what is stored;
- the payload limit is exact and names the seq; refused kinds, failed checks, oversized payloads and
  failed statements write nothing, and the ledger still verifies (``verify(deep=True)``);
- a kind's check runs once per distinct value of the fields it ``reads``, else before each entry, seeing
  the earlier entries of the same batch;
- ``Receipts`` is a ``Sequence[Receipt]``; concurrent callers (group commit) each get their own.

``test_names_that_append_many_refuses_are_not_written_by_append_rows`` shows a divergence (see its docstring).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from binascii import hexlify
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger._sequencer as sequencer
import ledger.events as events
from backends.kinds import PredictionBatch, PredictionMade
from ledger._store import Receipt
from ledger.api import Ledger
from ledger.canonical import (
    MAX_NAME_BYTES,
    MAX_PAYLOAD_BYTES,
    EntryPrefix,
    encode,
    entry_bytes,
    format_ts,
    prefix,
    row_format,
)
from ledger.entry_rows import EntryRows, Receipts
from ledger.errors import InputError, IntegrityError
from ledger.events import Event, kinds, payload_model
from ledger.privacy import KeyErased, SubjectKeys
from ledger.view import LedgerView
from tests.conftest import make_ledger
from tests.unit.ledger.test_multirow_insert import SMALL_LIMIT, batch_event, check_ledger, stored
from tests.unit.ledger.test_row_format import by_order, formats

ACTOR, SUBJECT = "svc:batch@example.com", "model:credit@1"
H = hashlib.sha256(b"artifact").hexdigest()
DK = "dk-" + "0" * 32  # a deployment key: prediction.made's check reads nothing for it
TS = "2026-11-29T10:00:00.000001Z"

#: Actors and subjects that stress the splice: %-directives, quotes, backslashes, JSON escapes, non-ASCII.
SPECIAL_NAMES = ["%", "%s", "%d%%", "%(x)s", "100%", 'q"uote', "back\\slash", "é", "Ünïcødé", "\U0001f600",
                 "\u2028\u2029", "\uffff", "a b", "</script>", "\\u0041", "svc%s@%d"]
#: Valid names (what ``Event`` accepts): non-empty, no control characters, at most MAX_NAME_BYTES.
valid_names = st.one_of(
    st.sampled_from(SPECIAL_NAMES),
    st.text(st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters="\x7f"), min_size=1, max_size=12),
)
#: Anything ``prefix`` takes (control characters included): the splice must agree with it byte for byte.
label_text = st.one_of(st.sampled_from(["", "%", "%s", "%d%%", '"', "\\", "é%r", "\x00", "\U0001f600", "a\nb"]),
                       st.text(st.characters(codec="utf-8"), max_size=10))
registered_kinds = st.sampled_from(["prediction.made", "prediction.batch", "access.denied", "model.trained"])


# -- fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture
def led(any_url: str) -> Iterator[Ledger]:
    ledger = make_ledger(any_url)
    yield ledger
    ledger.close()


@pytest.fixture
def sqlite_led(sqlite_url: str) -> Iterator[Ledger]:
    ledger = make_ledger(sqlite_url)
    yield ledger
    ledger.close()


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """SQLite statements of 3 entry rows and 7 node rows (as in test_multirow_insert.py)."""
    monkeypatch.setattr(sequencer, "_SQLITE_PARAMS", SMALL_LIMIT)
    return SMALL_LIMIT


def slot_value(kind: str, value: Any) -> Any:
    """What a format's row takes for ``value`` in a slot of ``kind`` (``row_format``)."""
    if kind == "json":
        return encode(value)
    if kind == "ascii":
        return value.encode()
    return value


def rows_of(kind: str, actor: str, subject: str | None, payloads: Sequence[dict[str, Any]],
            slots: Sequence[tuple[str, str]]) -> EntryRows:
    """``EntryRows`` of ``payloads`` (dumped models sharing every field but ``slots``)."""
    names = [name for name, _ in slots]
    const = {k: v for k, v in payloads[0].items() if k not in names}
    for p in payloads:
        assert {k: v for k, v in p.items() if k not in names} == const
    fmt, order = row_format(const, list(slots))
    kind_of = dict(slots)
    return EntryRows(kind, actor, subject, fmt, order,
                     [tuple(slot_value(kind_of[n], p[n]) for n in order) for p in payloads])


def batch_payload(i: int, *, automated: bool | None = None) -> dict[str, Any]:
    h = hashlib.sha256(str(i).encode()).hexdigest()
    return PredictionBatch(model="credit@1", artifact_sha256=H, stage="production", deployed_seq=1, count=i + 1,
                           root=h, records_sha256=h,
                           automated_decision=i % 2 == 0 if automated is None else automated).model_dump(mode="json")


BATCH_SLOTS = [("count", "int"), ("root", "ascii"), ("records_sha256", "ascii"), ("automated_decision", "json")]


def batch_rows(start: int, n: int, *, actor: str = ACTOR, subject: str | None = SUBJECT) -> EntryRows:
    return rows_of("prediction.batch", actor, subject, [batch_payload(i) for i in range(start, start + n)],
                   BATCH_SLOTS)


def batch_events(start: int, n: int, *, actor: str = ACTOR, subject: str | None = SUBJECT) -> list[Event]:
    return [Event(PredictionBatch.model_validate(batch_payload(i)), actor=actor, subject=subject)
            for i in range(start, start + n)]


def made_payload(i: int, key_id: str = DK, label: Any = 1, score: float | None = 0.5,
                 request_id: str | None = None) -> dict[str, Any]:
    return PredictionMade(model="credit@1", artifact_sha256=H, stage="production", deployed_seq=7,
                          input_commitment=f"{i:064x}", key_id=key_id, label=label, score=score, latency_ms=0.125,
                          automated_decision=True, request_id=request_id).model_dump(mode="json")


MADE_SLOTS = [("input_commitment", "ascii"), ("key_id", "json"), ("label", "json"), ("score", "json")]


def made_rows(payloads: Sequence[dict[str, Any]], *, actor: str = ACTOR, subject: str | None = SUBJECT,
              slots: Sequence[tuple[str, str]] = MADE_SLOTS) -> EntryRows:
    return rows_of("prediction.made", actor, subject, payloads, slots)


def made_events(payloads: Sequence[dict[str, Any]], *, actor: str = ACTOR,
                subject: str | None = SUBJECT) -> list[Event]:
    return [Event(PredictionMade.model_validate(p), actor=actor, subject=subject) for p in payloads]


def raw_entries(led: Ledger) -> dict[int, tuple[bytes, bytes, bytes]]:
    """seq -> (leaf hash, prev, entry bytes) as stored."""
    rows, _nodes = stored(led)
    return {seq: (h, p, e) for seq, h, p, e in rows}


def assert_written_as_append_many_would(led: Ledger, receipts: Sequence[Receipt], events_: Sequence[Event]) -> None:
    """Each entry at ``receipts`` is, byte for byte, what ``append_many`` writes for ``events_`` at its seq,
    prev and ts; the receipts carry the stored leaf hash and ts."""
    by_seq = raw_entries(led)
    assert len(receipts) == len(events_)
    for r, ev in zip(receipts, events_, strict=True):
        leaf, prev, raw = by_seq[r.seq]
        assert r.leaf_hash == leaf == hashlib.sha256(b"\x00" + raw).digest(), f"seq {r.seq}: leaf hash"
        assert raw == entry_bytes(ev.prepare(), r.seq, prev.hex(), r.ts), f"seq {r.seq}: {raw!r}"
        assert orjson.loads(raw)["ts"] == r.ts


def without_position(raw: bytes) -> dict[str, Any]:
    d: dict[str, Any] = orjson.loads(raw)
    for k in ("prev", "seq", "ts"):
        del d[k]
    return d


def nothing_written(led: Ledger, size: int, before: Any) -> None:
    assert led.head_size() == size
    assert stored(led) == before
    result = led.verify(deep=True, workers=1)
    assert result.ok and result.size == size, result


# -- 1. entry_format is entry_bytes --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(formats(), registered_kinds, valid_names, st.none() | valid_names, st.integers(0, (1 << 53) - 1),
       st.binary(min_size=32, max_size=32), st.integers(0, 253402300799999999))
def test_entry_format_of_a_row_is_entry_bytes_of_its_prefix(
        case: tuple[dict[str, Any], list[tuple[str, str]], list[list[Any]], list[tuple[Any, ...]]], kind: str,
        actor: str, subject: str | None, seq: int, prev: bytes, ts_us: int) -> None:
    const, slots, objects, rows = case
    fmt, order = row_format(const, slots)
    names = [name for name, _ in slots]
    ts = format_ts(ts_us)
    ordered = [by_order(slots, order, list(row)) for row in rows]
    item = EntryRows(kind, actor, subject, fmt, order, ordered)
    entry_format = item.entry_format(ts)
    for i, (values, row) in enumerate(zip(objects, ordered, strict=True)):
        payload = {**const, **dict(zip(names, values, strict=True))}
        want = entry_bytes(prefix(kind, actor, subject, encode(payload)), seq + i, prev.hex(), ts)
        got = entry_format % (*row, hexlify(prev), seq + i)
        assert got == want
        assert item.payload(i) == payload
        assert len(got) == item.overhead(ts) + len(str(seq + i)) + len(encode(payload))
        assert item.too_large(got, seq + i, ts) is None


def test_entry_format_with_percent_signs_everywhere() -> None:
    const = {"a%": "100%", "%s": "%d%%"}
    fmt, order = row_format(const, [("n", "int"), ("t", "json")])
    assert order == ["n", "t"]
    item = EntryRows("prediction.batch", "svc%s@%d", "50%(x)s", fmt, order, [(7, b'"%r"')])
    prev = bytes(range(32))
    got = item.entry_format(TS) % (7, b'"%r"', hexlify(prev), 12)
    assert got == entry_bytes(prefix("prediction.batch", "svc%s@%d", "50%(x)s",
                                     encode({**const, "n": 7, "t": "%r"})), 12, prev.hex(), TS)
    assert got.startswith(b'{"actor":"svc%s@%d","kind":"prediction.batch","payload":{"%s":"%d%%","a%":"100%",')


# -- 5. construction ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a" * MAX_NAME_BYTES, "é" * (MAX_NAME_BYTES // 2), "\U0001f600" * 128,
                                  "%" * MAX_NAME_BYTES, '"' * MAX_NAME_BYTES])
def test_names_of_the_largest_size_are_accepted(name: str) -> None:
    fmt, _ = row_format({}, [("n", "int")])
    item = EntryRows("prediction.batch", name, name, fmt, ["n"], [(1,)])
    assert item.entry_format(TS) % (1, b"0" * 64, 3) == entry_bytes(prefix("prediction.batch", name, name, b'{"n":1}'),
                                                                    3, "0" * 64, TS)


@pytest.mark.parametrize("name", ["a" * (MAX_NAME_BYTES + 1), "é" * (MAX_NAME_BYTES // 2) + "a",
                                  "\U0001f600" * 128 + "x", "%" * (MAX_NAME_BYTES + 1)])
@pytest.mark.parametrize("field", ["actor", "subject"])
def test_names_over_the_limit_are_refused_at_construction_as_prefix_refuses_them(name: str, field: str) -> None:
    fmt, _ = row_format({}, [("n", "int")])
    actor, subject = (name, SUBJECT) if field == "actor" else (ACTOR, name)
    with pytest.raises(InputError, match=rf"^{field}: longer than {MAX_NAME_BYTES} bytes"):
        prefix("prediction.batch", actor, subject, b'{"n":1}')
    with pytest.raises(InputError, match=rf"^{field}: longer than {MAX_NAME_BYTES} bytes"):
        EntryRows("prediction.batch", actor, subject, fmt, ["n"], [(1,)])


@pytest.mark.parametrize("field", ["actor", "subject"])
def test_a_name_that_is_not_utf8_is_refused_at_construction(field: str) -> None:
    fmt, _ = row_format({}, [("n", "int")])
    actor, subject = ("bad\ud800", SUBJECT) if field == "actor" else (ACTOR, "bad\ud800")
    with pytest.raises(InputError, match=rf"^{field}:"):
        EntryRows("prediction.batch", actor, subject, fmt, ["n"], [(1,)])


@pytest.mark.parametrize(("slots", "rows"), [(["n", "n"], [(1, 1)]), (["n"], [(1, 2)]), (["n", "m"], [(1,)]),
                                             (["n"], [(1,), (2,), ()]), (["n"], [(1,), (2, 3)])])
def test_slots_that_do_not_name_each_value_of_a_row_once_raise_value_error(slots: list[str],
                                                                           rows: list[tuple[Any, ...]]) -> None:
    fmt, _ = row_format({}, [("n", "int")])
    with pytest.raises(ValueError, match="slots must name each value of a row once"):
        EntryRows("prediction.batch", ACTOR, SUBJECT, fmt, slots, rows)


# -- 8. Receipts ----------------------------------------------------------------------------------------------


def test_receipts_is_a_sequence_of_the_receipts_of_a_contiguous_run() -> None:
    hashes = [bytes([i]) * 32 for i in range(4)]
    r = Receipts(10, hashes, TS)
    assert len(r) == 4 and r.first == 10 and r.ts == TS
    assert r.seqs == range(10, 14)
    assert r[0] == Receipt(10, hashes[0], TS)
    assert r[3] == r[-1] == Receipt(13, hashes[3], TS)
    assert r[-4] == r[0]
    for bad in (4, 5, -5, 1 << 40):
        with pytest.raises(IndexError):
            r[bad]
    assert r[1:3] == [Receipt(11, hashes[1], TS), Receipt(12, hashes[2], TS)]
    assert r[::-1] == [Receipt(13 - i, hashes[3 - i], TS) for i in range(4)]
    assert r[-2:] == [r[2], r[3]] and r[3:100] == [r[3]] and r[5:9] == [] and r[::2] == [r[0], r[2]]
    assert list(r) == [Receipt(10 + i, hashes[i], TS) for i in range(4)]
    assert [x.seq for x in reversed(r)] == [13, 12, 11, 10]
    assert Receipt(12, hashes[2], TS) in r and Receipt(14, hashes[0], TS) not in r
    assert r.index(Receipt(11, hashes[1], TS)) == 1
    assert repr(r) == f"Receipts(seqs 10..13, ts {TS})"
    assert not hasattr(r, "__dict__")


def test_empty_receipts() -> None:
    r = Receipts(5, [], TS)
    assert len(r) == 0 and list(r) == [] and r[:] == [] and r.seqs == range(5, 5)
    with pytest.raises(IndexError):
        r[0]
    with pytest.raises(IndexError):
        r[-1]


# -- 2. append_rows writes what append_many writes -------------------------------------------------------------

NAME_CASES = [(ACTOR, SUBJECT), ("svc%s@%d", "50%(x)s"), ('q"uote\\', None), ("Ünïcødé \U0001f600", "\u2028é%"),
              ("%", "%%")]


@pytest.mark.parametrize(("actor", "subject"), NAME_CASES)
def test_append_rows_writes_the_bytes_append_many_writes(led: Ledger, actor: str, subject: str | None) -> None:
    labels: list[Any] = ["approved", 'd"é%s', "%d%%", True, 0, -(2**53 - 1), "", "\U0001f600\\", False, 3]
    scores: list[float | None] = [0.5, None, -0.0, 1e-300, 0.1, 1e16, None, 2.5, 0.0, 1.0]
    made = [made_payload(i, label=lab, score=sc) for i, (lab, sc) in enumerate(zip(labels, scores, strict=True))]
    groups: list[tuple[EntryRows, list[Event]]] = [
        (batch_rows(0, 7, actor=actor, subject=subject), batch_events(0, 7, actor=actor, subject=subject)),
        (made_rows(made, actor=actor, subject=subject), made_events(made, actor=actor, subject=subject)),
    ]
    for rows, evs in groups:
        size = led.head_size()
        many = led.append_many(evs)
        got = led.append_rows(rows)
        assert isinstance(got, Receipts)
        assert [r.seq for r in many] == list(range(size, size + len(evs)))
        assert got.first == size + len(evs) and got.seqs == range(size + len(evs), size + 2 * len(evs))
        assert {r.ts for r in got} == {got.ts}
        assert_written_as_append_many_would(led, many, evs)
        assert_written_as_append_many_would(led, got, evs)
        by_seq = raw_entries(led)
        for a, b in zip(many, got, strict=True):
            assert without_position(by_seq[a.seq][2]) == without_position(by_seq[b.seq][2])
        assert led.get(got[-1].seq).leaf_hash == got.leaf_hashes[-1]
        assert led.head().size == got[-1].seq + 1
    result = led.verify(deep=True, workers=1)
    assert result.ok, result
    check_ledger(led, proofs=False)


def test_append_rows_across_the_statement_limit(led: Ledger, small_limit: int) -> None:
    """Split into statements of 3 rows on SQLite (executemany on PostgreSQL), after and before other appends."""
    led.append_many([batch_event(i) for i in range(5)])
    for start, n in ((0, 1), (1, 2), (3, 3), (6, 4), (10, 31), (41, 100)):
        size = led.head_size()
        got = led.append_rows(batch_rows(start, n))
        assert got.seqs == range(size, size + n)
        assert_written_as_append_many_would(led, got, batch_events(start, n))
    led.append(batch_event(999))
    result = led.verify(deep=True, workers=1)
    assert result.ok, result
    assert len(check_ledger(led)) == led.head_size() == 1 + 5 + 141 + 1


def test_append_rows_across_the_real_sqlite_statement_limit(sqlite_led: Ledger) -> None:
    led = sqlite_led
    per = sequencer._SQLITE_PARAMS // 7
    n = per + per // 2 + 3
    got = led.append_rows(batch_rows(0, n))
    assert got.seqs == range(1, n + 1)
    by_seq = raw_entries(led)
    assert [got[i].leaf_hash for i in (0, per - 1, per, n - 1)] == [by_seq[s][0] for s in (1, per, per + 1, n)]
    assert_written_as_append_many_would(led, got[per - 2 : per + 2], batch_events(per - 2, 4))
    assert len(check_ledger(led, proofs=False)) == n + 1


def test_empty_rows_write_nothing(led: Ledger) -> None:
    led.append(batch_event(0))
    size, before = led.head_size(), stored(led)
    fmt, _ = row_format({}, [("n", "int")])
    got = led.append_rows(EntryRows("prediction.batch", ACTOR, SUBJECT, fmt, ["n"], []))
    assert isinstance(got, Receipts) and len(got) == 0 and list(got) == []
    nothing_written(led, size, before)
    assert led.append(batch_event(1)).seq == size


# -- 3. the payload limit --------------------------------------------------------------------------------------


def made_of_payload_size(i: int, size: int) -> dict[str, Any]:
    """A prediction.made payload of exactly ``size`` canonical bytes (its label a long string)."""
    base = len(encode(made_payload(i, label="")))
    p = made_payload(i, label="x" * (size - base))
    assert len(encode(p)) == size
    return p


# The payload's label is a string slot, so the entry may be ``label`` in a json slot.
LIMIT_NAMES = ("svc%s@%d", '50%"é')


def test_a_payload_of_exactly_the_limit_is_accepted_also_where_seq_gains_a_digit(led: Ledger) -> None:
    actor, subject = LIMIT_NAMES
    led.append_many([batch_event(i) for i in range(8)])  # size 9: the rows take seqs 9 and 10
    payloads = [made_of_payload_size(0, MAX_PAYLOAD_BYTES), made_of_payload_size(1, MAX_PAYLOAD_BYTES)]
    got = led.append_rows(made_rows(payloads, actor=actor, subject=subject))
    assert got.seqs == range(9, 11)
    assert_written_as_append_many_would(led, got, made_events(payloads, actor=actor, subject=subject))
    for seq in got.seqs:
        assert len(encode(led.get(seq).payload)) == MAX_PAYLOAD_BYTES
    result = led.verify(deep=True, workers=1)
    assert result.ok, result


@pytest.mark.parametrize("bad_row", [0, 1])
def test_a_payload_one_byte_over_the_limit_is_refused_naming_the_seq_and_nothing_is_written(
        led: Ledger, bad_row: int) -> None:
    actor, subject = LIMIT_NAMES
    led.append_many([batch_event(i) for i in range(8)])
    size, before = led.head_size(), stored(led)
    payloads = [made_of_payload_size(i, MAX_PAYLOAD_BYTES + (i == bad_row)) for i in range(2)]
    with pytest.raises(InputError) as caught:
        prefix("prediction.made", actor, subject, encode(payloads[bad_row]))  # as append_many refuses it
    assert f"{MAX_PAYLOAD_BYTES}-byte limit" in str(caught.value)
    with pytest.raises(InputError) as caught:
        led.append_rows(made_rows(payloads, actor=actor, subject=subject))
    msg = str(caught.value)
    assert f"prediction.made entry at seq {size + bad_row} (row {bad_row} of 2, nothing of these rows" in msg, msg
    assert f"{MAX_PAYLOAD_BYTES + 1} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit" in msg, msg
    nothing_written(led, size, before)
    assert led.append_rows(batch_rows(0, 2)).first == size  # the sequencer did not keep the refused tail


# -- 4. refused kinds -------------------------------------------------------------------------------------------

GOVERNED_KINDS = [k for k in kinds() if payload_model(k).GOVERNED]


def some_rows(kind: str, n: int = 2) -> EntryRows:
    fmt, _ = row_format({"x": "y"}, [("n", "int")])
    return EntryRows(kind, ACTOR, SUBJECT, fmt, ["n"], [(i,) for i in range(n)])


def test_governed_kinds_exist_and_include_the_key_events() -> None:
    assert len(GOVERNED_KINDS) > 20
    assert {"key.added", "key.revoked", "key.rotated", "subject.erased", "human.reviewed"} <= set(GOVERNED_KINDS)


@pytest.mark.parametrize("n", [2, 0])
def test_reserved_governed_key_and_unknown_kinds_are_refused_and_nothing_is_written(
        led: Ledger, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    led.append(batch_event(0))
    size, before = led.head_size(), stored(led)
    # a key event kind that is not governed: refused as a key event
    monkeypatch.setitem(events._REGISTRY, "key.sideband", PredictionBatch)
    assert not payload_model("key.sideband").GOVERNED
    for kind in ["ledger.created", "key.sideband", *GOVERNED_KINDS]:
        with pytest.raises(InputError, match=rf"^kind: {kind} cannot be appended as rows; use append_many$"):
            led.append_rows(some_rows(kind, n))
    with pytest.raises(InputError, match=r"^kind: unknown event kind 'no.such_kind'"):
        led.append_rows(some_rows("no.such_kind", n))
    nothing_written(led, size, before)


# -- 6. checks ---------------------------------------------------------------------------------------------------


@pytest.fixture
def keys(led: Ledger, tmp_path: Path) -> SubjectKeys:
    return SubjectKeys(led, tmp_path / "home")


class CountingCheck:
    """Wraps a check; records (seq, view size, actor, payload) of each call."""

    def __init__(self, check: Any) -> None:
        self.check = check
        self.calls: list[tuple[int, int, str | None, dict[str, Any]]] = []

    def __call__(self, view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
        self.calls.append((seq, view.size, actor, dict(payload)))
        if self.check is not None:
            self.check(view, seq, actor, payload)


@pytest.fixture
def made_check(monkeypatch: pytest.MonkeyPatch) -> CountingCheck:
    """The prediction.made check, counted; its check of many (``register_many_check``) records its calls
    in ``many_calls`` as (seq, view size, actor, payloads)."""
    spy = CountingCheck(events._CHECKS["prediction.made"])
    assert events.check_reads("prediction.made") == ("key_id", "request_id")
    monkeypatch.setitem(events._CHECKS, "prediction.made", spy)
    many = events._MANY_CHECKS["prediction.made"]
    spy.many_calls = []  # type: ignore[attr-defined]

    def check_many(view: LedgerView, seq: int, actor: str | None, payloads: list[dict[str, Any]]) -> None:
        spy.many_calls.append((seq, view.size, actor, [dict(p) for p in payloads]))  # type: ignore[attr-defined]
        many(view, seq, actor, payloads)

    monkeypatch.setitem(events._MANY_CHECKS, "prediction.made", check_many)
    return spy


def test_prediction_made_is_checked_once_per_distinct_key_id_and_request_id(
        led: Ledger, keys: SubjectKeys, made_check: CountingCheck) -> None:
    a, b = keys.for_subject("alice").key_id, keys.for_subject("bob").key_id
    key_ids = [DK, a, DK, a, b, b, DK, a, "dk-" + "1" * 32, b]
    payloads = [made_payload(i, key_id=k) for i, k in enumerate(key_ids)]
    size = led.head_size()
    got = led.append_rows(made_rows(payloads))
    assert got.seqs == range(size, size + 10)
    # the check of many runs once, at the first seq, with the payload of each distinct key's first entry
    assert made_check.calls == []
    ((seq, view_size, actor, checked),) = made_check.many_calls  # type: ignore[attr-defined]
    assert seq == view_size == size and actor == ACTOR
    assert checked == [payloads[0], payloads[1], payloads[4], payloads[8]]
    assert_written_as_append_many_would(led, got, made_events(payloads))
    made_check.many_calls.clear()  # type: ignore[attr-defined]
    # one distinct key: the check itself, at the first seq
    size = led.head_size()
    led.append_rows(made_rows([made_payload(i, key_id=a) for i in range(4)]))
    assert [(seq - size, p["key_id"]) for seq, _n, _a, p in made_check.calls] == [(0, a)]
    assert made_check.many_calls == []  # type: ignore[attr-defined]
    made_check.calls.clear()
    led.append_many(made_events(payloads[:3]))  # the per-event path checks each event
    assert len(made_check.calls) == 3
    result = led.verify(deep=True, workers=1)
    assert result.ok, result


def test_prediction_made_with_a_request_id_in_the_clear_is_refused(led: Ledger, made_check: CountingCheck) -> None:
    led.append(batch_event(0))
    size, before = led.head_size(), stored(led)
    in_const = [made_payload(i, request_id="req-1") for i in range(3)]
    with pytest.raises(InputError, match="request_id is no longer recorded verbatim"):
        led.append_rows(made_rows(in_const))
    # only a later row carries one: request_id is then a slot
    later = [made_payload(i, request_id="req-9" if i == 4 else None) for i in range(6)]
    slots = [*MADE_SLOTS, ("request_id", "json")]
    with pytest.raises(InputError, match="request_id is no longer recorded verbatim"):
        led.append_rows(made_rows(later, slots=slots))
    ((seq, _n, _a, checked),) = made_check.many_calls  # type: ignore[attr-defined]
    assert seq == size and [p["request_id"] for p in checked] == [None, "req-9"]
    with pytest.raises(InputError, match="request_id is no longer recorded verbatim"):
        led.append_many(made_events(later))
    nothing_written(led, size, before)


def test_prediction_made_under_an_erased_subject_key_is_refused(led: Ledger, keys: SubjectKeys) -> None:
    live, gone = keys.for_subject("alice").key_id, keys.for_subject("bob").key_id
    keys.erase("bob", request_ref="DSR-1", legal_ground="GDPR Art. 17(1)(a)", reason="request",
               actor="dpo@example.com")
    size, before = led.head_size(), stored(led)
    payloads = [made_payload(i, key_id=k) for i, k in enumerate([live, DK, live, gone, live])]
    with pytest.raises(KeyErased, match=f"key {gone} was erased"):
        led.append_rows(made_rows(payloads))
    with pytest.raises(KeyErased):
        led.append_rows(made_rows([made_payload(0, key_id="sk-" + "e" * 32)]))  # a key the table never held
    nothing_written(led, size, before)
    got = led.append_rows(made_rows([payloads[0], payloads[1], payloads[4]]))
    assert got.seqs == range(size, size + 3)
    assert led.verify(deep=True, workers=1).ok


@pytest.mark.parametrize("erased_at", [0, 499, 500, 1199])
def test_many_subject_keys_are_checked_together_and_an_erased_one_is_refused(
        led: Ledger, keys: SubjectKeys, erased_at: int) -> None:
    """More subject keys than one statement takes (500): the erased one is found wherever it is, named
    as the per-key check names it; without it, every key is usable and the rows are written."""
    found = keys.many_for_subjects(f"subject-{i}" for i in range(1200))
    key_ids = [found[f"subject-{i}"].key_id for i in range(1200)]
    keys.erase(f"subject-{erased_at}", request_ref="DSR-7", legal_ground="GDPR Art. 17(1)(a)", reason="request",
               actor="dpo@example.com")
    size, before = led.head_size(), stored(led)
    payloads = [made_payload(i, key_id=k) for i, k in enumerate([DK, *key_ids])]
    with pytest.raises(KeyErased, match=f"key {key_ids[erased_at]} was erased"):
        led.append_rows(made_rows(payloads))
    nothing_written(led, size, before)
    rest = [p for p in payloads if p["key_id"] != key_ids[erased_at]]
    assert led.append_rows(made_rows(rest)).seqs == range(size, size + 1200)
    assert led.verify(deep=True, workers=1).ok


def test_the_check_of_many_refuses_what_the_check_refuses_first(led: Ledger, keys: SubjectKeys) -> None:
    """Row by row as the per-event path: an erased key in row 0 is refused as such, though row 1 holds a
    request id in the clear (and the other way round)."""
    live, gone = keys.for_subject("gina").key_id, keys.for_subject("hal").key_id
    keys.erase("hal", request_ref="DSR-2", legal_ground="GDPR Art. 17(1)(a)", reason="request", actor="dpo@example.com")
    slots = [*MADE_SLOTS, ("request_id", "json")]
    for payloads in ([made_payload(0, key_id=gone), made_payload(1, key_id=live, request_id="req-1")],
                     [made_payload(0, key_id=live, request_id="req-1"), made_payload(1, key_id=gone)]):
        with pytest.raises(InputError) as want:
            led.append_many(made_events(payloads))
        with pytest.raises(InputError) as got:
            led.append_rows(made_rows(payloads, slots=slots))
        assert type(got.value) is type(want.value) and str(got.value) == str(want.value)


def test_an_erasure_earlier_in_the_same_batch_refuses_many_keys(led: Ledger, keys: SubjectKeys) -> None:
    key_ids = [k.key_id for k in keys.many_for_subjects(["dave", "erin", "frank"]).values()]
    led.append(batch_event(0))
    size, before = led.head_size(), stored(led)
    erasure = Event.from_json({"kind": "subject.erased", "actor": "dpo", "subject": f"key:{key_ids[1]}",
                               "payload": {"key_id": key_ids[1], "request_ref": "DSR-9",
                                           "legal_ground": "GDPR Art. 17", "reason": "r"}})
    rows = made_rows([made_payload(i, key_id=k) for i, k in enumerate(key_ids)])
    with pytest.raises(KeyErased, match=f"key {key_ids[1]} was erased"):
        led._submit([erasure.prepare(), rows])
    nothing_written(led, size, before)


def test_an_erasure_earlier_in_the_same_batch_refuses_the_rows(led: Ledger, keys: SubjectKeys) -> None:
    key_id = keys.for_subject("carol").key_id
    led.append(batch_event(0))
    size, before = led.head_size(), stored(led)
    erasure = Event.from_json({"kind": "subject.erased", "actor": "dpo", "subject": f"key:{key_id}", "payload": {
        "key_id": key_id, "request_ref": "DSR-9", "legal_ground": "GDPR Art. 17", "reason": "r"}})
    rows = made_rows([made_payload(i, key_id=k) for i, k in enumerate([DK, key_id])])
    with pytest.raises(KeyErased, match=f"key {key_id} was erased"):
        led._submit([erasure.prepare(), rows])
    nothing_written(led, size, before)


def test_a_check_without_reads_runs_before_each_entry_seeing_the_earlier_ones(
        led: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    assert events.check_for("prediction.batch") is None and events.check_reads("prediction.batch") is None
    seen: list[tuple[int, int, int | None, int | None]] = []

    def check(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
        before = view.get(seq - 1)
        assert view.get(seq) is None
        seen.append((seq, view.size, payload["count"], before.payload.get("count") if before is not None else None))

    led.append(batch_event(0))  # count 1
    spy = CountingCheck(check)
    monkeypatch.setitem(events._CHECKS, "prediction.batch", spy)
    size = led.head_size()
    got = led.append_rows(batch_rows(1, 5))  # counts 2..6
    assert got.seqs == range(size, size + 5)
    assert seen == [(size + i, size + i, i + 2, i + 1) for i in range(5)]
    assert [(a, p) for _s, _n, a, p in spy.calls] == [(ACTOR, batch_payload(i)) for i in range(1, 6)]
    assert_written_as_append_many_would(led, got, batch_events(1, 5))
    assert led.verify(deep=True, workers=1).ok


def test_a_refusal_by_a_later_entry_s_check_rolls_back_the_entries_it_saw(
        led: Ledger, monkeypatch: pytest.MonkeyPatch, small_limit: int) -> None:
    """The check's reads wrote the earlier rows (several statements on SQLite); the refusal undoes them."""
    led.append_many([batch_event(i) for i in range(10)])
    size, before = led.head_size(), stored(led)
    written: list[int] = []

    def check(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
        if seq > size:
            prev = view.get(seq - 1)
            assert prev is not None  # the rows before it are in the database, in this transaction
            written.append(prev.seq)
        if payload["count"] == 20:
            raise InputError(f"refused at seq {seq}")

    monkeypatch.setitem(events._CHECKS, "prediction.batch", check)
    with pytest.raises(InputError, match=f"^refused at seq {size + 9}$"):
        led.append_rows(batch_rows(10, 15))
    assert written == list(range(size, size + 9))
    nothing_written(led, size, before)
    monkeypatch.delitem(events._CHECKS, "prediction.batch")
    assert led.append_rows(batch_rows(10, 15)).seqs == range(size, size + 15)
    check_ledger(led, proofs=False)


def test_an_oversized_later_entry_rolls_back_the_entries_a_check_wrote(
        led: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """prediction.made checked per entry (no reads declared): its reads flush the earlier rows, then the
    third row is over the limit."""
    monkeypatch.delitem(events._CHECK_READS, "prediction.made")
    spy = CountingCheck(lambda view, seq, actor, payload: view.get(seq - 1))
    monkeypatch.setitem(events._CHECKS, "prediction.made", spy)
    led.append(batch_event(0))
    size, before = led.head_size(), stored(led)
    payloads = [made_of_payload_size(i, MAX_PAYLOAD_BYTES + (i == 2)) for i in range(4)]
    with pytest.raises(InputError, match=rf"at seq {size + 2} \(row 2 of 4, .*\): {MAX_PAYLOAD_BYTES + 1} bytes"):
        led.append_rows(made_rows(payloads))
    assert [seq for seq, *_ in spy.calls] == [size, size + 1, size + 2]
    nothing_written(led, size, before)


def test_a_check_declaring_reads_runs_once_per_distinct_value(led: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = CountingCheck(None)
    monkeypatch.setitem(events._CHECKS, "prediction.batch", spy)
    monkeypatch.setitem(events._CHECK_READS, "prediction.batch", ("automated_decision", "model"))
    size = led.head_size()
    got = led.append_rows(batch_rows(0, 9))  # automated_decision alternates; model is a constant
    assert [(seq - size, p["automated_decision"], p["model"]) for seq, _n, _a, p in spy.calls] == [
        (0, True, "credit@1"), (1, False, "credit@1")]
    assert got.seqs == range(size, size + 9)


# -- 7. a mixed group ------------------------------------------------------------------------------------------


def test_a_group_of_prefixes_and_rows_gets_contiguous_seqs(led: Ledger, small_limit: int) -> None:
    led.append(batch_event(0))
    size = led.head_size()
    a, b, c = batch_events(100, 1), batch_events(200, 1), batch_events(300, 1)
    items: list[EntryPrefix | EntryRows] = [a[0].prepare(), batch_rows(1, 12), b[0].prepare(),
                                            some_rows("prediction.batch", 0), c[0].prepare(), batch_rows(13, 2)]
    got = led._submit(items)
    assert [type(x) for x in got] == [Receipt, Receipts, Receipt, Receipts, Receipt, Receipts]
    assert got[0].seq == size
    assert got[1].seqs == range(size + 1, size + 13)
    assert got[2].seq == size + 13
    assert len(got[3]) == 0
    assert got[4].seq == size + 14
    assert got[5].seqs == range(size + 15, size + 17)
    assert len({got[0].ts, got[1].ts, got[2].ts, got[4].ts, got[5].ts}) == 1
    assert_written_as_append_many_would(led, [got[0], *got[1], got[2], got[4], *got[5]],
                                        [*a, *batch_events(1, 12), *b, *c, *batch_events(13, 2)])
    result = led.verify(deep=True, workers=1)
    assert result.ok, result
    check_ledger(led)


def test_concurrent_rows_events_and_refused_rows_each_get_their_own_receipts(led: Ledger) -> None:
    """Group commit puts several callers' items in one transaction: each caller gets the receipts of its own
    entries, and a caller whose rows are refused fails alone."""
    got: list[tuple[Sequence[Receipt], list[Event]]] = []
    refused: list[InputError] = []
    lock = threading.Lock()

    def rows_caller(k: int) -> None:
        for j in range(15):
            start = k * 1000 + j * 10
            r = led.append_rows(batch_rows(start, 10))
            with lock:
                got.append((r, batch_events(start, 10)))

    def events_caller() -> None:
        for j in range(15):
            evs = batch_events(50_000 + j * 3, 3)
            r = led.append_many(evs)
            with lock:
                got.append((r, evs))

    def refused_caller() -> None:
        for _ in range(15):
            try:
                led.append_rows(made_rows([made_payload(i, request_id="req-1") for i in range(3)]))
            except InputError as exc:
                with lock:
                    refused.append(exc)

    threads = [threading.Thread(target=rows_caller, args=(k,)) for k in range(3)]
    threads += [threading.Thread(target=events_caller), threading.Thread(target=refused_caller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refused) == 15 and all("request_id" in str(e) for e in refused)
    assert len(got) == 3 * 15 + 15
    for receipts, evs in got:
        assert_written_as_append_many_would(led, receipts, evs)
    assert sorted(r.seq for receipts, _ in got for r in receipts) == list(range(1, 1 + 3 * 150 + 45))
    result = led.verify(deep=True, workers=1)
    assert result.ok, result
    check_ledger(led, proofs=False)


# -- 9. a failing later statement ------------------------------------------------------------------------------


def test_a_failure_in_a_later_statement_rolls_back_all_the_rows(sqlite_url: str, small_limit: int) -> None:
    led = make_ledger(sqlite_url)
    try:
        led.append_rows(batch_rows(0, 40))
        size, before = led.head_size(), stored(led)
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:  # in the rows' fourth statement
            db.execute(f"CREATE TRIGGER boom BEFORE INSERT ON entries WHEN NEW.seq = {size + 10} "
                       "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
        with pytest.raises(IntegrityError, match="injected failure"):
            led.append_rows(batch_rows(40, 30))
        assert led.head_size() == size and stored(led) == before
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
            db.execute("DROP TRIGGER boom")
        assert led.verify(deep=True, workers=1).ok
        assert led.append_rows(batch_rows(40, 30)).seqs == range(size, size + 30)
        check_ledger(led, proofs=False)
    finally:
        led.close()


# -- trying to break it ----------------------------------------------------------------------------------------


def test_random_names_labels_and_scores_write_what_append_many_writes(sqlite_led: Ledger) -> None:
    led = sqlite_led
    scores = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))
    labels = st.one_of(st.booleans(), st.integers(-(2**53 - 1), 2**53 - 1), label_text)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(valid_names, st.none() | valid_names, st.lists(st.tuples(labels, scores), min_size=1, max_size=5),
           st.sampled_from(["json", "float"]))
    def one(actor: str, subject: str | None, rows: list[tuple[Any, float | None]], score_slot: str) -> None:
        if score_slot == "float":
            rows = [(lab, 0.25 if sc is None else sc) for lab, sc in rows]
        payloads = [made_payload(i, label=lab, score=sc) for i, (lab, sc) in enumerate(rows)]
        slots = [("input_commitment", "ascii"), ("key_id", "json"), ("label", "json"), ("score", score_slot)]
        got = led.append_rows(made_rows(payloads, actor=actor, subject=subject, slots=slots))
        assert_written_as_append_many_would(led, got, made_events(payloads, actor=actor, subject=subject))

    one()
    result = led.verify(deep=True, workers=1)
    assert result.ok, result


@pytest.mark.parametrize(("actor", "subject"), [("batch\nactor", SUBJECT), ("", SUBJECT), ("svc\x7f", None),
                                                (ACTOR, ""), (ACTOR, "model\x00credit")])
def test_names_that_append_many_refuses_are_not_written_by_append_rows(
        sqlite_led: Ledger, actor: str, subject: str | None) -> None:
    """``EntryRows`` refuses, at construction, an actor or subject that ``Event`` refuses (empty, or with
    control characters), with the same message; before that was checked (found at 34f3fd7), such
    entries were written and ``verify(deep=True)`` rejected them."""
    led = sqlite_led
    size, before = led.head_size(), stored(led)
    with pytest.raises(InputError, match="must be non-empty, without control characters") as want:
        led.append_many(batch_events(0, 2, actor=actor, subject=subject))
    with pytest.raises(InputError) as got:
        led.append_rows(batch_rows(0, 2, actor=actor, subject=subject))
    assert str(got.value) == str(want.value)
    result = led.verify(deep=True, workers=1)
    assert result.ok, f"append_rows wrote entries that deep verification rejects: {result.reason}"
    assert led.head_size() == size and stored(led) == before


@pytest.mark.parametrize("kind", ["human.reviewed", "key.added", "subject.erased"])
def test_the_sequencer_itself_refuses_governed_and_key_rows(led: Ledger, kind: str) -> None:
    """Not only ``append_rows``: rows of a kind whose guards or key history must see each entry are refused
    by the sequencer too, whoever hands them in, and the whole transaction is rolled back."""
    assert kind in GOVERNED_KINDS
    size, before = led.head_size(), stored(led)
    with pytest.raises(InputError, match=f"kind: {re.escape(kind)} cannot be appended as rows"):
        led._submit([batch_event(1).prepare(), some_rows(kind)])
    nothing_written(led, size, before)
