"""Proofs and checkpoints at scale: inclusion and consistency proofs from the database.

Builds an n-entry ledger (default 1,000,000), then times random inclusion and
consistency proofs (median and p99 of each, every proof verified), and signing a
checkpoint. The peer, when installed (``pip install pymerkle``), is pymerkle's
SqliteTree holding the same leaves, timed cold (fresh process cache) on the same
queries.

    python3 bench/proofs.py [--url postgresql+psycopg://...] [--entries 1000000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from _common import SIGNER, events, fresh_url

from ledger import merkle
from ledger.api import Ledger


def timings(fn, args_list: list[tuple[int, ...]]) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for args in args_list:
        t = time.perf_counter()
        fn(*args)
        out.append((time.perf_counter() - t) * 1000)
    return out


def summary(name: str, ms: list[float], target: str, peer: list[float] | None = None) -> None:
    med, p99 = statistics.median(ms), sorted(ms)[int(len(ms) * 0.99) - 1]
    line = f"{name:<36} median {med:7.3f} ms  p99 {p99:7.3f} ms"
    if peer:
        pmed = statistics.median(peer)
        line += f"   pymerkle median {pmed:8.3f} ms   ratio {pmed / med:6.1f}x faster"
    print(line + f"   target {target}")


def pymerkle_peer(leaves_data: list[bytes], incl: list[tuple[int, ...]],
                  cons: list[tuple[int, ...]]) -> tuple[list[float], list[float]] | None:
    try:
        from pymerkle import SqliteTree
    except ImportError:
        print("peer: pymerkle not installed (pip install pymerkle) - skipped")
        return None
    with tempfile.TemporaryDirectory() as d:
        db = str(Path(d) / "pymerkle.db")
        tree = SqliteTree(db)
        for at in range(0, len(leaves_data), 10_000):
            tree.append_entries(leaves_data[at : at + 10_000])
        tree.close()
        tree = SqliteTree(db)  # cold: a fresh object, empty caches
        inc = timings(lambda i, n: tree.prove_inclusion(i + 1, n), incl)
        con = timings(lambda a, b: tree.prove_consistency(a, b), cons)
        tree.close()
    return inc, con


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="PostgreSQL base URL (default: a temporary SQLite file)")
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    rng = random.Random(7)
    with fresh_url(args.url) as url:
        led = Ledger.init(url, origin=SIGNER.name, verifier_key=SIGNER.verifier_key, signer=SIGNER,
                          checkpoint_every=None)
        t = time.perf_counter()
        template = events(3000)
        made = 1
        while made < args.entries:
            n = min(10_000, args.entries - made)
            led.append_many((template * 4)[:n])
            made += n
        n = made
        print(f"proof benchmark on {'PostgreSQL' if args.url else 'SQLite'}: {n:,} entries "
              f"(built in {time.perf_counter() - t:.1f} s)")
        t = time.perf_counter()
        cp = led.checkpoint()
        sign_ms = (time.perf_counter() - t) * 1000
        root = cp.root
        incl = [(rng.randrange(n), n) for _ in range(args.samples)]
        cons = [(rng.randrange(1, n), n) for _ in range(args.samples)]
        inc_ms = timings(led.inclusion_proof, incl)
        con_ms = timings(led.consistency_proof, cons)
        # every proof verifies (outside the timing)
        for seq, size in incl[:50]:
            merkle.verify_inclusion(led.get(seq).leaf_hash, seq, size, led.inclusion_proof(seq, size), root)
        for old, new in cons[:50]:
            merkle.verify_consistency(old, new, led.root_at(old), root, led.consistency_proof(old, new))
        peer = None
        if not args.no_peer and not args.url:
            peer = pymerkle_peer([e.raw for e in led.iter()], incl, cons)
        summary(f"inclusion proof at n={n:,}", inc_ms, "< 2 ms median", peer[0] if peer else None)
        summary(f"consistency proof at n={n:,}", con_ms, "< 5 ms", peer[1] if peer else None)
        print(f"{'checkpoint signing (root + sign + store)':<36} {sign_ms:7.3f} ms once per "
              f"1,000 entries by default = {sign_ms / 1000 * 1000:.1f} us per entry amortised")
        led.close()


if __name__ == "__main__":
    main()
