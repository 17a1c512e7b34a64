"""performance_report against sklearn.metrics and calibration_curve, overall and per group."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm  # type: ignore[import-untyped]
from sklearn.calibration import calibration_curve  # type: ignore[import-untyped]
from sklearn.exceptions import UndefinedMetricWarning  # type: ignore[import-untyped]

from ledger.errors import InputError
from policies.evidence._performance import PerformanceGroup, performance_report

TOL = 1e-12


def make_data(seed: int, n: int, groups: int, *, decimals: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    y_score = np.clip(0.3 * y_true + 0.7 * rng.random(n), 0, 1)
    if decimals is not None:  # ties, and scores exactly on bin edges
        y_score = y_score.round(decimals)
    y_pred = (y_score > 0.5).astype(int)
    sf = pd.DataFrame({"region": rng.choice([f"r{i}" for i in range(groups)], n),
                       "age": rng.choice(["young", "old"], n)})
    return y_true, y_pred, y_score, sf


def same(ours: float | None, ref: Any) -> bool:
    if ours is None:
        return bool(np.isnan(ref))
    return abs(float(ref) - ours) <= TOL


def check_against_sklearn(row: PerformanceGroup, y_true: np.ndarray, y_pred: np.ndarray,
                          y_score: np.ndarray, n_bins: int) -> None:
    nan = {"zero_division": np.nan}
    assert row.count == len(y_true)
    assert same(row.accuracy, skm.accuracy_score(y_true, y_pred))
    assert same(row.precision, skm.precision_score(y_true, y_pred, **nan))
    assert same(row.recall, skm.recall_score(y_true, y_pred, **nan))
    assert same(row.f1, skm.f1_score(y_true, y_pred, **nan))
    assert same(row.brier_score, skm.brier_score_loss(y_true, y_score, pos_label=1))
    if len(np.unique(y_true)) == 2:
        assert same(row.roc_auc, skm.roc_auc_score(y_true, y_score))
    else:
        assert row.roc_auc is None
    observed, predicted = calibration_curve(y_true, y_score, n_bins=n_bins, strategy="uniform", pos_label=1)
    assert len(row.calibration) == len(observed)
    for b, o, p in zip(row.calibration, observed, predicted, strict=True):
        assert same(b.observed_rate, o) and same(b.mean_predicted, p)
    assert sum(b.count for b in row.calibration) == len(y_true)


def check_all(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray, sf: pd.DataFrame,
              n_bins: int) -> None:
    result = performance_report(y_true, y_pred, y_score=y_score, sensitive_features=sf, n_bins=n_bins)
    check_against_sklearn(result.overall, y_true, y_pred, y_score, n_bins)
    for name in sf.columns:
        feature = result.feature(name)
        assert [g.label for g in feature.groups] == sorted(sf[name].unique())
        for g in feature.groups:
            rows = (sf[name] == g.key[0]).to_numpy()
            check_against_sklearn(g, y_true[rows], y_pred[rows], y_score[rows], n_bins)


@pytest.mark.parametrize(("seed", "decimals", "n_bins"), [(0, None, 10), (1, 2, 10), (2, 1, 5), (3, 3, 20)])
def test_overall_and_group_metrics_match_sklearn(seed: int, decimals: int | None, n_bins: int) -> None:
    check_all(*make_data(seed, 4000, 4, decimals=decimals), n_bins=n_bins)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(4, 120), groups=st.integers(1, 4),
       decimals=st.sampled_from([None, 1, 2]), n_bins=st.integers(1, 12))
def test_matches_sklearn_for_any_sizes_and_group_counts(seed: int, n: int, groups: int, decimals: int | None,
                                                      n_bins: int) -> None:
    check_all(*make_data(seed, n, groups, decimals=decimals), n_bins=n_bins)


def test_roc_auc_is_none_where_sklearn_warns_of_a_single_class() -> None:
    y_true, y_pred = np.array([0, 0, 0, 1, 1]), np.array([0, 1, 0, 1, 1])
    y_score = np.array([0.1, 0.6, 0.3, 0.8, 0.9])
    sf = pd.Series(["a", "a", "a", "b", "b"], name="g")
    result = performance_report(y_true, y_pred, y_score=y_score, sensitive_features=sf)
    for label, rows in (("a", slice(0, 3)), ("b", slice(3, 5))):
        with pytest.warns(UndefinedMetricWarning, match="Only one class is present"):
            ref = skm.roc_auc_score(y_true[rows], y_score[rows])
        assert np.isnan(ref) and result.feature("g").group(label).roc_auc is None


def test_without_scores_there_is_no_auc_brier_or_calibration() -> None:
    y_true, y_pred, _, sf = make_data(5, 300, 3)
    result = performance_report(y_true, y_pred, sensitive_features=sf)
    for row in (result.overall, *result.feature("region").groups):
        assert row.roc_auc is None and row.brier_score is None and row.calibration == ()
    assert result.config["y_score"] is False


def test_unknown_group_is_reported_apart() -> None:
    y_true, y_pred, y_score, sf = make_data(6, 500, 3)
    sf = sf.astype(object)
    sf.loc[sf.index[:40], "region"] = None
    result = performance_report(y_true, y_pred, y_score=y_score, sensitive_features=sf)
    region = result.feature("region")
    assert region.unknown_count == 40 and region.unknown is not None
    check_against_sklearn(region.unknown, y_true[:40], y_pred[:40], y_score[:40], 10)
    assert sum(g.count for g in region.groups) == 460
    assert result.summary()["region"]["unknown_count"] == 40


def test_summary_has_overall_values_and_the_worst_group_per_feature() -> None:
    y_true, y_pred, y_score, sf = make_data(8, 1000, 3)
    result = performance_report(y_true, y_pred, y_score=y_score, sensitive_features=sf)
    summary = result.summary()
    assert summary["accuracy"] == result.overall.accuracy and summary["n"] == 1000
    groups = result.feature("region").groups
    assert summary["region"]["min_recall"] == min(g.recall for g in groups if g.recall is not None)
    briers = [g.brier_score for g in groups if g.brier_score is not None]
    assert summary["region"]["max_brier_score"] == max(briers)
    assert summary["region"]["min_roc_auc"] == min(g.roc_auc for g in groups if g.roc_auc is not None)
    json.dumps(summary, allow_nan=False)


def test_to_json_is_finite_json_with_none_for_undefined_values() -> None:
    result = performance_report([0, 0, 0], [0, 0, 0], y_score=[0.1, 0.2, 0.3])
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["tool"] == "mlledger.performance" and data["config"]["n_bins"] == 10
    assert data["overall"]["precision"] is None and data["overall"]["roc_auc"] is None
    assert data["overall"]["f1"] is None and data["overall"]["brier_score"] == pytest.approx(14 / 300)


BAD_INPUT: dict[str, tuple[dict[str, Any], str]] = {
    "score above one": ({"y_score": [0.1, 1.5, 0.3, 0.4]},
                        "y_score must be probabilities in [0, 1]; 1 of 4 values lie outside "
                        "(first at index 1: 1.5)"),
    "negative score": ({"y_score": [0.1, 0.2, -0.3, 0.4]}, "outside (first at index 2: -0.3)"),
    "NaN score": ({"y_score": [0.1, np.nan, 0.3, 0.4]}, "y_score has 1 null, NaN or infinite values"),
    "non-binary label": ({"y_true": [0, 1, 2, 1]},
                         "y_true must be binary; found 3 distinct values: [0, 1, 2]"),
    "NaN prediction": ({"y_pred": [np.nan, 1.0, 0.0, 1.0]}, "y_pred has 1 null, NaN or infinite values"),
    "short score": ({"y_score": [0.1, 0.2]}, "y_score has 2 rows but y_true has 4"),
    "short sensitive features": ({"sensitive_features": pd.Series(["a"], name="g")},
                                 "sensitive_features has 1 rows but y_true has 4"),
    "empty": ({"y_true": [], "y_pred": [], "y_score": []}, "y_true is empty"),
    "declared category without rows": (
        {"sensitive_features": pd.Series(pd.Categorical(list("abab"), categories=list("abc")), name="g")},
        "sensitive feature 'g': declared categories ['c'] have no rows"),
    "reserved feature name": ({"sensitive_features": pd.Series(list("abab"), name="accuracy")},
                              "sensitive feature names ['accuracy'] clash with summary keys"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_refused_with_a_message_naming_it(case: str) -> None:
    overrides, message = BAD_INPUT[case]
    args: dict[str, Any] = {"y_true": [0, 1, 0, 1], "y_pred": [0, 1, 1, 1], "y_score": [0.1, 0.9, 0.6, 0.7]}
    args |= overrides
    with pytest.raises(InputError) as err:
        performance_report(args.pop("y_true"), args.pop("y_pred"), **args)
    assert message in str(err.value)


def test_n_bins_must_be_positive() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        performance_report([0, 1], [0, 1], y_score=[0.2, 0.8], n_bins=0)
