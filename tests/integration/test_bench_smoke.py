"""Every bench/ script still runs, at a tiny size, and prints its figure against its baseline.

The figures themselves are not checked here (performance is measured by running the scripts on a
quiet machine; these machines are shared): only that a change did not break a benchmark. The
lifecycle benchmark is left out (about a minute even at its smallest; the same loop runs in
tests/integration/test_monitor_loop.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SMALL = {
    "append.py": ["--events", "1000", "--single", "100"],
    "data_profile.py": ["--rows", "5000", "--chunk-rows", "2000", "--repeat", "1"],
    "drift.py": ["--rows", "5000"],
    "fairness.py": ["--rows", "5000"],
    "predict.py": ["--rows", "5000", "--chunk-rows", "2000"],
    "proofs.py": ["--entries", "2000", "--samples", "20", "--no-peer"],
    "report.py": ["--predictions", "200"],
    "serve.py": ["--requests", "100", "--concurrency", "2", "--subjects", "20"],
    "train.py": [],
    "verify.py": ["--entries", "2000"],
    "verify_bundle.py": ["--entries", "2000"],
}


def test_every_benchmark_is_listed_here() -> None:
    scripts = {p.name for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_")}
    assert scripts - {"lifecycle.py"} == set(SMALL)


@pytest.mark.parametrize("script", sorted(SMALL))
def test_a_benchmark_runs_and_prints_its_figures(script: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *SMALL[script]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ratio" in done.stdout or "target" in done.stdout, done.stdout[-2000:]
