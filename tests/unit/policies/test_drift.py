"""Tests for policies.evidence._drift: theory, scipy cross-checks, hand-computed PSI, bad input."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]

from ledger.errors import InputError
from policies.evidence._drift import (
    PSI_EPSILON,
    CategoricalDrift,
    DriftThresholds,
    NumericDrift,
    drift_report,
)
from policies.evidence._drift_stats import ks_wasserstein_sorted as _ks_wasserstein_sorted

TOL = 1e-12
A1 = pd.DataFrame({"a": [1.0]})


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def one(ref: Any, cur: Any, **kw: Any) -> NumericDrift:
    f = drift_report(pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur}), **kw).feature("x")
    assert isinstance(f, NumericDrift)
    return f


def one_cat(ref: Any, cur: Any, **kw: Any) -> CategoricalDrift:
    f = drift_report(pd.DataFrame({"c": ref}), pd.DataFrame({"c": cur}), categorical=["c"], **kw).feature("c")
    assert isinstance(f, CategoricalDrift)
    return f


def shares(f: NumericDrift | CategoricalDrift) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.array(f.counts_reference), np.array(f.counts_current)
    return r / r.sum(), c / c.sum()


# --- known distributions -------------------------------------------------------------------


def test_identical_data_has_no_drift() -> None:
    g = rng(0)
    df = pd.DataFrame({"x": g.normal(size=5000), "c": g.choice(list("abc"), 5000)})
    r = drift_report(df, df.copy(), categorical=["c"])
    x, c = r.feature("x"), r.feature("c")
    assert isinstance(x, NumericDrift) and isinstance(c, CategoricalDrift)
    assert (x.psi, x.ks_statistic, x.ks_pvalue, x.wasserstein, x.js_distance) == (0.0, 0.0, 1.0, 0.0, 0.0)
    assert (c.psi, c.chi2_statistic, c.chi2_pvalue, c.js_distance) == (0.0, 0.0, 1.0, 0.0)
    assert [f.status for f in r.features] == ["ok", "ok"]
    assert not r.dataset_drift and r.drifted_share == 0.0


def test_mean_shift_of_half_a_sd_is_detected_close_to_theory() -> None:
    """N(0,1) vs N(0.5,1): W1 = 0.5, KS D = 2*Phi(0.25) - 1, decile PSI about 0.238."""
    g = rng(42)
    f = one(g.normal(0, 1, 5000), g.normal(0.5, 1, 5000))
    assert f.status == "drift"
    assert f.wasserstein == pytest.approx(0.5, abs=0.05)
    assert f.wasserstein_normed == pytest.approx(0.5, abs=0.05)
    assert f.ks_statistic == pytest.approx(2 * stats.norm.cdf(0.25) - 1, abs=0.03)
    assert f.ks_pvalue is not None and f.ks_pvalue < 1e-50
    edges = np.concatenate(([-np.inf], stats.norm.ppf(np.arange(1, 10) / 10), [np.inf]))
    q = np.diff(stats.norm.cdf(edges - 0.5))
    assert f.psi == pytest.approx(np.sum((q - 0.1) * np.log(q / 0.1)), abs=0.04)
    assert f.psi is not None and f.psi >= 0.2
    assert any(r.startswith("ks_pvalue") for r in f.reasons) and any(r.startswith("psi") for r in f.reasons)


def test_categorical_shift_is_detected_by_chi_square() -> None:
    g = rng(1)
    ref = g.choice(list("abc"), 3000, p=[0.5, 0.3, 0.2])
    f = one_cat(ref, g.choice(list("abc"), 3000, p=[0.4, 0.3, 0.3]))
    assert f.status == "drift"
    assert f.chi2_pvalue is not None and f.chi2_pvalue < 1e-10
    assert f.reasons[0].startswith("chi2_pvalue")
    assert f.categories == ("a", "b", "c") and f.chi2_dof == 2


# --- scipy cross-checks ----------------------------------------------------------------------

SCIPY_CASES = {
    # name: (reference, current); sizes above 10_000 take the merged-sort path, below it scipy's own.
    "continuous_small": (rng(2).normal(0, 1, 800), rng(3).normal(0.1, 1.2, 650)),
    "continuous_large": (rng(4).normal(0, 1, 20_000), rng(5).normal(0, 1, 15_000)),
    "ties_large": (np.round(rng(6).normal(0, 1, 20_000), 1), np.round(rng(7).normal(0.02, 1, 30_000), 1)),
    "integers_large": (rng(8).integers(0, 6, 12_000) * 1.0, rng(9).integers(0, 7, 11_000) * 1.0),
    "exact_p_region": (rng(10).exponential(1, 3000), rng(11).exponential(1.1, 9000)),
}


@pytest.mark.parametrize("case", SCIPY_CASES, ids=list(SCIPY_CASES))
def test_numeric_statistics_equal_scipy(case: str) -> None:
    ref, cur = SCIPY_CASES[case]
    f = one(ref, cur)
    ks = stats.ks_2samp(ref, cur)
    assert f.ks_statistic == pytest.approx(ks.statistic, abs=TOL)
    assert f.ks_pvalue == pytest.approx(ks.pvalue, abs=TOL)
    assert f.wasserstein == pytest.approx(stats.wasserstein_distance(ref, cur), abs=TOL)
    assert f.wasserstein_normed == pytest.approx(f.wasserstein / np.std(ref), abs=TOL)
    assert f.js_distance == pytest.approx(jensenshannon(*shares(f), base=2), abs=TOL)


def test_categorical_statistics_equal_scipy() -> None:
    g = rng(12)
    ref, cur = g.choice(list("abcd"), 2000, p=[0.4, 0.3, 0.2, 0.1]), g.choice(list("abcde"), 1500)
    f = one_cat(ref, cur)
    table = np.array([f.counts_reference, f.counts_current])
    chi2 = stats.chi2_contingency(table)  # the unseen bucket is non-empty here, so no column is dropped
    assert f.chi2_statistic == pytest.approx(chi2.statistic, abs=TOL)
    assert f.chi2_pvalue == pytest.approx(chi2.pvalue, abs=TOL)
    assert f.chi2_dof == chi2.dof == 4
    assert f.js_distance == pytest.approx(jensenshannon(*shares(f), base=2), abs=TOL)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 60), elements=st.integers(-4, 4).map(float)),
    arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([-3.5, -1.0, 0.0, 0.25, 2.0, 4.0])),
)
def test_merged_sort_ks_and_wasserstein_equal_scipy_with_ties(a: np.ndarray, b: np.ndarray) -> None:
    """The fast path used above 10_000 values, on small samples full of ties."""
    d, w = _ks_wasserstein_sorted(np.sort(a), np.sort(b))
    # Only the statistic is compared. scipy's exact p-value gives up, with this warning, on
    # tie-heavy samples such as [0, 0, 0, 0, 1] against [0, 0, 0, 0, 0].
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
        ks = stats.ks_2samp(a, b).statistic
    assert d == pytest.approx(ks, abs=TOL)
    assert w == pytest.approx(stats.wasserstein_distance(a, b), abs=TOL)


def test_bin_edges_are_the_reference_deciles_numpy_computes() -> None:
    ref = np.random.default_rng(13).exponential(2.0, 1001)
    f = one(ref, ref[:500])
    assert f.bin_edges == tuple(np.quantile(ref, np.arange(1, 10) / 10))
    assert sum(f.counts_reference) == 1001 and len(f.counts_reference) == 10


# --- PSI by hand -------------------------------------------------------------------------------


def test_psi_hand_computed() -> None:
    """bins=4 over reference 1..8: edges 2.75, 4.5, 6.25 (quartiles), counts 2,2,2,2.

    current [1,1,1,1,2,3,5,7,9,10]: counts 5,1,1,3 of 10, shares .5,.1,.1,.3 against .25 each:
    PSI = (.5-.25) ln 2 + 2 (.1-.25) ln .4 + (.3-.25) ln 1.2 = 0.457290...
    """
    f = one(np.arange(1.0, 9.0), [1, 1, 1, 1, 2, 3, 5, 7, 9, 10.0], bins=4)
    assert f.bin_edges == (2.75, 4.5, 6.25)
    assert f.counts_reference == (2, 2, 2, 2) and f.counts_current == (5, 1, 1, 3)
    expected = 0.25 * math.log(2) + 2 * (-0.15) * math.log(0.4) + 0.05 * math.log(1.2)
    assert f.psi == pytest.approx(expected, rel=1e-12)
    assert f.psi == pytest.approx(0.457290, abs=1e-6)


def test_psi_gives_an_empty_bin_the_epsilon_share() -> None:
    """current [1..6] leaves the top quartile bin empty: its share counts as 1e-4."""
    f = one(np.arange(1.0, 9.0), np.arange(1.0, 7.0), bins=4)
    assert f.counts_current == (2, 2, 2, 0)
    eps = PSI_EPSILON
    expected = 3 * (1 / 3 - 0.25) * math.log((1 / 3) / 0.25) + (eps - 0.25) * math.log(eps / 0.25)
    assert f.psi == pytest.approx(expected, rel=1e-12)


def test_tied_quantiles_merge_into_fewer_bins() -> None:
    f = one([0.0] * 85 + [1.0] * 15, [0.0] * 50 + [1.0] * 50)
    assert f.bin_edges == (0.0, 1.0)  # deciles 0.1-0.8 are all 0, the 0.9 decile is 1
    assert f.counts_reference == (85, 15, 0) and f.counts_current == (50, 50, 0)


# --- categories ----------------------------------------------------------------------------------


def test_unseen_categories_are_pooled_in_the_last_bin() -> None:
    f = one_cat(["a"] * 50 + ["b"] * 50, ["a"] * 40 + ["b"] * 40 + ["x"] * 15 + ["y"] * 5)
    assert f.categories == ("a", "b") and f.unseen_categories == ("x", "y")
    assert f.counts_reference == (50, 50, 0) and f.counts_current == (40, 40, 20)
    expected = 2 * (0.4 - 0.5) * math.log(0.8) + (0.2 - PSI_EPSILON) * math.log(0.2 / PSI_EPSILON)
    assert f.psi == pytest.approx(expected, rel=1e-12)
    assert f.status == "drift"


def test_category_missing_from_current_counts_as_zero() -> None:
    f = one_cat(["a", "b", "c"] * 10, ["a", "b"] * 15)
    assert f.counts_current == (15, 15, 0, 0) and f.unseen_categories == ()
    assert f.chi2_dof == 2  # the empty unseen bucket is left out of the contingency table


def test_single_shared_category_is_no_drift() -> None:
    f = one_cat(["a"] * 10, ["a"] * 30)
    assert (f.psi, f.chi2_statistic, f.chi2_pvalue, f.chi2_dof, f.status) == (0.0, 0.0, 1.0, 0, "ok")


# --- thresholds ----------------------------------------------------------------------------------


def test_thresholds_change_statuses() -> None:
    g = rng(14)
    ref, cur = g.normal(0, 1, 4000), g.normal(0.15, 1, 4000)
    default = one(ref, cur)
    assert default.status == "drift" and default.reasons[0].startswith("ks_pvalue")
    assert default.psi is not None and default.psi < 0.1
    no_ks = one(ref, cur, thresholds=DriftThresholds(ks_pvalue=None))
    assert no_ks.status == "ok" and no_ks.ks_pvalue == default.ks_pvalue
    strict_psi = one(ref, cur, thresholds=DriftThresholds(ks_pvalue=None, psi_warn=0.005, psi_drift=0.5))
    assert strict_psi.status == "warn" and strict_psi.reasons[0].startswith("psi")
    strictest = one(ref, cur, thresholds=DriftThresholds(ks_pvalue=None, psi_warn=0.005, psi_drift=0.01))
    assert strictest.status == "drift"


def test_js_distance_only_warns() -> None:
    f = one_cat(["a"] * 60 + ["b"] * 40, ["a"] * 45 + ["b"] * 55,
                thresholds=DriftThresholds(chi2_pvalue=None, psi_warn=1.0, psi_drift=2.0, js_warn=0.05))
    assert f.status == "warn" and f.reasons[0].startswith("js_distance")


def test_drift_share_decides_dataset_drift() -> None:
    g = rng(15)
    ref = pd.DataFrame({"a": g.normal(size=2000), "b": g.normal(size=2000), "c": g.normal(size=2000)})
    cur = ref.copy()
    cur["a"] = cur["a"] + 1.0
    r = drift_report(ref, cur)
    assert r.n_drifted == 1 and r.drifted_share == pytest.approx(1 / 3) and not r.dataset_drift
    assert drift_report(ref, cur, thresholds=DriftThresholds(drift_share=0.3)).dataset_drift
    assert r.summary()["drifted_features"] == ["a"]


def test_threshold_model_refuses_inconsistent_values() -> None:
    with pytest.raises(ValidationError, match="psi_warn 0.3 must not exceed psi_drift 0.2"):
        DriftThresholds(psi_warn=0.3)
    with pytest.raises(ValidationError):
        DriftThresholds(ks_pvalue=1.5)
    with pytest.raises(ValidationError):
        DriftThresholds(drift_shar=0.4)  # type: ignore[call-arg]


# --- predictions ---------------------------------------------------------------------------------


def test_prediction_drift_numeric_scores_and_categorical_labels() -> None:
    g = rng(16)
    df = pd.DataFrame({"x": g.normal(size=1000)})
    scores = drift_report(df, df, reference_predictions=g.beta(2, 5, 1000),
                          current_predictions=g.beta(5, 2, 1000))
    assert isinstance(scores.prediction, NumericDrift) and scores.prediction.status == "drift"
    assert scores.config["prediction_kind"] == "numeric" and not scores.dataset_drift
    labels = drift_report(df, df, reference_predictions=[0, 1] * 500,
                          current_predictions=[1] * 900 + [0] * 100)
    assert isinstance(labels.prediction, CategoricalDrift) and labels.prediction.status == "drift"
    assert labels.summary()["prediction_status"] == "drift"


# --- missing values and bad input ----------------------------------------------------------------


def test_nan_values_are_counted_and_excluded() -> None:
    g = rng(17)
    ref, cur = g.normal(size=500), g.normal(size=400)
    with_nan = one(np.concatenate((ref, [np.nan] * 7)), np.concatenate(([np.nan] * 3, cur)))
    assert (with_nan.missing_reference, with_nan.missing_current) == (7, 3)
    assert (with_nan.n_reference, with_nan.n_current) == (500, 400)
    clean = one(ref, cur)
    assert with_nan.model_dump(exclude={"missing_reference", "missing_current"}) == clean.model_dump(
        exclude={"missing_reference", "missing_current"})
    cat = one_cat(["a", None, "b", "a"], ["a", "b", pd.NA, None])
    assert (cat.missing_reference, cat.missing_current, cat.n_reference, cat.n_current) == (1, 2, 3, 2)


def test_all_nan_column_is_reported_as_no_data_and_counts_as_drifted() -> None:
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [np.nan] * 4, "c": ["a", "b", "a", "b"]})
    cur = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0] * 4, "c": [None] * 4})
    r = drift_report(ref, cur, categorical=["c"])
    y, c = r.feature("y"), r.feature("c")
    assert y.status == "no_data" and y.reasons == ("no non-missing values in reference",)
    assert c.status == "no_data" and c.reasons == ("no non-missing values in current",)
    assert (y.psi, y.missing_reference, c.missing_current) == (None, 4, 4)
    assert r.n_drifted == 2 and r.dataset_drift
    assert r.summary()["no_data_features"] == ["y", "c"]


def test_result_json_is_finite_and_complete() -> None:
    ref = pd.DataFrame({"x": [1.0, 1.0, 1.0], "c": ["a", "b", "c"]})
    cur = pd.DataFrame({"x": [1.0, 1.0, 2.0], "c": ["a", "b", "z"]})
    r = drift_report(ref, cur, categorical=["c"])
    doc = r.to_json()
    json.dumps(doc, allow_nan=False)
    assert doc["features"][0]["reference_std"] is None and doc["features"][0]["wasserstein_normed"] is None
    assert doc["tool"] == "mlledger.drift" and set(doc["libraries"]) == {"numpy", "pandas", "scipy"}
    assert doc["config"]["thresholds"] == DriftThresholds().model_dump()
    assert doc["config"]["features"] == ["x", "c"] and doc["config"]["categorical"] == ["c"]
    json.dumps(r.summary(), allow_nan=False)


BAD_INPUT = {
    "different_columns": (
        {"reference": pd.DataFrame({"a": [1.0], "b": [1.0]}),
         "current": pd.DataFrame({"a": [1.0], "z": [1.0]})},
        r"missing from current: \['b'\]; missing from reference: \['z'\]",
    ),
    "requested_feature_missing": (
        {"reference": pd.DataFrame({"a": [1.0], "b": [1.0]}), "current": pd.DataFrame({"a": [1.0]}),
         "features": ["a", "b"]},
        r"requested features \['b'\] are not columns of current",
    ),
    "empty_reference": (
        {"reference": pd.DataFrame({"a": pd.Series([], dtype=float)}), "current": pd.DataFrame({"a": [1.0]})},
        "reference has no rows",
    ),
    "no_features": (
        {"reference": pd.DataFrame(index=[0]), "current": pd.DataFrame(index=[0])},
        "no features to compare",
    ),
    "text_declared_numeric": (
        {"reference": pd.DataFrame({"city": ["x", "y"]}), "current": pd.DataFrame({"city": ["x", "y"]})},
        r"column 'city' in reference is declared numeric but has dtype .*categorical=",
    ),
    "categorical_not_a_feature": (
        {"reference": A1, "current": A1, "categorical": ["b"]},
        r"categorical feature 'b' is not among the compared features \['a'\]",
    ),
    "infinite_value": (
        {"reference": pd.DataFrame({"a": [1.0, np.inf]}), "current": pd.DataFrame({"a": [1.0, 2.0]})},
        r"column 'a' in reference holds 1 infinite values",
    ),
    "bins_too_few": (
        {"reference": A1, "current": A1, "bins": 1},
        "bins must be an integer >= 2, got 1",
    ),
    "one_prediction_side": (
        {"reference": A1, "current": A1,
         "reference_predictions": [0.1]},
        "give both reference_predictions and current_predictions, or neither",
    ),
    "two_d_predictions": (
        {"reference": A1, "current": A1,
         "reference_predictions": [[0.1, 0.9]], "current_predictions": [[0.2, 0.8]]},
        r"reference_predictions must be one-dimensional, got shape \(1, 2\)",
    ),
    "empty_predictions": (
        {"reference": A1, "current": A1,
         "reference_predictions": [0.1], "current_predictions": np.array([], dtype=float)},
        "current_predictions is empty",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_refused_with_its_location(case: str) -> None:
    kwargs, message = BAD_INPUT[case]
    with pytest.raises(InputError, match=message):
        drift_report(**kwargs)
