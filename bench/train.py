"""Ledger overhead of ``mlledger train`` against a bare scikit-learn fit, and deploy latency.

Prints the bare fit of the same pipeline on ~200k rows, the in-process train workflow
(dataset re-hash and load, fit, canonical skops artifact, artifact store, ledger append),
and their ratio against the target "< 5% or < 200 ms". Deploy latency (target < 2 s) is not
benchmarked here yet: it needs a published policy, gate and promotion on the bench ledger.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import SIGNER

import backends.kinds  # noqa: F401
from backends._workflow import train
from backends.local import build_pipeline
from backends.spec import parse_spec
from ledger.api import Ledger
from ledger.events import Event
from ledger.kinds import ColumnSummary, DatasetRegistered
from policies._workspace import Workspace
from policies.evidence._data import file_digest

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
SPEC = b"""name: bench
datasets: {train: train}
features: [income, age, debt, region, sex]
target: approved
sensitive: [sex]
estimator: {name: LogisticRegression, params: {max_iter: 200}}
seed: 0
"""


def frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    income, debt = rng.normal(50, 12, n), rng.gamma(2.0, 5.0, n)
    logit = 0.08 * (income - 50) - 0.05 * (debt - 10)
    return pd.DataFrame({"income": income, "age": rng.integers(18, 80, n), "debt": debt,
                         "region": rng.choice(["n", "s", "e", "w"], n), "sex": rng.choice(["f", "m"], n),
                         "approved": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)})


def main() -> None:
    # skops.io builds its trusted-type table by importing scikit-learn's modules on first
    # use (~0.8 s once per process). Measured apart: a long-running service pays it once,
    # a one-shot CLI call pays it every time.
    start = time.perf_counter()
    import skops.io  # noqa: F401

    import_ms = (time.perf_counter() - start) * 1000
    print(f"one-time import of skops.io:     {import_ms:9.1f} ms (excluded below)")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".mlledger"
        home.mkdir()
        csv = Path(tmp) / "train.csv"
        df = frame(ROWS)
        df.to_csv(csv, index=False)
        digest, size = file_digest(csv)
        spec = parse_spec(SPEC, "bench.yaml")
        # Bare: read the CSV and fit the same pipeline.
        start = time.perf_counter()
        data = pd.read_csv(csv)
        build_pipeline(spec.spec, data).fit(data, data["approved"])
        bare = time.perf_counter() - start
        led = Ledger.init(f"sqlite:///{home / 'ledger.db'}", origin=SIGNER.name, verifier_key=SIGNER.verifier_key)
        try:
            led.append(Event(DatasetRegistered(
                name="train", sha256=digest, format="csv", size_bytes=size, rows=ROWS, role="train",
                columns=[ColumnSummary(name=c, dtype=str(df[c].dtype), nullable=False) for c in df.columns],
                sensitive_features=["sex"], target="approved", source=csv.as_uri()), actor="bench"))
            ws = Workspace(led, home)
            start = time.perf_counter()
            done = train(ws, spec, actor="bench")
            full = time.perf_counter() - start
            overhead = full - bare
            print(f"rows: {ROWS:,}")
            print(f"bare sklearn (read CSV + fit):   {bare * 1000:9.1f} ms")
            fit_ms = done.payload.wall_time_s * 1000
            print(f"mlledger train (in-process):     {full * 1000:9.1f} ms  (fit alone {fit_ms:.1f} ms)")
            print(f"overhead: {overhead * 1000:.1f} ms, ratio {full / bare:.3f} "
                  f"({(full / bare - 1) * 100:+.1f}%); target < 5% or < 200 ms: "
                  f"{'met' if overhead < 0.2 or full / bare < 1.05 else 'NOT met'}")
        finally:
            led.close()


if __name__ == "__main__":
    main()
