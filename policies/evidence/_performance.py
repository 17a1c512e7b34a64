"""Predictive performance of a binary classifier, overall and per group of each sensitive feature.

(1) check the inputs: binary labels and predictions; scores, when given, finite and in [0, 1]
    (the Brier score and the calibration table need probabilities);
(2) code each sensitive feature's rows as integers; null values form the "unknown" group,
    reported apart;
(3) count TN, FP, FN, TP per group in one ``np.bincount``; accuracy, precision, recall and F1
    follow (None where sklearn would divide by zero; F1 = 2TP / (2TP + FP + FN));
(4) with scores: ROC AUC from within-group average ranks (the Mann-Whitney statistic, equal to
    sklearn's ``roc_auc_score``; None when a group holds one class only), the Brier score, and
    a calibration table over ``n_bins`` uniform bins of [0, 1], assigned as
    ``sklearn.calibration.calibration_curve(strategy="uniform")`` does, empty bins left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed

from ledger.errors import InputError

from ._common import (
    EvidenceResult,
    GroupCounts,
    Grouping,
    Strict,
    check_binary,
    check_scores,
    confusion_cells,
    confusion_table,
    div,
    encode_features,
    find,
    library_versions,
    to_scalar,
)

__all__ = [
    "CalibrationBin",
    "PerformanceFeature",
    "PerformanceGroup",
    "PerformanceResult",
    "performance_report",
]

TOOL = "mlledger.performance"
_HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc", "brier_score")


class CalibrationBin(Strict):
    """One non-empty bin ``(lower, upper]`` of the calibration table (the first bin is closed)."""

    index: int
    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


class PerformanceGroup(GroupCounts):
    """The metrics of one group, or of the whole sample (``key == ()``)."""

    accuracy: float
    precision: float | None
    recall: float | None
    f1: float | None
    roc_auc: float | None = None
    brier_score: float | None = None
    calibration: tuple[CalibrationBin, ...] = ()


class PerformanceFeature(Strict):
    """The groups of one sensitive feature; "unknown" (null values) apart."""

    name: str
    groups: tuple[PerformanceGroup, ...]
    unknown_count: int
    unknown: PerformanceGroup | None

    def group(self, label: str) -> PerformanceGroup:
        return find(self.groups, label, lambda g: g.label)


class PerformanceResult(EvidenceResult):
    """Performance evidence: overall metrics and, per sensitive feature, per-group metrics."""

    tool: str = TOOL
    n: int
    overall: PerformanceGroup
    features: tuple[PerformanceFeature, ...]

    def feature(self, name: str) -> PerformanceFeature:
        return find(self.features, name, lambda f: f.name)

    def summary(self) -> dict[str, Any]:
        """Overall metrics, and per feature the worst known group's (undefined values skipped)."""
        out: dict[str, Any] = {"n": self.n}
        out.update({m: getattr(self.overall, m) for m in _HEADLINE})
        for f in self.features:
            worst: dict[str, float | None] = {}
            for m in _HEADLINE:
                vals = [v for g in f.groups if (v := getattr(g, m)) is not None]
                pick = max if m == "brier_score" else min
                worst[f"{'max' if m == 'brier_score' else 'min'}_{m}"] = pick(vals) if vals else None
            out[f.name] = {**worst, "unknown_count": f.unknown_count}
        return out


def performance_report(
    y_true: npt.ArrayLike | pd.Series,
    y_pred: npt.ArrayLike | pd.Series,
    *,
    y_score: npt.ArrayLike | pd.Series | None = None,
    sensitive_features: pd.DataFrame | pd.Series | None = None,
    n_bins: int = 10,
    pos_label: object = 1,
) -> PerformanceResult:
    """Performance evidence for binary predictions ``y_pred`` (and probabilities ``y_score``).

    ``sensitive_features`` is matched to the labels by position. Raises ``InputError`` on bad
    input, including scores outside [0, 1].
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, not {n_bins!r}")
    # (1) inputs
    yt, yp = check_binary(y_true, y_pred, pos_label=pos_label)
    n = len(yt)
    score = None if y_score is None else check_scores(y_score, n=n, unit_interval=True)
    # (2) groups
    features = [] if sensitive_features is None else encode_features(sensitive_features, n=n)
    clash = sorted({f.name for f in features} & {"n", *_HEADLINE})
    if clash:
        raise InputError(f"sensitive feature names {clash} clash with summary keys; rename the columns")
    cell = confusion_cells(yt, yp)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    binids = None if score is None else np.searchsorted(edges[1:-1], score)
    everyone = Grouping("", (), np.zeros(n, dtype=np.int64), ((),))
    overall = _metrics(everyone, cell, yt, score, binids, edges)[1]
    reports = []
    for f in features:
        rows = _metrics(f, cell, yt, score, binids, edges)
        reports.append(PerformanceFeature(name=f.name, groups=tuple(rows[1:]), unknown_count=rows[0].count,
                                          unknown=rows[0] if rows[0].count else None))
    config = {
        "sensitive_features": [f.name for f in features],
        "n_bins": n_bins,
        "calibration_strategy": "uniform",
        "pos_label": to_scalar(pos_label),
        "y_score": score is not None,
    }
    return PerformanceResult(libraries=library_versions("numpy", "pandas"), config=config, n=n,
                             overall=overall, features=tuple(reports))


def _metrics(g: Grouping, cell: npt.NDArray[np.int64], yt: npt.NDArray[np.bool_],
             score: npt.NDArray[np.float64] | None, binids: npt.NDArray[np.intp] | None,
             edges: npt.NDArray[np.float64]) -> list[PerformanceGroup]:
    """Rows for "unknown" (index 0, possibly empty) and each group of ``g``."""
    k, n_bins = len(g.keys) + 1, len(edges) - 1
    codes = g.codes + 1
    # (3) confusion counts
    table = confusion_table(g, cell)
    extra: list[dict[str, Any]] = [{} for _ in range(k)]
    if score is not None and binids is not None:
        # (4) ranks within each group give ROC AUC
        ranks = pd.Series(score).groupby(codes).rank(method="average").to_numpy()
        pos_rank = np.bincount(codes, weights=np.where(yt, ranks, 0.0), minlength=k)
        sq_err = np.bincount(codes, weights=(score - yt) ** 2, minlength=k)
        flat = codes * n_bins + binids
        b_total = np.bincount(flat, minlength=k * n_bins).reshape(k, n_bins)
        b_pred = np.bincount(flat, weights=score, minlength=k * n_bins).reshape(k, n_bins)
        b_true = np.bincount(flat, weights=yt.astype(np.float64), minlength=k * n_bins).reshape(k, n_bins)
        for i in range(k):
            tn, fp, fn, tp = (int(x) for x in table[i])
            pos, neg = tp + fn, tn + fp
            auc = (pos_rank[i] - pos * (pos + 1) / 2) / (pos * neg) if pos and neg else None
            extra[i] = {
                "roc_auc": None if auc is None else float(auc),
                "brier_score": div(sq_err[i], pos + neg),
                "calibration": tuple(
                    CalibrationBin(index=j, lower=float(edges[j]), upper=float(edges[j + 1]),
                                   count=int(b_total[i, j]),
                                   mean_predicted=float(b_pred[i, j] / b_total[i, j]),
                                   observed_rate=float(b_true[i, j] / b_total[i, j]))
                    for j in np.flatnonzero(b_total[i]).tolist()),
            }
    rows = []
    labels = ("unknown", *g.labels) if g.features else ("unknown", "all")
    for i in range(k):
        tn, fp, fn, tp = (int(x) for x in table[i])
        count = tn + fp + fn + tp
        rows.append(PerformanceGroup(
            key=() if i == 0 else g.keys[i - 1], label=labels[i], count=count, tn=tn, fp=fp, fn=fn, tp=tp,
            accuracy=(tp + tn) / count if count else 0.0, precision=div(tp, tp + fp), recall=div(tp, tp + fn),
            f1=div(2 * tp, 2 * tp + fp + fn), **extra[i]))
    return rows
