"""Offline bundle verification throughput against a raw read-and-hash loop over the same file.

The raw baseline is the least any bundle verifier must do: read entries.jsonl and SHA-256
each line. mlledger additionally checks every entry's envelope, seq, prev and timestamp,
folds the Merkle root (and the root at every checkpoint size), hashes the whole file for the
manifest, and checks the checkpoint signatures. Both forms are timed: the directory, and the
zip (where inflating entries.jsonl is part of both figures).

    python3 bench/verify_bundle.py [--entries 1000000] [--keep DIR]

``--keep DIR`` builds the bundles into DIR once and reuses them on later runs.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import SIGNER, events, fresh_url, report, timed

from ledger.api import Ledger
from ledger.bundle import BundleResult, verify_bundle
from ledger.export import export_bundle


def build(dest: Path, entries: int) -> None:
    """A ledger of ``entries`` entries, appended in batches of 10,000, exported both ways."""
    with fresh_url(None) as url:
        t = time.perf_counter()
        led = Ledger.init(url, origin=SIGNER.name, verifier_key=SIGNER.verifier_key, signer=SIGNER,
                          checkpoint_every=None)
        template = events(3000)
        made = 1
        while made < entries:
            n = min(10_000, entries - made)
            led.append_many((template * 4)[:n])
            made += n
            if made % 200_000 < 10_000 and made < entries:
                led.checkpoint()  # a few older checkpoints, as a real log would have
        led.checkpoint()
        print(f"built {made:,} entries in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        export_bundle(led, dest / "bundle")
        print(f"exported the directory in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        export_bundle(led, dest / "bundle.zip")
        print(f"exported the zip in {time.perf_counter() - t:.1f} s "
              f"({(dest / 'bundle.zip').stat().st_size / 1e6:,.0f} MB)")
        led.close()


def raw_read_and_hash(path: Path) -> int:
    """Read entries.jsonl (from the directory or the zip) and SHA-256 each line."""
    sha = hashlib.sha256
    n = 0
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf, zf.open("entries.jsonl") as fh:
            for line in fh:
                sha(b"\x00" + line[:-1]).digest()
                n += 1
        return n
    with (path / "entries.jsonl").open("rb") as fh:
        for line in fh:
            sha(b"\x00" + line[:-1]).digest()
            n += 1
    return n


@contextmanager
def workdir(keep: str | None) -> Iterator[Path]:
    if keep is not None:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
        return
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--keep", metavar="DIR", help="build the bundles here once and reuse them")
    args = ap.parse_args()
    with workdir(args.keep) as d:
        if not (d / "bundle.zip").exists():
            build(d, args.entries)
        for form in ("bundle", "bundle.zip"):
            path = d / form
            result: BundleResult | None = None

            def ours_run(path: Path = path) -> None:
                nonlocal result
                result = verify_bundle(path, trusted=[SIGNER.verifier])

            elapsed = timed(ours_run)
            assert result is not None and result.ok, result
            size = result.size or 0
            base = size / timed(lambda path=path: raw_read_and_hash(path))
            what = "zip" if form.endswith(".zip") else "directory"
            report(f"verify-bundle ({what}) of {size:,} entries", size / elapsed, base, "entries/s",
                   ">= 300,000 entries/s")


if __name__ == "__main__":
    main()
