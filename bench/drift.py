"""Drift report throughput against a raw loop of the scipy tests over the same columns.

The raw baseline is the least any drift check must do: scipy's ks_2samp on each numeric
column and chi2_contingency on each categorical one. mlledger additionally bins every
feature at the reference quantiles (PSI, Jensen-Shannon), computes the Wasserstein
distance, counts missing values and builds the typed result.

Both sides pay for scipy's KS p-value, which is not O(n log n) everywhere: with a million
rows per side, ``kstwo.sf`` sums about n terms (0.4-0.8 s) whenever the KS statistic falls
between about 0.002 and 0.027 (p-values from about 0.02 down to 1e-300), that is for mild
drift. ``--shift 0.01`` puts every shifted column there.

    python3 bench/drift.py [--rows 1000000] [--numeric 15] [--categorical 5] [--shift 0.2]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from _common import report, timed
from scipy import stats  # type: ignore[import-untyped]

from policies.evidence._drift import drift_report

CATEGORIES = np.array(["north", "south", "east", "west", "centre", "islands", "overseas", "unknown"])


def frames(rows: int, numeric: int, categorical: int, shift: float = 0.2,
           seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded reference and a current sample; every third column shifted in current."""
    rng = np.random.default_rng(seed)
    out = []
    for side in (0.0, 1.0):
        cols: dict[str, object] = {}
        for i in range(numeric):
            mean = shift * side if i % 3 == 0 else 0.0
            cols[f"x{i}"] = rng.normal(mean, 1.0, rows)
        for j in range(categorical):
            p = np.full(CATEGORIES.size, 1 / CATEGORIES.size)
            if j % 3 == 0 and side:
                p = np.linspace(2, 0.5, CATEGORIES.size)
                p /= p.sum()
            cols[f"c{j}"] = pd.Series(rng.choice(CATEGORIES, rows, p=p), dtype="category")
        out.append(pd.DataFrame(cols))
    return out[0], out[1]


def raw_scipy(ref: pd.DataFrame, cur: pd.DataFrame, numeric: list[str], categorical: list[str]) -> None:
    for c in numeric:
        stats.ks_2samp(ref[c].to_numpy(), cur[c].to_numpy())
    for c in categorical:
        r, k = ref[c].value_counts(sort=False), cur[c].value_counts(sort=False)
        stats.chi2_contingency(np.vstack((r.to_numpy(), k.reindex(r.index, fill_value=0).to_numpy())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--numeric", type=int, default=15)
    ap.add_argument("--categorical", type=int, default=5)
    ap.add_argument("--shift", type=float, default=0.2, help="mean shift of every third numeric column")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ref, cur = frames(args.rows, args.numeric, args.categorical, args.shift)
    num = [f"x{i}" for i in range(args.numeric)]
    cat = [f"c{j}" for j in range(args.categorical)]

    ours = min(timed(lambda: drift_report(ref, cur, categorical=cat)) for _ in range(args.repeat))
    base = min(timed(lambda: raw_scipy(ref, cur, num, cat)) for _ in range(args.repeat))
    result = drift_report(ref, cur, categorical=cat)
    print(f"{args.rows:,} rows x {args.numeric + args.categorical} features "
          f"({args.numeric} numeric, {args.categorical} categorical), best of {args.repeat}; "
          f"drifted {result.n_drifted}/{len(result.features)}")
    report("drift_report vs ks_2samp + chi2_contingency", ours * 1000, base * 1000, "ms", "<= 3 s")


if __name__ == "__main__":
    main()
