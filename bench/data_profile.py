"""Dataset profiling: mlledger's streamed digest and profile against pandas on the whole file.

The script generates a seeded CSV of ``--rows`` rows and 10 columns in a temporary directory:
ints, floats with nulls, booleans, low- and high-cardinality text, and timestamps. Each
workload runs in a fresh subprocess, so the peak memory it reports is its own.

- mlledger: ``file_digest`` + ``profile_dataset`` (streamed, ``--chunk-rows`` rows at a time);
- raw: ``pandas.read_csv`` of the whole file + ``DataFrame.describe()``.

mlledger does more work than the baseline. It hashes the file, and it computes quantiles,
distinct counts and top categories for every column, where describe() covers only the
numeric ones.

Memory is the growth of peak RSS over the RSS after the imports. On Linux the high-water
mark is reset through /proc/self/clear_refs; elsewhere the figure falls back to ru_maxrss.

    python3 bench/data_profile.py [--rows 1000000] [--chunk-rows 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, rows: int, seed: int = 0, block: int = 100_000) -> None:
    """A seeded 10-column CSV, written ``block`` rows at a time (the generator stays small)."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as f:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            df = pd.DataFrame({
                "id": np.arange(start, start + n),
                "age": rng.integers(18, 90, n),
                "income": np.where(rng.random(n) < 0.05, np.nan, rng.lognormal(10, 1, n).round(2)),
                "score": rng.normal(0, 1, n),
                "sex": rng.choice(["female", "male"], n),
                "region": rng.choice(list("ABCDEFGH"), n),
                "name": [f"person-{i:07d}" for i in range(start, start + n)],
                "flag": rng.random(n) < 0.3,
                "ts": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 10**8, n), unit="s"),
                "approved": rng.integers(0, 2, n),
            })
            df.to_csv(f, index=False, header=start == 0)


def _kib(key: str) -> int:
    match = re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text())
    return int(match[1]) if match else 0


def _maxrss_kib() -> int:
    """ru_maxrss in KiB (it is bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)


def child(workload: str, path: str, chunk_rows: int) -> None:
    """Run one workload and print its seconds and peak RSS growth (MB) as JSON."""
    sys.path.insert(0, str(ROOT))
    from policies.evidence._data import file_digest, profile_dataset

    exact = Path("/proc/self/clear_refs").exists()
    if exact:
        Path("/proc/self/clear_refs").write_text("5")
        before = _kib("VmRSS")
    else:
        before = _maxrss_kib()
    t = time.perf_counter()
    if workload == "ours":
        file_digest(path)
        profile_dataset(path, fmt="csv", chunk_rows=chunk_rows)
    else:
        pd.read_csv(path).describe()
    seconds = time.perf_counter() - t
    peak = _kib("VmHWM") if exact else _maxrss_kib()
    print(json.dumps({"seconds": seconds, "peak_mb": (peak - before) / 1024, "base_mb": before / 1024}))


def measure(workload: str, path: Path, chunk_rows: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", workload, str(path), str(chunk_rows)],
                         capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk-rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("WORKLOAD", "PATH", "CHUNK_ROWS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        path = Path(d) / "applicants.csv"
        t = time.perf_counter()
        generate(path, args.rows)
        size = path.stat().st_size
        print(f"data profile benchmark: {args.rows:,} rows x 10 columns, {size / 1e6:.1f} MB CSV "
              f"(generated in {time.perf_counter() - t:.1f} s), chunk_rows={args.chunk_rows:,}, "
              f"best of {args.repeat}")
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "raw": []}
        for _ in range(args.repeat):
            for workload in runs:
                runs[workload].append(measure(workload, path, args.chunk_rows))
    best = {w: min(r["seconds"] for r in rs) for w, rs in runs.items()}
    peak = {w: max(r["peak_mb"] for r in rs) for w, rs in runs.items()}
    base = runs["ours"][0]["base_mb"]
    for workload, label in (("ours", "mlledger digest + profile"), ("raw", "pandas read_csv + describe")):
        print(f"{label:<30} {best[workload]:>7.2f} s  {size / 1e6 / best[workload]:>7.1f} MB/s   "
              f"peak RSS +{peak[workload]:>6.0f} MB")
    print(f"{'ratio (mlledger / raw)':<30} {best['ours'] / best['raw']:>7.2f} x time   "
          f"{peak['ours'] / peak['raw']:>14.2f} x peak RSS   (RSS after imports: {base:.0f} MB)")


if __name__ == "__main__":
    main()
