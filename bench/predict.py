"""Batch scoring: predictions recorded per second, against the same scoring unrecorded.

Scores N rows (default 1,000,000) of a CSV with a deployed LogisticRegression:
- per row: one ``prediction.made`` per row (atomic per chunk);
- batch commitment: one ``prediction.batch`` entry over per-row records;
- baseline: the same two-pass read, validation, prediction, commitments and output file, with
  no entries written (``Scorer(record=False)``, bench-only);
- raw SQLite: the entry rows the per-row run wrote (seq, leaf hash, prev, ts, kind, subject,
  bytes), inserted again into an identical empty ledger database (same DDL and indexes, WAL,
  synchronous=FULL, the writer's 64 MiB page cache), one transaction per chunk, in the fastest way
  we know for this driver (multi-row INSERT statements, blobs bound as bytearray), and nothing
  else: no scoring, encoding, hashing or Merkle nodes, no other thread.
Target (issue 7): >= 100,000 predictions/s recorded.

    python3 bench/predict.py [--rows 1000000] [--quick]   # --quick: 100,000 rows
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 rows, for fast iteration")
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    args = ap.parse_args()
    if args.quick:
        args.rows = 100_000
    from backends._batch import predict_file
    from backends.serving import Scorer, resolve
    from ledger.api import Ledger
    from ledger.privacy import SubjectKeys
    from policies._workspace import Workspace
    from tests.integration.serving_world import build
    from tests.integration.test_evidence_cli import applicants

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        world = Path(d)
        build(world)
        source = world / "score.csv"
        applicants(args.rows, 11).drop(columns=["approved", "sex", "race"]).to_csv(source, index=False)
        print(f"batch scoring benchmark: {args.rows:,} rows, LogisticRegression pipeline, SQLite, "
              f"chunks of {args.chunk_rows:,}")
        results = {}
        with Ledger.open(str(world / ".mlledger")) as led:
            ws = Workspace(led, world / ".mlledger")
            deployed = resolve(ws, "credit", "production")
            for name, record, batch in (("unrecorded baseline", False, False), ("per row", True, False),
                                        ("batch commitment", True, True)):
                scorer = Scorer(ws, SubjectKeys(led, world / ".mlledger"), deployed, actor="bench", record=record)
                done = predict_file(scorer, source, world / f"out-{name.replace(' ', '-')}.csv",
                                    batch_commitment=batch, chunk_rows=args.chunk_rows)
                results[name] = done.rows / done.seconds
                print(f"  {name:<22} {results[name]:>10,.0f} rows/s   ({done.seconds:.1f} s, {done.entries:,} entries)")
                if name == "per row":
                    assert done.first_seq is not None
                    first = done.first_seq
        seconds = raw_insert(world / ".mlledger" / "ledger.db", world / "raw", first, args.rows, args.chunk_rows)
        results["raw SQLite"] = args.rows / seconds
        print(f"  {'raw SQLite insert':<22} {results['raw SQLite']:>10,.0f} rows/s   ({seconds:.1f} s, the per-row "
              "run's entry rows only)")
    base, raw = results["unrecorded baseline"], results["raw SQLite"]
    for name in ("per row", "batch commitment"):
        print(f"{name:<22} {results[name]:>10,.0f} predictions/s recorded   ratio to unrecorded "
              f"{results[name] / base:5.2f}   to raw SQLite {results[name] / raw:5.2f}   target >= 100,000/s")


def raw_insert(db: Path, home: Path, first: int, rows: int, chunk: int) -> float:
    """Seconds to insert the entry rows [first, first + rows) of ``db`` into an empty ledger of the same schema."""
    import sqlite3

    from ledger.api import Ledger
    from ledger.note import Signer

    signer = Signer.from_seed("bench.example.com/ledger", bytes(32))
    Ledger.init(str(home), origin=signer.name, verifier_key=signer.verifier_key).close()
    src = sqlite3.connect(db)
    data = [(s, bytearray(h), bytearray(p), t, k, j, bytearray(e)) for s, h, p, t, k, j, e in src.execute(
        "SELECT seq, leaf_hash, prev, ts_us, kind, subject, entry FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq",
        (first, first + rows))]
    src.close()
    conn = sqlite3.connect(home / "ledger.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA cache_size=-65536")
    per = 32766 // 7  # rows per statement (SQLite's default limit of bound parameters)
    head = "INSERT INTO entries (seq, leaf_hash, prev, ts_us, kind, subject, entry) VALUES "
    start = time.perf_counter()
    for at in range(0, len(data), chunk):
        conn.execute("BEGIN IMMEDIATE")
        part = data[at : at + chunk]
        for i in range(0, len(part), per):
            block = part[i : i + per]
            conn.execute(head + ",".join(["(?,?,?,?,?,?,?)"] * len(block)), [v for row in block for v in row])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


if __name__ == "__main__":
    main()
