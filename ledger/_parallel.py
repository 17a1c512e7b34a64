"""Verification of a large ledger across processes.

The log is cut into segments of 2**SEGMENT_LEVEL entries, aligned so that each
full segment is one complete Merkle subtree. Each worker process verifies its
segments with the same ``ChainVerifier`` (every row check, plus the stored Merkle
nodes of levels up to SEGMENT_LEVEL inside the segment). The parent then:
1. links the segments: each segment's first ``prev`` must be the previous
   segment's last leaf hash, and its first ``ts`` must not be earlier;
2. rebuilds the levels above SEGMENT_LEVEL from the segment roots and checks the
   stored nodes there;
3. reports what a sequential pass would: the first failing row in seq order,
   else the first wrong stored node.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Final

from ledger import merkle
from ledger.canonical import GENESIS_PREV

__all__ = ["PARALLEL_MIN", "SEGMENT_LEVEL", "verify_parallel"]

SEGMENT_LEVEL: Final = 17
#: Below this many entries, one process is faster than starting workers.
PARALLEL_MIN: Final = 2 << SEGMENT_LEVEL


@dataclass(frozen=True)
class _Segment:
    start: int
    size: int  # entries verified (start + count)
    first_prev: str | None
    first_ts: str | None
    last_leaf: str
    last_ts: str
    frontier: tuple[bytes, ...]
    failure: tuple[int, str] | None  # a row check failed
    node_failure: tuple[int, str] | None  # rows fine, a stored node inside the segment is wrong


def _verify_segment(url: str, start: int, end: int, segment_level: int) -> _Segment:
    from ledger._store import Store
    from ledger.verify import ChainVerifier

    store = Store.connect(url, create=False)
    try:
        checker = ChainVerifier(start=start)
        with store.engine.connect() as conn, conn.begin():
            tx = store.raw_tx(conn)
            buf: list[object] = []
            for row in store.iter_rows(tx, start=start, stop=end, chunk=20000):
                buf.append(row)
                if len(buf) == 20000:
                    if not checker.feed(buf):  # type: ignore[arg-type]
                        break
                    buf = []
            if buf:
                checker.feed(buf)  # type: ignore[arg-type]
            if checker.failure is None and checker.size < end:
                checker.feed([(end, b"", 0, "", None, b"")])  # reports the first missing seq
            row_failure = checker.failure
            if row_failure is None:
                sql = tx.sql("SELECT level, idx, hash FROM nodes "
                             "WHERE level = {p} AND idx >= {p} AND idx < {p}")
                stored = []
                for level in range(4, segment_level + 1):
                    stored.extend(tx.rows(sql, (level, start >> level, -(-end >> level))))
                checker.check_nodes(stored)
    finally:
        store.dispose()
    failure = None if row_failure is None else (row_failure.seq, row_failure.reason)
    node_failure = None
    if row_failure is None and checker.failure is not None:
        node_failure = (checker.failure.seq, checker.failure.reason)
    return _Segment(start, checker.size, checker.first_prev, checker.first_ts, checker.last_leaf_hex,
                    checker.last_ts, tuple(checker.frontier.hashes), failure, node_failure)


def verify_parallel(
    url: str, size: int, stored_upper: Callable[[], list[tuple[int, int, bytes]]], *,
    workers: int | None = None, progress: Callable[[int], None] | None = None,
    segment_level: int = SEGMENT_LEVEL,
) -> tuple[int, bytes, tuple[int, str] | None, str]:
    """Verify entries [0, size) in segments; returns (size, root, first failure, last ts).

    ``stored_upper()`` returns the stored nodes above ``segment_level`` (>= 4).
    """
    if segment_level < 4:
        raise ValueError("segments must hold complete subtrees of level >= 4")
    segment = 1 << segment_level
    bounds = [(s, min(s + segment, size)) for s in range(0, size, segment)]
    results: dict[int, _Segment] = {}
    n = workers or min(len(bounds), os.cpu_count() or 1)
    # fork: workers open their own connections and never touch the parent's; spawn
    # would re-import the caller's __main__, which library code cannot demand.
    with ProcessPoolExecutor(n, mp_context=get_context("fork")) as pool:
        futures = [pool.submit(_verify_segment, url, s, e, segment_level) for s, e in bounds]
        done = 0
        for fut in as_completed(futures):
            seg = fut.result()
            results[seg.start] = seg
            done += seg.size - seg.start
            if progress is not None:
                progress(done)
    # (1) link the segments, in order; the first failure in seq order wins
    prev, last_ts = GENESIS_PREV, ""
    top = merkle.Frontier()
    upper: dict[tuple[int, int], bytes] = {}
    for s, _e in bounds:
        seg = results[s]
        if s > 0 and seg.first_prev != prev:
            return s, b"", (s, "prev does not match the previous entry's leaf hash "
                               "(an entry was inserted, deleted or rewritten before it)"), last_ts
        if s > 0 and seg.first_ts is not None and seg.first_ts < last_ts:
            return s, b"", (s, f"ts {seg.first_ts} is earlier than the previous entry's {last_ts}"), last_ts
        if seg.failure is not None:
            return seg.failure[0], b"", seg.failure, last_ts
        prev, last_ts = seg.last_leaf, seg.last_ts
        if len(seg.frontier) == 1 and seg.size - seg.start == segment:
            for level, idx, h in top.append(seg.frontier[0]):
                upper[(level + segment_level, idx)] = h
    # (2) stored nodes: inside the segments, then above them (rows are reported first,
    # as a sequential pass does)
    for s, _e in bounds:
        nf = results[s].node_failure
        if nf is not None:
            return nf[0], b"", nf, last_ts
    for level, idx, h in stored_upper():
        if (idx + 1) << level > size:
            continue
        if upper.get((level, idx)) != bytes(h):
            return size, b"", (idx << level, f"stored Merkle node (level {level}, index {idx}) "
                                             "does not match the entries"), last_ts
        upper.pop((level, idx))
    if upper:
        (level, idx), _ = min(upper.items(), key=lambda kv: kv[0][1] << kv[0][0])
        return size, b"", (idx << level, f"Merkle node (level {level}, index {idx}) is missing"), last_ts
    tail = results[bounds[-1][0]]
    partial = () if (tail.size - tail.start == segment) else tail.frontier
    return size, merkle.fold([*top.hashes, *partial]), None, last_ts
