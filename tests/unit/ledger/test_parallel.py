"""Parallel verification reports exactly what a sequential pass reports.

Small segments (32 entries) make many segments out of a small ledger, so segment
boundaries, upper Merkle levels and partial tails are all exercised.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from ledger._parallel import verify_parallel
from ledger.api import Ledger
from ledger.schema import nodes
from tests.conftest import make_ledger
from tests.helpers import dataset_event, policy_event
from tests.tamper import Tamperer

LEVEL = 5  # 32-entry segments


def parallel(led: Ledger) -> tuple[int | None, str | None, bytes | None]:
    def upper() -> list[tuple[int, int, bytes]]:
        with led.store.engine.connect() as conn:
            query = select(nodes.c.level, nodes.c.idx, nodes.c.hash).where(nodes.c.level > LEVEL)
            return [(lv, i, bytes(h)) for lv, i, h in conn.execute(query)]

    _size, root, failure, _ts = verify_parallel(led.url, led.head_size(), upper, workers=2,
                                              segment_level=LEVEL)
    if failure is None:
        return None, None, root
    return failure[0], failure[1], None


def sequential(led: Ledger) -> tuple[int | None, str | None, bytes | None]:
    r = led.verify(workers=1)
    return (None, None, r.root) if r.ok else (r.bad_seq, r.reason, None)


@pytest.fixture
def big(sqlite_url: str) -> Ledger:
    led = make_ledger(sqlite_url)
    led.append_many([policy_event(i) if i % 2 else dataset_event(i) for i in range(200)])
    yield led
    led.close()


def test_a_clean_ledger_gives_the_same_root(big: Ledger) -> None:
    assert parallel(big) == sequential(big)
    assert parallel(big)[2] == big.head().root


TAMPERS: dict[str, Callable[[Tamperer], None]] = {
    "modified-in-segment": lambda t: t.modify_byte(45),
    "modified-first-of-segment": lambda t: t.modify_byte(64),
    "deleted-last-of-segment": lambda t: t.delete(95),
    "swapped-across-segments": lambda t: t.swap(31, 32),
    "inserted": lambda t: t.insert_forged(100),
    "rewritten-at-boundary": lambda t: t.rewrite_recomputed(127),
    "rewritten-mid": lambda t: t.rewrite_recomputed(70),
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_tampering_fails_at_the_same_seq_as_a_sequential_pass(big: Ledger, tamper: str) -> None:
    tam = Tamperer(big.url)
    try:
        TAMPERS[tamper](tam)
    finally:
        tam.close()
    seq_result = sequential(big)
    assert seq_result[0] is not None
    assert parallel(big)[0] == seq_result[0]


def test_a_tampered_upper_merkle_node_is_caught(big: Ledger) -> None:
    tam = Tamperer(big.url)
    try:
        tam.execute("UPDATE nodes SET hash = :h WHERE level = 6 AND idx = 1", h=b"\x00" * 32)
    finally:
        tam.close()
    seq, reason, _ = parallel(big)
    assert seq == 64 and reason is not None and "Merkle node (level 6, index 1)" in reason


def test_segments_must_hold_complete_stored_subtrees(big: Ledger) -> None:
    with pytest.raises(ValueError, match="level >= 4"):
        verify_parallel(big.url, 10, list, segment_level=3)
