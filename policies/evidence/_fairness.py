"""Group fairness of a binary classifier, per sensitive feature and per intersection.

The evidence is computed from one confusion table per grouping; every rate derives from it:
(1) check the inputs: binary labels and predictions, finite scores, equal non-zero lengths,
    named sensitive features; null sensitive values form the "unknown" category. Labels may be
    absent (recorded decisions without outcomes): then every count and rate that needs them
    (TN/FP/FN/TP, TPR, FPR, FNR, precision, accuracy, the odds disparities, the Theil index) is
    None, and selection rates, impact ratios and scoring rates are computed as usual;
(2) code each feature's rows as integers and, when ``intersections``, combine every pair of
    features (and all of them, if more than two) into intersectional groups of observed values;
(3) count TN, FP, FN, TP (and, with ``y_score``, rows scoring above the sample median) per group
    in one ``np.bincount`` per grouping;
(4) derive per-group rates (None where a denominator is zero) and flag groups smaller than
    ``min_group_size``; they are never dropped;
(5) derive disparities over the known groups only: "unknown" is reported with its count and
    rates but takes part in no difference or ratio.

Definitions followed (cross-checked in ``tests/unit/policies/test_fairness.py``):
- fairlearn (between groups): demographic parity difference/ratio (max-min / min/max of
  selection rate), equalized odds difference/ratio (worst of the TPR and FPR difference/ratio),
  equal opportunity difference/ratio (TPR). A group whose TPR (FPR) is undefined, for want of
  positives (negatives), is left out of the TPR (FPR) comparison and listed; fairlearn would
  count it as a rate of 0;
- aif360 (``aif360.sklearn.metrics``): the unprivileged side is every known group other than the
  privileged one, pooled. Disparate impact is its selection rate over the privileged group's,
  statistical parity difference their difference, average odds difference the mean of the FPR
  and TPR differences; the Theil index is the generalized entropy index (alpha = 1) of
  ``b = y_pred - y_true + 1`` over the whole sample, unknown rows included;
- NYC LL144 (6 RCNY 5-300): impact ratio = a category's selection rate over the highest
  category's; scoring rate = share of a category scoring strictly above the median of
  ``y_score`` over the whole sample; scoring impact ratio likewise.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed

from ledger.errors import InputError

from ._common import (
    EvidenceResult,
    Grouping,
    JsonScalar,
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

__all__ = ["FairnessDisparities", "FairnessGroup", "FairnessGrouping", "FairnessResult", "fairness_report"]

TOOL = "mlledger.fairness"
INTERSECTION = " & "
_RESERVED = frozenset({"n", "theil_index"})


class FairnessGroup(Strict):
    """One group's confusion counts and rates (None where a denominator is zero, or where the
    labels they need were not given)."""

    key: tuple[JsonScalar, ...]
    label: str
    count: int
    tn: int | None
    fp: int | None
    fn: int | None
    tp: int | None
    selection_rate: float
    tpr: float | None
    fpr: float | None
    fnr: float | None
    precision: float | None
    accuracy: float | None
    small_group: bool
    #: LL144: selection rate over the highest known category's (None for "unknown").
    impact_ratio: float | None = None
    #: LL144, with ``y_score``: share scoring above the sample median, and its ratio to the highest.
    scoring_rate: float | None = None
    scoring_impact_ratio: float | None = None


class FairnessDisparities(Strict):
    """Between-group disparities of one grouping, over its known groups."""

    demographic_parity_difference: float
    demographic_parity_ratio: float | None
    equalized_odds_difference: float | None
    equalized_odds_ratio: float | None
    equal_opportunity_difference: float | None
    equal_opportunity_ratio: float | None
    false_positive_rate_difference: float | None
    false_positive_rate_ratio: float | None
    #: Groups left out of the TPR (no positives) and FPR (no negatives) comparisons.
    groups_without_positives: tuple[str, ...]
    groups_without_negatives: tuple[str, ...]
    privileged: tuple[JsonScalar, ...]
    privileged_label: str
    privileged_source: Literal["configured", "highest_selection_rate"]
    disparate_impact: float | None
    statistical_parity_difference: float | None
    average_odds_difference: float | None
    min_impact_ratio: float | None
    min_scoring_impact_ratio: float | None


class FairnessGrouping(Strict):
    """A sensitive feature, or an intersection of several, with its groups and disparities."""

    name: str
    features: tuple[str, ...]
    groups: tuple[FairnessGroup, ...]
    unknown_count: int
    unknown: FairnessGroup | None
    small_groups: tuple[str, ...]
    disparities: FairnessDisparities

    def group(self, label: str) -> FairnessGroup:
        return find(self.groups, label, lambda g: g.label)


class FairnessResult(EvidenceResult):
    """Fairness evidence: overall rates, the Theil index, and one entry per grouping."""

    tool: str = TOOL
    n: int
    overall: FairnessGroup
    theil_index: float | None
    groupings: tuple[FairnessGrouping, ...]

    def grouping(self, name: str) -> FairnessGrouping:
        """The grouping called ``name``: a feature, or features joined by " & "."""
        return find(self.groupings, name, lambda g: g.name)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "theil_index": self.theil_index}
        for g in self.groupings:
            d = g.disparities
            out[g.name] = {
                "demographic_parity_difference": d.demographic_parity_difference,
                "demographic_parity_ratio": d.demographic_parity_ratio,
                "equalized_odds_difference": d.equalized_odds_difference,
                "equalized_odds_ratio": d.equalized_odds_ratio,
                "equal_opportunity_difference": d.equal_opportunity_difference,
                "disparate_impact": d.disparate_impact,
                "statistical_parity_difference": d.statistical_parity_difference,
                "average_odds_difference": d.average_odds_difference,
                "privileged": d.privileged_label,
                "min_impact_ratio": d.min_impact_ratio,
                "min_scoring_impact_ratio": d.min_scoring_impact_ratio,
                "unknown_count": g.unknown_count,
                "n_small_groups": len(g.small_groups),
                "small_groups": list(g.small_groups),
            }
        return out


def fairness_report(
    y_true: npt.ArrayLike | pd.Series | None,
    y_pred: npt.ArrayLike | pd.Series,
    *,
    sensitive_features: pd.DataFrame | pd.Series,
    y_score: npt.ArrayLike | pd.Series | None = None,
    min_group_size: int = 30,
    intersections: bool = True,
    privileged: Mapping[str, object] | None = None,
    pos_label: object = 1,
) -> FairnessResult:
    """Fairness evidence for binary predictions ``y_pred`` of ``y_true`` (None: no outcomes known).

    ``sensitive_features`` is matched to the labels by position. ``privileged`` maps a feature
    name (or an intersection name such as ``"sex & race"``, with a tuple value) to its
    privileged group; by default it is the group with the highest selection rate (the first,
    in sorted order, on a tie). Raises ``InputError`` on bad input.
    """
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int) or min_group_size < 0:
        raise ValueError(f"min_group_size must be a non-negative int, not {min_group_size!r}")
    # (1) inputs
    labelled = y_true is not None
    # Without labels, the predictions stand in for them: every row is then a TN or a TP, so the
    # selected count is right, and everything that needs a real label is blanked in (4)-(5).
    yt, yp = check_binary(y_true if labelled else y_pred, y_pred, pos_label=pos_label)
    n = len(yt)
    score = None if y_score is None else check_scores(y_score, n=n)
    features = encode_features(sensitive_features, n=n)
    # (2) groupings
    groupings = list(features)
    if intersections and len(features) > 1:
        groupings += [_combine(pair) for pair in itertools.combinations(features, 2)]
        if len(features) > 2:
            groupings.append(_combine(features))
    _check_names(groupings)
    wanted = _privileged(privileged, groupings)
    cell = confusion_cells(yt, yp)
    above = None if score is None else score > np.median(score)
    # (3)-(5) per grouping
    reports = [_grouping_report(g, cell, above, min_group_size, wanted.get(g.name), labelled) for g in groupings]
    totals = np.bincount(cell, minlength=4)
    overall = _group_row((), "all", totals, min_group_size, labelled)
    config = {
        "sensitive_features": [f.name for f in features],
        "min_group_size": min_group_size,
        "intersections": intersections,
        "privileged": {k: list(v) if len(v) > 1 else v[0] for k, v in wanted.items()},
        "pos_label": to_scalar(pos_label),
        "y_score": score is not None,
        "y_true": labelled,
    }
    return FairnessResult(
        libraries=library_versions("numpy", "pandas"),
        config=config,
        n=n,
        overall=overall,
        theil_index=_theil(totals) if labelled else None,
        groupings=tuple(reports),
    )


def _combine(parts: Sequence[Grouping]) -> Grouping:
    """Step (2): the intersection of ``parts``, over the value combinations that occur."""

    def pair(a: Grouping, b: Grouping) -> Grouping:
        k = len(b.keys)
        known = (a.codes >= 0) & (b.codes >= 0)
        flat = np.where(known, a.codes * k + b.codes, -1)
        size = len(a.keys) * k
        if size <= 1 << 24:
            present = np.bincount(flat[known], minlength=size) > 0
            new = np.cumsum(present) - 1
            codes = np.where(known, new[np.maximum(flat, 0)], -1)
            used = np.flatnonzero(present)
        else:  # pragma: no cover - only for very many categories
            used, inverse = np.unique(flat[known], return_inverse=True)
            codes = np.full(len(flat), -1, dtype=np.int64)
            codes[known] = inverse
        keys = tuple(a.keys[i // k] + b.keys[i % k] for i in used.tolist())
        return Grouping("", a.features + b.features, codes.astype(np.int64), keys)

    g = reduce(pair, parts)
    return Grouping(INTERSECTION.join(g.features), g.features, g.codes, g.keys)


def _check_names(groupings: list[Grouping]) -> None:
    names = [g.name for g in groupings]
    clash = sorted({x for x in names if names.count(x) > 1} | (set(names) & _RESERVED))
    if clash:
        raise InputError(f"sensitive feature names {clash} clash with an intersection name or a summary "
                         f"key ({sorted(_RESERVED)}); rename the columns")


def _privileged(privileged: Mapping[str, object] | None,
                groupings: list[Grouping]) -> dict[str, tuple[JsonScalar, ...]]:
    """Validate ``privileged`` into normalised group keys, by grouping name."""
    out: dict[str, tuple[JsonScalar, ...]] = {}
    by_name = {g.name: g for g in groupings}
    for name, value in (privileged or {}).items():
        g = by_name.get(name)
        if g is None:
            raise InputError(f"privileged names {name!r}, which is not a sensitive feature or intersection "
                             f"(have {sorted(by_name)})")
        raw = tuple(value) if isinstance(value, tuple | list) else (value,)
        key = tuple(to_scalar(v) for v in raw)
        if key not in g.keys:
            raise InputError(f"privileged group {value!r} for {name!r} has no rows; "
                             f"groups are {list(g.labels)}")
        out[name] = key
    return out


def _group_row(key: tuple[JsonScalar, ...], label: str, c: npt.NDArray[np.int64], min_group_size: int,
               labelled: bool, **ll144: float | None) -> FairnessGroup:
    tn, fp, fn, tp = (int(x) for x in c)
    count = tn + fp + fn + tp
    if not labelled:  # c holds predictions only: TN = not selected, TP = selected
        return FairnessGroup(
            key=key, label=label, count=count, tn=None, fp=None, fn=None, tp=None, selection_rate=tp / count,
            tpr=None, fpr=None, fnr=None, precision=None, accuracy=None, small_group=count < min_group_size,
            **ll144)
    return FairnessGroup(
        key=key, label=label, count=count, tn=tn, fp=fp, fn=fn, tp=tp,
        selection_rate=(tp + fp) / count, tpr=div(tp, tp + fn), fpr=div(fp, fp + tn),
        fnr=div(fn, tp + fn), precision=div(tp, tp + fp), accuracy=(tp + tn) / count,
        small_group=count < min_group_size, **ll144,
    )


def _spread(values: list[float | None]) -> tuple[float | None, float | None, list[int]]:
    """(max - min, min / max) over the defined values, and the indices left undefined."""
    defined = [v for v in values if v is not None]
    missing = [i for i, v in enumerate(values) if v is None]
    if not defined:
        return None, None, missing
    hi, lo = max(defined), min(defined)
    return hi - lo, div(lo, hi), missing


def _pooled_rates(c: npt.NDArray[np.int64], labelled: bool) -> tuple[float | None, float | None, float | None]:
    tn, fp, fn, tp = (int(x) for x in c)
    if not labelled:
        return div(tp + fp, tn + fp + fn + tp), None, None
    return div(tp + fp, tn + fp + fn + tp), div(tp, tp + fn), div(fp, fp + tn)


def _grouping_report(g: Grouping, cell: npt.NDArray[np.int64], above: npt.NDArray[np.bool_] | None,
                     min_group_size: int, wanted: tuple[JsonScalar, ...] | None, labelled: bool) -> FairnessGrouping:
    k = len(g.keys)
    labels = g.labels
    # (3) one pass for the confusion table, one for the scoring counts
    table = confusion_table(g, cell)
    counts = table.sum(axis=1)
    sel = ((table[:, 1] + table[:, 3]) / np.maximum(counts, 1)).tolist()
    known_sel = sel[1:]
    top = max(known_sel)
    ll144: list[dict[str, float | None]] = [{} for _ in range(k + 1)]
    top_scoring: float | None = None
    min_scoring: float | None = None
    for i in range(k + 1):
        ll144[i]["impact_ratio"] = div(sel[i], top) if i else None
    if above is not None:
        # row 0 is "unknown", as in the confusion table
        rates = (np.bincount(g.codes[above] + 1, minlength=k + 1) / np.maximum(counts, 1)).tolist()
        top_scoring = max(rates[1:])
        min_scoring = div(min(rates[1:]), top_scoring)
        for i in range(k + 1):
            ll144[i]["scoring_rate"] = rates[i]
            ll144[i]["scoring_impact_ratio"] = div(rates[i], top_scoring) if i else None
    # (4) rows; "unknown" apart
    rows = [_group_row(g.keys[i], labels[i], table[i + 1], min_group_size, labelled, **ll144[i + 1])
            for i in range(k)]
    unknown = (_group_row((), "unknown", table[0], min_group_size, labelled, **ll144[0]) if counts[0] else None)
    # (5) disparities: fairlearn, between groups
    tpr_diff, tpr_ratio, no_pos = _spread([r.tpr for r in rows])
    fpr_diff, fpr_ratio, no_neg = _spread([r.fpr for r in rows])
    if not labelled:  # undefined for want of labels, not of positives or negatives
        no_pos = no_neg = []
    # aif360: privileged against every other known group, pooled
    p = g.keys.index(wanted) if wanted is not None else int(np.argmax(known_sel))
    sel_u, tpr_u, fpr_u = _pooled_rates(table[1:].sum(axis=0) - table[p + 1], labelled)
    sel_p, tpr_p, fpr_p = _pooled_rates(table[p + 1], labelled)
    aod = None
    if tpr_u is not None and tpr_p is not None and fpr_u is not None and fpr_p is not None:
        aod = ((fpr_u - fpr_p) + (tpr_u - tpr_p)) / 2
    disparities = FairnessDisparities(
        demographic_parity_difference=top - min(known_sel),
        demographic_parity_ratio=div(min(known_sel), top),
        equalized_odds_difference=None if tpr_diff is None or fpr_diff is None else max(tpr_diff, fpr_diff),
        equalized_odds_ratio=None if tpr_ratio is None or fpr_ratio is None else min(tpr_ratio, fpr_ratio),
        equal_opportunity_difference=tpr_diff,
        equal_opportunity_ratio=tpr_ratio,
        false_positive_rate_difference=fpr_diff,
        false_positive_rate_ratio=fpr_ratio,
        groups_without_positives=tuple(labels[i] for i in no_pos),
        groups_without_negatives=tuple(labels[i] for i in no_neg),
        privileged=g.keys[p],
        privileged_label=labels[p],
        privileged_source="configured" if wanted is not None else "highest_selection_rate",
        disparate_impact=None if sel_u is None or sel_p is None else div(sel_u, sel_p),
        statistical_parity_difference=None if sel_u is None or sel_p is None else sel_u - sel_p,
        average_odds_difference=aod,
        min_impact_ratio=div(min(known_sel), top),  # equals the demographic parity ratio
        min_scoring_impact_ratio=min_scoring,
    )
    return FairnessGrouping(
        name=g.name, features=g.features, groups=tuple(rows), unknown_count=int(counts[0]), unknown=unknown,
        small_groups=tuple(r.label for r in rows if r.small_group), disparities=disparities,
    )


def _theil(totals: npt.NDArray[np.int64]) -> float | None:
    """Generalized entropy index, alpha = 1, of b = y_pred - y_true + 1 (b is 0 on FN, 2 on FP)."""
    tn, fp, fn, tp = (int(x) for x in totals)
    n = tn + fp + fn + tp
    mu = (tn + tp + 2 * fp) / n
    if mu == 0:
        return None
    one, two = 1 / mu, 2 / mu
    return float(((tn + tp) * one * np.log(one) + fp * two * np.log(two)) / n)
