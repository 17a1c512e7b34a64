"""Evidence evaluators: pure functions over arrays and DataFrames, returning typed results.

Each evaluator returns a frozen pydantic result whose ``to_json()`` is the full
evidence (stored content-addressed as an artifact) and whose ``summary()`` is the
small set of values carried in the ``evidence.recorded`` ledger entry.
"""

from policies.evidence._drift import DriftResult, DriftThresholds, drift_report
from policies.evidence._explain import ExplainResult, correlation_ratio, cramers_v, explain_report
from policies.evidence._fairness import FairnessResult, fairness_report
from policies.evidence._performance import PerformanceResult, performance_report

__all__ = [
    "DriftResult",
    "DriftThresholds",
    "ExplainResult",
    "FairnessResult",
    "PerformanceResult",
    "correlation_ratio",
    "cramers_v",
    "drift_report",
    "explain_report",
    "fairness_report",
    "performance_report",
]
