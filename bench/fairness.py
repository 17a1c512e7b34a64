"""fairness_report on a million rows against fairlearn's MetricFrame over the same data.

mlledger computes, for sex, race and sex x race, the per-group rates, every fairlearn and
aif360 disparity, the LL144 impact and scoring ratios and the Theil index (best of 3 runs).
The baseline is one fairlearn MetricFrame with the per-group rates only (selection rate, TPR,
FPR, FNR, precision, accuracy, count) over the two features together (one run).

    cd bench && python3 fairness.py [--rows 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from _common import timed
from fairlearn import metrics as flm  # type: ignore[import-untyped]
from sklearn.metrics import accuracy_score, precision_score  # type: ignore[import-untyped]

from policies.evidence._fairness import fairness_report


def data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sf = pd.DataFrame({
        "sex": rng.choice(["female", "male"], rows),
        "race": rng.choice(["asian", "black", "hispanic", "other", "white"], rows, p=[.1, .15, .2, .05, .5]),
    })
    y_true = rng.integers(0, 2, rows)
    y_score = np.clip(0.3 * y_true + 0.6 * rng.random(rows) + 0.1 * (sf["sex"] == "male").to_numpy(), 0, 1)
    return y_true, (y_score > 0.5).astype(int), y_score, sf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    y_true, y_pred, y_score, sf = data(args.rows, args.seed)

    ours = min(timed(lambda: fairness_report(y_true, y_pred, sensitive_features=sf, y_score=y_score))
               for _ in range(3))
    metrics = {
        "selection_rate": flm.selection_rate, "tpr": flm.true_positive_rate, "fpr": flm.false_positive_rate,
        "fnr": flm.false_negative_rate, "precision": functools.partial(precision_score, zero_division=np.nan),
        "accuracy": accuracy_score, "count": flm.count,
    }
    base = timed(lambda: flm.MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred,
                                         sensitive_features=sf))
    name = f"fairness report, {args.rows:,} rows, 2 features + 1 intersection"
    print(f"{name:<60} mlledger {ours:6.2f} s   fairlearn {base:6.2f} s   ratio {ours / base:6.4f}   "
          f"target <= 2 s")


if __name__ == "__main__":
    main()
