"""Batch scoring: predictions recorded per second, against the same scoring unrecorded.

Scores N rows (default 1,000,000) of a CSV with a deployed LogisticRegression:
- per row: one ``prediction.made`` per row (atomic per chunk);
- batch commitment: one ``prediction.batch`` entry over per-row records;
- baseline: the same two-pass read, validation, prediction, commitments and output file, with
  no entries written (``Scorer(record=False)``, bench-only).
Target (issue 7): >= 100,000 predictions/s recorded.

    python3 bench/predict.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
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
        print(f"batch scoring benchmark: {args.rows:,} rows, LogisticRegression pipeline, SQLite, chunks of 50,000")
        results = {}
        with Ledger.open(str(world / ".mlledger")) as led:
            ws = Workspace(led, world / ".mlledger")
            deployed = resolve(ws, "credit", "production")
            for name, record, batch in (("unrecorded baseline", False, False), ("per row", True, False),
                                        ("batch commitment", True, True)):
                scorer = Scorer(ws, SubjectKeys(led, world / ".mlledger"), deployed, actor="bench", record=record)
                done = predict_file(scorer, source, world / f"out-{name.replace(' ', '-')}.csv",
                                    batch_commitment=batch)
                results[name] = done.rows / done.seconds
                print(f"  {name:<22} {results[name]:>10,.0f} rows/s   ({done.seconds:.1f} s, {done.entries:,} entries)")
    base = results["unrecorded baseline"]
    for name in ("per row", "batch commitment"):
        print(f"{name:<22} {results[name]:>10,.0f} predictions/s recorded   ratio to unrecorded "
              f"{results[name] / base:5.2f}   target >= 100,000/s")


if __name__ == "__main__":
    main()
