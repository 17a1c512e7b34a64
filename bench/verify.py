"""Full verification throughput against a raw read-and-hash loop over the same rows.

The raw baseline is the least any verifier must do: read every entry's bytes with
the bare driver and SHA-256 them. mlledger additionally parses each entry, checks
seq, prev, ts and the indexed columns, rebuilds the Merkle tree and compares every
stored node.

    python3 bench/verify.py [--url postgresql+psycopg://...] [--entries 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import time

from _common import dbapi, events, fresh_url, new_ledger, report, timed


def raw_read_and_hash(url: str) -> int:
    conn = dbapi(url)
    cur = conn.cursor()
    cur.execute("SELECT seq, entry FROM entries ORDER BY seq")
    sha = hashlib.sha256
    n = 0
    while rows := cur.fetchmany(20000):
        for _seq, data in rows:
            sha(b"\x00" + bytes(data)).digest()
        n += len(rows)
    conn.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="PostgreSQL base URL (default: a temporary SQLite file)")
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = ap.parse_args()
    engine = "PostgreSQL" if args.url else "SQLite"
    with fresh_url(args.url) as url:
        led = new_ledger(url)
        t = time.perf_counter()
        template = events(3000)
        made = 1
        while made < args.entries:
            n = min(10_000, args.entries - made)
            led.append_many((template * 4)[:n])
            made += n
        print(f"verify benchmark on {engine}: built {made:,} entries in {time.perf_counter() - t:.1f} s")
        result = None

        def ours_run() -> None:
            nonlocal result
            result = led.verify()

        ours = made / timed(ours_run)
        assert result is not None and result.ok and result.size == made, result
        base = made / timed(lambda: raw_read_and_hash(url))
        report(f"full verify of {made:,} entries", ours, base, "entries/s", ">= 500,000 entries/s")
        led.close()


if __name__ == "__main__":
    main()
