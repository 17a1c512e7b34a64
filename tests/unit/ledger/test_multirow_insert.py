"""Multi-row INSERT statements (``ledger._sequencer._insert``) write every entry and Merkle node exactly once.

On SQLite a batch is split into statements of ``_SQLITE_PARAMS // width`` rows; the tests shrink the limit
(22 parameters: 3 entry rows, 7 node rows per statement) so that ordinary batches span many statements,
and also cross the real limit once (> 4,680 entry rows). PostgreSQL (``executemany``) runs the same
checks when MLLEDGER_TEST_PG_URL is set.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import func, select

import ledger._sequencer as sequencer
from backends.kinds import PredictionBatch
from ledger import merkle
from ledger.api import Ledger
from ledger.errors import IntegrityError
from ledger.events import Event
from ledger.schema import NODE_MIN_LEVEL, entries, nodes
from tests.conftest import make_ledger
from tests.helpers import policy_event

SMALL_LIMIT = 22  # 22 // 7 = 3 entry rows, 22 // 3 = 7 node rows per statement
ENTRY_WIDTH, NODE_WIDTH = 7, 3


def batch_event(i: int) -> Event:
    """A small ungoverned, unchecked entry (prediction.batch)."""
    h = hashlib.sha256(str(i).encode()).hexdigest()
    return Event(PredictionBatch(model="credit@1", artifact_sha256=h, stage="production", deployed_seq=1,
                                 count=i + 1, root=h, records_sha256=h, automated_decision=i % 2 == 0),
                 actor="svc@example.com", subject="model:credit@1")


def mixed_events(start: int, n: int) -> list[Event]:
    """Mostly unchecked entries, with a governed one (its guards read the ledger, which flushes the rows
    buffered so far) every 37th."""
    return [policy_event(i) if i % 37 == 5 else batch_event(i) for i in range(start, start + n)]


class Statements:
    """Records (table, rows) of each multi-row statement ``_insert`` builds."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def of(self, table: str) -> list[int]:
        return [count for t, _w, count in self.calls if t == table]


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Statements:
    spy = Statements()
    original = sequencer._values

    def values(head: str, width: int, count: int) -> str:
        spy.calls.append(("entries" if head.startswith("INSERT INTO entries") else "nodes", width, count))
        return original(head, width, count)

    monkeypatch.setattr(sequencer, "_values", values)
    return spy


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sequencer, "_SQLITE_PARAMS", SMALL_LIMIT)
    return SMALL_LIMIT


@pytest.fixture
def led(any_url: str) -> Iterator[Ledger]:
    ledger = make_ledger(any_url)
    yield ledger
    ledger.close()


def is_sqlite(led: Ledger) -> bool:
    return led.url.startswith("sqlite")


def stored(led: Ledger) -> tuple[list[tuple[int, bytes, bytes, bytes]], dict[tuple[int, int], bytes]]:
    with led.store.engine.connect() as conn:
        rows = [(int(s), bytes(h), bytes(p), bytes(e)) for s, h, p, e in conn.execute(
            select(entries.c.seq, entries.c.leaf_hash, entries.c.prev, entries.c.entry).order_by(entries.c.seq))]
        node_rows = list(conn.execute(select(nodes.c.level, nodes.c.idx, nodes.c.hash)))
        assert conn.execute(select(func.count()).select_from(entries)).scalar_one() == len(rows)
    stored_nodes: dict[tuple[int, int], bytes] = {}
    for level, idx, h in node_rows:
        assert (int(level), int(idx)) not in stored_nodes, f"node {(level, idx)} stored twice"
        stored_nodes[(int(level), int(idx))] = bytes(h)
    return rows, stored_nodes


def expected_nodes(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete subtree at NODE_MIN_LEVEL or above, recomputed from the leaf hashes."""
    out: dict[tuple[int, int], bytes] = {}
    level, hashes = 0, leaves
    while len(hashes) >= 2:
        hashes = [merkle.node_hash(hashes[j], hashes[j + 1]) for j in range(0, len(hashes) - 1, 2)]
        level += 1
        if level >= NODE_MIN_LEVEL:
            out.update({(level, i): h for i, h in enumerate(hashes)})
    return out


def proof_sizes(size: int) -> list[int]:
    return sorted({s for s in (1, 2, 3, 15, 16, 17, 31, 32, 33, 100, size // 3, size // 2, size - 17, size - 1, size)
                   if 0 < s <= size})


def check_ledger(led: Ledger, *, proofs: bool = True) -> list[bytes]:
    """Verification passes; seqs 0..size-1 each once, with the right leaf hash and link; the nodes table is the
    tree recomputed from scratch; proofs from the stored nodes match the reference generators and verify."""
    result = led.verify(workers=1)
    assert result.ok, result
    rows, stored_nodes = stored(led)
    size = led.head_size()
    assert result.size == size == len(rows)
    assert [seq for seq, _h, _p, _e in rows] == list(range(size))
    leaves = [merkle.leaf_hash(e) for _s, _h, _p, e in rows]
    prev = bytes(32)
    for (seq, h, p, e), leaf in zip(rows, leaves, strict=True):
        assert h == leaf, f"seq {seq}: stored leaf hash"
        assert p == prev, f"seq {seq}: prev"
        assert orjson.loads(e)["seq"] == seq
        prev = leaf
    assert stored_nodes == expected_nodes(leaves)
    root = merkle.root_of(leaves)
    assert led.head().root == root == result.root
    if proofs:
        sizes = proof_sizes(size)
        roots = {n: merkle.root_of(leaves[:n]) for n in sizes}
        for n in sizes:
            assert led.root_at(n) == roots[n]
            for seq in sorted({0, n // 2, n - 1, (n * 7) // 11}):
                proof = led.inclusion_proof(seq, n)
                assert proof == merkle.inclusion_proof(seq, leaves[:n])
                merkle.verify_inclusion(leaves[seq], seq, n, proof, roots[n])
        for old in sizes:
            for new in sizes:
                if old <= new and (old in (1, 16, 17, size // 2) or new == size):
                    proof = led.consistency_proof(old, new)
                    assert proof == merkle.consistency_proof(old, leaves[:new])
                    merkle.verify_consistency(old, new, roots[old], roots[new], proof)
    return leaves


def test_batches_split_into_small_statements_store_every_entry_and_node(
        led: Ledger, small_limit: int, statements: Statements) -> None:
    receipts = led.append_many(mixed_events(0, 300))
    assert [r.seq for r in receipts] == list(range(1, 301))
    start = 301
    for n in (1, 2, 3, 4, 7, 16, 33, 100, 250):
        got = led.append_many(mixed_events(start, n))
        assert [r.seq for r in got] == list(range(start, start + n))
        start += n
    leaves = check_ledger(led)
    assert len(leaves) == start
    if is_sqlite(led):
        entry_rows, node_rows = statements.of("entries"), statements.of("nodes")
        assert sum(entry_rows) == start - 1  # every appended row, once (genesis was written before the spy)
        assert max(entry_rows) == small_limit // ENTRY_WIDTH and len(entry_rows) > 200
        assert max(node_rows) == small_limit // NODE_WIDTH and sum(node_rows) > 2 * max(node_rows)
        assert {w for _t, w, _c in statements.calls} == {ENTRY_WIDTH, NODE_WIDTH}


def test_receipts_match_the_stored_entries(led: Ledger, small_limit: int) -> None:
    receipts = led.append_many([batch_event(i) for i in range(50)])
    rows, _ = stored(led)
    by_seq = {seq: h for seq, h, _p, _e in rows}
    for r in receipts:
        assert by_seq[r.seq] == r.leaf_hash
        assert led.get(r.seq).leaf_hash == r.leaf_hash


def test_more_than_one_statement_at_the_real_limit(led: Ledger, statements: Statements) -> None:
    per = sequencer._SQLITE_PARAMS // ENTRY_WIDTH
    n = 10_000
    assert n > 2 * per or sequencer._SQLITE_PARAMS < 32766
    receipts = led.append_many([batch_event(i) for i in range(n)])
    assert [r.seq for r in receipts] == list(range(1, n + 1))
    if is_sqlite(led):
        rows = statements.of("entries")
        assert rows == [per] * (n // per) + ([n % per] if n % per else [])
        assert len(rows) >= 3
    check_ledger(led)


def test_a_failure_in_a_later_statement_rolls_back_every_statement(sqlite_url: str, small_limit: int,
                                                                   statements: Statements) -> None:
    led = make_ledger(sqlite_url)
    try:
        led.append_many([batch_event(i) for i in range(40)])
        before = stored(led)
        size = led.head_size()
        path = sqlite_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:  # seq size + 10 is in the batch's fourth statement
            db.execute(f"CREATE TRIGGER boom BEFORE INSERT ON entries WHEN NEW.seq = {size + 10} "
                       "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
        with pytest.raises(IntegrityError, match="injected failure"):
            led.append_many([batch_event(i) for i in range(100, 130)])
        assert len(statements.of("entries")) > 4  # the batch did span several statements
        assert led.head_size() == size
        assert stored(led) == before
        with sqlite3.connect(path) as db:
            db.execute("DROP TRIGGER boom")
        got = led.append_many([batch_event(i) for i in range(200, 260)])
        assert got[0].seq == size
        check_ledger(led)
    finally:
        led.close()
