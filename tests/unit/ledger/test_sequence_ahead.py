"""``Ledger.sequence_ahead``: ``EntryRows`` sequenced outside the write lock are written as sequenced only
when the tail found under the lock is the one assumed; otherwise they are sequenced again there. Either
way the ledger holds the same entries a plain ``append_rows`` writes, its nodes table is the tree
recomputed from scratch, and the kind's check runs under the lock. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import ledger._sequencer as sequencer
from backends.kinds import PredictionBatch
from ledger.api import Ledger
from ledger.canonical import MAX_PAYLOAD_BYTES, row_format
from ledger.entry_rows import EntryRows
from ledger.errors import InputError
from ledger.events import Event
from ledger.privacy import KeyErased, SubjectKeys
from tests.conftest import make_ledger
from tests.unit.ledger.test_multirow_insert import check_ledger, stored

H = hashlib.sha256(b"x").hexdigest()
BATCH_CONST: dict[str, Any] = {"model": "credit@1", "artifact_sha256": H, "stage": "production", "deployed_seq": 1,
                               "root": H, "records_sha256": H, "automated_decision": True}
ACTOR, SUBJECT = "svc@example.com", "model:credit@1"


def batch_rows(start: int, n: int) -> EntryRows:
    """``n`` prediction.batch entries (ungoverned, unchecked) whose counts are ``start + 1 ..``."""
    fmt, order = row_format(BATCH_CONST, [("count", "int")], where="test")
    assert order == ["count"]
    counts = list(range(start + 1, start + n + 1))
    return EntryRows("prediction.batch", ACTOR, SUBJECT, fmt, order, [(c,) for c in counts])


def decision_rows(key_ids: list[str], *, request_id: str | None = None) -> EntryRows:
    const: dict[str, Any] = {"model": "credit@1", "artifact_sha256": H, "stage": "production", "deployed_seq": 1,
                             "latency_ms": 0.5, "automated_decision": True, "sealed": False, "label": 1,
                             "score": 0.5, "request_id": request_id}
    fmt, order = row_format(const, [("input_commitment", "ascii"), ("key_id", "json")], where="test")
    commitments = [f"{i:064x}" for i in range(len(key_ids))]
    by = {"input_commitment": [c.encode() for c in commitments], "key_id": [orjson.dumps(k) for k in key_ids]}
    return EntryRows("prediction.made", ACTOR, SUBJECT, fmt, order, list(zip(*[by[n] for n in order], strict=True)))


class FormatSpy:
    """Counts entries formatted under the write lock (``Sequencer.write``) and ahead of it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.in_write = 0
        original_format = sequencer._format_rows
        original_write = sequencer.Sequencer.write
        writing = [False]

        def format_rows(item: EntryRows, *args: Any, **kw: Any) -> None:
            only = args[6] if len(args) > 6 else kw.get("only")
            if writing[0]:
                self.in_write += len(item) if only is None else 1
            original_format(item, *args, **kw)

        def write(seq: Any, *args: Any, **kw: Any) -> Any:
            writing[0] = True
            try:
                return original_write(seq, *args, **kw)
            finally:
                writing[0] = False

        monkeypatch.setattr(sequencer, "_format_rows", format_rows)
        monkeypatch.setattr(sequencer.Sequencer, "write", write)


@pytest.fixture
def led(any_url: str) -> Iterator[Ledger]:
    ledger = make_ledger(any_url)
    yield ledger
    ledger.close()


def entries_without_time(led: Ledger) -> list[dict[str, Any]]:
    out = []
    for _seq, _h, _p, raw in stored(led)[0]:
        e = orjson.loads(raw)
        del e["ts"], e["prev"]
        out.append(e)
    return out


def test_a_chain_sequenced_ahead_is_written_as_sequenced(led: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FormatSpy(monkeypatch)
    chunks = [batch_rows(0, 5), batch_rows(5, 17), batch_rows(22, 64)]
    after = None
    for rows in chunks:
        led.sequence_ahead(rows, after=after)
        assert rows.ahead is not None
        after = rows
    got = [led.append_rows(rows) for rows in chunks]
    assert spy.in_write == 0  # nothing formatted again under the lock
    assert [list(r.seqs) for r in got] == [list(range(1, 6)), list(range(6, 23)), list(range(23, 87))]
    leaves = check_ledger(led)
    for receipts in got:
        assert [r.leaf_hash for r in receipts] == leaves[receipts.first : receipts.first + len(receipts)]
    counts = [e["payload"]["count"] for e in entries_without_time(led)[1:]]
    assert counts == list(range(1, 87))


def test_the_same_entries_as_without_sequencing_ahead(any_url: str, tmp_path: Path) -> None:
    plain = make_ledger(any_url)
    try:
        plain.append_rows(batch_rows(0, 40))
        plain.append_rows(batch_rows(40, 9))
        want = entries_without_time(plain)
    finally:
        plain.close()
    other = make_ledger(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        first, second = batch_rows(0, 40), batch_rows(40, 9)
        other.sequence_ahead(first)
        other.sequence_ahead(second, after=first)
        other.append_rows(first)
        other.append_rows(second)
        assert entries_without_time(other) == want
        check_ledger(other)
    finally:
        other.close()


def test_a_tail_moved_by_another_append_is_sequenced_again(led: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FormatSpy(monkeypatch)
    rows = batch_rows(0, 30)
    led.sequence_ahead(rows)
    led.append(Event(PredictionBatch(**BATCH_CONST, count=999), actor=ACTOR, subject=SUBJECT))  # moves the tail
    got = led.append_rows(rows)
    assert spy.in_write == 30  # the ahead was for seq 1; the rows went to seq 2
    assert got.first == 2 and len(got) == 30
    check_ledger(led)


def test_a_tail_moved_by_another_process_is_sequenced_again(any_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FormatSpy(monkeypatch)
    led = make_ledger(any_url)
    try:
        led.append_rows(batch_rows(0, 3))
        rows = batch_rows(3, 12)
        led.sequence_ahead(rows)  # from this ledger's last committed write
        with Ledger.open(any_url) as second:  # another writer on the same database
            second.append(Event(PredictionBatch(**BATCH_CONST, count=500), actor=ACTOR, subject=SUBJECT))
        got = led.append_rows(rows)
        assert got.first == 5 and spy.in_write == 12 + 3
        check_ledger(led)
    finally:
        led.close()


def test_chunks_appended_out_of_order_are_sequenced_again(led: Ledger) -> None:
    first, second = batch_rows(0, 4), batch_rows(4, 4)
    led.sequence_ahead(first)
    led.sequence_ahead(second, after=first)
    assert led.append_rows(second).first == 1
    assert led.append_rows(first).first == 5
    assert [e["payload"]["count"] for e in entries_without_time(led)[1:]] == [5, 6, 7, 8, 1, 2, 3, 4]
    check_ledger(led)


def test_after_a_chunk_not_sequenced_ahead_there_is_nothing_to_build_on(led: Ledger) -> None:
    first, second = batch_rows(0, 4), batch_rows(4, 4)
    led.sequence_ahead(second, after=first)
    assert second.ahead is None
    led.append_rows(first)
    led.append_rows(second)
    check_ledger(led)


def test_rows_sequenced_ahead_behind_another_group_s_entries_are_sequenced_again(led: Ledger) -> None:
    """In one transaction, rows that do not come first are sequenced there (their ahead assumed the tail)."""
    rows = batch_rows(0, 6)
    led.sequence_ahead(rows)
    pre = Event(PredictionBatch(**BATCH_CONST, count=77), actor=ACTOR, subject=SUBJECT).prepare()
    receipt, receipts = led._submit([pre, rows])
    assert receipt.seq == 1 and receipts.first == 2
    check_ledger(led)


def test_entries_committed_with_rows_sequenced_ahead_share_their_time(led: Ledger) -> None:
    """The rows keep the time they were sequenced at (not earlier than the tail's); entries of other
    callers committed in the same transaction get that time too (FORMAT.md 2.3)."""
    rows = batch_rows(0, 3)
    led.sequence_ahead(rows)
    assert rows.ahead is not None
    time.sleep(0.02)
    pre = Event(PredictionBatch(**BATCH_CONST, count=77), actor=ACTOR, subject=SUBJECT).prepare()
    receipts, receipt = led._submit([rows, pre])
    assert receipts.first == 1 and receipt.seq == 4
    stamps = {orjson.loads(raw)["ts"] for _s, _h, _p, raw in stored(led)[0][1:]}
    assert stamps == {rows.ahead.ts} and receipt.ts == receipts.ts == rows.ahead.ts
    check_ledger(led, proofs=False)


def test_a_key_erased_after_sequencing_ahead_is_refused_under_the_lock(any_url: str, tmp_path: Path) -> None:
    led = make_ledger(any_url)
    try:
        keys = SubjectKeys(led, tmp_path / "home")
        key = keys.for_subject("subject-1")
        rows = decision_rows([key.key_id] * 3)
        led.sequence_ahead(rows)
        assert rows.ahead is not None
        keys.erase("subject-1", request_ref="r" * 64, legal_ground="art17", reason="asked", actor="dpo@example.com")
        before = stored(led)
        with pytest.raises(KeyErased):
            led.append_rows(rows)
        assert stored(led) == before
        check_ledger(led, proofs=False)
    finally:
        led.close()


def test_a_decision_with_a_request_id_in_the_clear_is_refused_though_sequenced_ahead(led: Ledger) -> None:
    rows = decision_rows(["dk-" + "0" * 32] * 2, request_id="req-1")
    led.sequence_ahead(rows)
    size = led.head_size()
    with pytest.raises(InputError, match="request_id"):
        led.append_rows(rows)
    assert led.head_size() == size


def test_a_payload_over_the_limit_is_refused_when_sequenced_ahead(led: Ledger) -> None:
    fmt, _ = row_format({}, [("blob", "json")])
    over = orjson.dumps("x" * (MAX_PAYLOAD_BYTES - len(fmt % (b'""',)) + 1))
    rows = EntryRows("prediction.batch", ACTOR, SUBJECT, fmt, ["blob"], [(b'"ok"',), (over,)])
    with pytest.raises(InputError, match=r"seq 2 \(row 1 of 2, .*over the \d+-byte limit"):
        led.sequence_ahead(rows)
    assert led.head_size() == 1


def test_a_kind_checked_entry_by_entry_is_not_sequenced_ahead(led: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    import ledger.events as events

    monkeypatch.setitem(events._CHECKS, "prediction.batch", lambda view, seq, actor, payload: None)
    rows = batch_rows(0, 3)
    led.sequence_ahead(rows)
    assert rows.ahead is None
    led.append_rows(rows)
    check_ledger(led, proofs=False)


@pytest.mark.parametrize(("size", "prev", "last_ts", "fits"), [
    (5, b"p", 10, True), (6, b"p", 10, False), (5, b"q", 10, False), (5, b"p", 11, False), (5, b"p", 9, True)])
def test_ahead_fits_only_the_tail_it_assumed(size: int, prev: bytes, last_ts: int, fits: bool) -> None:
    from ledger import merkle

    ahead = sequencer.Ahead(5, b"p", 10, "t", [], [b"l"], [], merkle.Frontier())
    assert ahead.fits(size, prev, last_ts) is fits
