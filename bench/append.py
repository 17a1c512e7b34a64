"""Append throughput: mlledger against raw driver inserts of rows of the same shape.

The raw baseline inserts the same rows (seq, leaf hash, prev, ts, kind, subject,
entry bytes) into an identical ``entries`` table (same DDL and indexes, made by
``Ledger.init``) with the driver's executemany, the same durability settings and the
same batch size. mlledger additionally encodes, hashes, chains and stores Merkle nodes.

    python3 bench/append.py [--url postgresql+psycopg://...] [--events 20000]
"""

from __future__ import annotations

import argparse
import hashlib

from _common import dbapi, events, fresh_url, new_ledger, report, timed


def raw_rows(n: int) -> list[tuple[object, ...]]:
    """Rows shaped like mlledger's, from real entry bytes."""
    evs = events(n, start=10_000_000)
    rows = []
    prev = hashlib.sha256(b"raw baseline").digest()
    for i, ev in enumerate(evs, start=1):
        data = ev.prepare().data + prev.hex().encode() + b'","seq":1,"subject":null,"ts":"x","v":1}'
        leaf = hashlib.sha256(b"\x00" + data).digest()
        rows.append((i, leaf, prev, 1_795_914_291_856_428, ev.kind, ev.subject, data))
        prev = leaf
    return rows


def raw_insert(url: str, rows: list[tuple[object, ...]], batch: int) -> float:
    conn = dbapi(url)
    sqlite = url.startswith("sqlite")
    ph = "?" if sqlite else "%s"
    cols = "seq, leaf_hash, prev, ts_us, kind, subject, entry"
    sql = f"INSERT INTO entries ({cols}) VALUES ({','.join([ph] * 7)})"

    def run() -> None:
        cur = conn.cursor()
        for at in range(0, len(rows), batch):
            if sqlite:
                conn.execute("BEGIN IMMEDIATE")
            cur.executemany(sql, rows[at : at + batch])
            conn.commit()

    seconds = timed(run)
    conn.close()
    return len(rows) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="PostgreSQL base URL (default: a temporary SQLite file)")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--single", type=int, default=2_000)
    args = ap.parse_args()
    engine = "PostgreSQL" if args.url else "SQLite"
    print(f"append benchmark on {engine}: {args.events:,} batched, {args.single:,} single")

    batch_events = events(args.events)
    rows = raw_rows(args.events)
    # 1. Batched, durable: 1,000 per append_many (one transaction each).
    with fresh_url(args.url) as url:
        led = new_ledger(url)
        ours = args.events / timed(lambda: [led.append_many(batch_events[i : i + 1000])
                                             for i in range(0, args.events, 1000)])
        assert led.verify().ok
        led.close()
    with fresh_url(args.url) as url:
        new_ledger(url).close()  # identical schema, genesis at seq 0
        base = raw_insert(url, rows, 1000)
    report("batched append (1,000 per batch, durable)", ours, base, "ev/s", ">= 150,000 ev/s and >= 0.5x raw")

    # 1b. The same including validation of each event from JSON (what `mlledger append` does).
    from ledger.events import Event

    dicts = [e.to_json() for e in batch_events]
    with fresh_url(args.url) as url:
        led = new_ledger(url)
        with_validation = args.events / timed(lambda: [
            led.append_many([Event.from_json(d) for d in dicts[i : i + 1000]])
            for i in range(0, args.events, 1000)])
        led.close()
    report("  ... including JSON validation", with_validation, base, "ev/s", "(informative)")

    # 2. Single durable appends: one commit per event.
    single = batch_events[: args.single]
    with fresh_url(args.url) as url:
        led = new_ledger(url)
        ours = args.single / timed(lambda: [led.append(e) for e in single])
        led.close()
    with fresh_url(args.url) as url:
        new_ledger(url).close()
        base = raw_insert(url, rows[: args.single], 1)
    report("single durable append (commit per event)", ours, base, "ev/s", ">= 3,000 ev/s")


if __name__ == "__main__":
    main()
