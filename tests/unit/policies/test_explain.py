"""Tests for policies.evidence._explain: proxies, sklearn cross-check, association measures, bad input."""

from __future__ import annotations

import json
import math
import sys
from functools import cache
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from scipy import stats  # type: ignore[import-untyped]
from sklearn.inspection import permutation_importance  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.tree import DecisionTreeClassifier  # type: ignore[import-untyped]

from ledger.errors import InputError
from policies.evidence._explain import (
    SHAP_INSTALL,
    _association,
    correlation_ratio,
    cramers_v,
    explain_report,
)

N = 2000


@cache
def population() -> dict[str, Any]:
    """race a/b/c; zip copies race 90% of the time and drives the label; income and age are noise."""
    rng = np.random.default_rng(0)
    race = rng.choice(["a", "b", "c"], N)
    code = pd.Series(race).map({"a": 0, "b": 1, "c": 2}).to_numpy()
    zip_group = np.where(rng.random(N) < 0.9, code, rng.integers(0, 3, N))
    return {
        "race": race,
        "race_code": code,
        "zip": 10_000 + 1_000 * zip_group,
        "income": rng.normal(50, 10, N),
        "age": rng.integers(18, 80, N),
        "y_zip": ((zip_group == 0) ^ (rng.random(N) < 0.1)).astype(int),
        "y_race": ((code == 0) ^ (rng.random(N) < 0.1)).astype(int),
        "noise": rng.normal(size=(N, 2)),
    }


def zip_model() -> tuple[DecisionTreeClassifier, pd.DataFrame, np.ndarray, pd.DataFrame]:
    p = population()
    X = pd.DataFrame({"zip": p["zip"], "income": p["income"], "age": p["age"]})
    model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, p["y_zip"])
    return model, X, p["y_zip"], pd.DataFrame({"race": p["race"]})


# --- flags ---------------------------------------------------------------------------------------


def test_zip_is_flagged_as_a_proxy_of_race() -> None:
    model, X, y, side = zip_model()
    r = explain_report(model, X, y, sensitive_features=["race"], top_k=2, data_with_sensitive=side)
    assert r.top_k[0] == "zip" and r.flagged and r.sensitive_in_top_k == ()
    (proxy,) = r.proxies_in_top_k
    assert (proxy.feature, proxy.sensitive, proxy.measure) == ("zip", "race", "correlation_ratio")
    assert proxy.value is not None and proxy.value > 0.85 and proxy.n == N
    assert r.summary()["proxies_in_top_k"] == [
        {"feature": "zip", "sensitive": "race", "measure": "correlation_ratio", "value": proxy.value}]


def test_zip_declared_categorical_is_compared_with_cramers_v() -> None:
    model, X, y, side = zip_model()
    r = explain_report(model, X, y, sensitive_features=["race"], top_k=2, data_with_sensitive=side,
                       categorical=["zip"])
    (proxy,) = r.proxies_in_top_k
    assert proxy.measure == "cramers_v" and proxy.value is not None and proxy.value > 0.85


def test_race_as_an_input_in_the_top_k_is_flagged() -> None:
    p = population()
    X = pd.DataFrame({"race": p["race_code"], "income": p["income"], "age": p["age"]})
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, p["y_race"])
    r = explain_report(model, X, p["y_race"], sensitive_features=["race"], top_k=2, categorical=["race"])
    assert r.top_k[0] == "race" and r.sensitive_in_top_k == ("race",) and r.flagged
    assert all(a.feature != "race" for a in r.associations)  # a sensitive feature is not its own proxy
    assert r.summary()["sensitive_in_top_k"] == ["race"]


def test_unrelated_top_features_are_not_flagged() -> None:
    p = population()
    X = pd.DataFrame({"x1": p["noise"][:, 0], "x2": p["noise"][:, 1]})
    y = (X["x1"] > 0).astype(int).to_numpy()
    model = LogisticRegression().fit(X, y)
    r = explain_report(model, X, y, sensitive_features=["race"], top_k=2,
                       data_with_sensitive=pd.DataFrame({"race": p["race"]}))
    assert r.top_k == ("x1", "x2") and not r.flagged
    assert [a.proxy for a in r.associations] == [False, False]
    assert all(a.value is not None and a.value < 0.1 for a in r.associations)


def test_a_higher_proxy_threshold_lets_a_weaker_association_pass() -> None:
    model, X, y, side = zip_model()
    strict = explain_report(model, X, y, sensitive_features=["race"], top_k=3, data_with_sensitive=side,
                            proxy_threshold=0.95)
    assert not strict.flagged and strict.summary()["proxy_threshold"] == 0.95


# --- sklearn cross-check -------------------------------------------------------------------------


def test_importances_equal_sklearn_permutation_importance_exactly() -> None:
    model, X, y, _ = zip_model()
    r = explain_report(model, X, y, n_repeats=7, seed=123, scoring="accuracy", top_k=3)
    direct = permutation_importance(model, X, y, scoring="accuracy", n_repeats=7, random_state=123)
    for i, name in enumerate(X.columns):
        f = r.importance(name)
        assert f.importance_mean == direct.importances_mean[i]
        assert f.importance_std == direct.importances_std[i]
        assert f.importances == tuple(direct.importances[i])
    assert [f.rank for f in r.importances] == [1, 2, 3]
    assert [f.feature for f in r.importances] == list(X.columns[np.argsort(-direct.importances_mean)])


def test_top_k_larger_than_the_feature_count_takes_them_all() -> None:
    model, X, y, _ = zip_model()
    r = explain_report(model, X, y, top_k=10, n_repeats=2)
    assert len(r.top_k) == 3 and r.config["top_k"] == 10


def test_result_json_is_finite_and_records_how_to_recompute() -> None:
    model, X, y, side = zip_model()
    r = explain_report(model, X, y, sensitive_features=["race"], data_with_sensitive=side,
                       n_repeats=3, seed=9)
    doc = r.to_json()
    json.dumps(doc, allow_nan=False)
    json.dumps(r.summary(), allow_nan=False)
    assert doc["tool"] == "mlledger.explainability" and doc["seed"] == 9 and doc["shap_mean_abs"] is None
    assert set(doc["libraries"]) == {"numpy", "pandas", "scipy", "sklearn"}
    assert doc["config"]["estimator"] == "sklearn.tree._classes.DecisionTreeClassifier"
    assert doc["config"]["scoring"] == "estimator.score" and doc["config"]["n_repeats"] == 3


# --- association measures ------------------------------------------------------------------------

TABLE = [[10, 20, 30], [20, 15, 5]]


def table_rows(table: list[list[int]]) -> tuple[list[str], list[str]]:
    a, b = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [f"r{i}"] * count
            b += [f"c{j}"] * count
    return a, b


def test_cramers_v_bias_corrected_by_hand() -> None:
    """2 x 3 table, n = 100, margins 60/40 and 30/35/35, expected 18 21 21 / 12 14 14.

    chi2 = 64/18 + 1/21 + 81/21 + 64/12 + 1/14 + 81/14 = 18.6508; phi2 = chi2/100;
    phi2+ = phi2 - 2*1/99; r~ = 2 - 1/99; k~ = 3 - 4/99; V = sqrt(phi2+ / (r~ - 1)) = 0.40988.
    """
    chi2 = 64 / 18 + 1 / 21 + 81 / 21 + 64 / 12 + 1 / 14 + 81 / 14
    expected = math.sqrt((chi2 / 100 - 2 / 99) / min(3 - 4 / 99 - 1, 2 - 1 / 99 - 1))
    v = cramers_v(*table_rows(TABLE))
    assert v == pytest.approx(expected, rel=1e-12)
    assert v == pytest.approx(0.40988, abs=1e-5)
    uncorrected = stats.contingency.association(np.array(TABLE), method="cramer")
    assert uncorrected == pytest.approx(math.sqrt(chi2 / 100), rel=1e-12)  # scipy's V: no correction
    assert v < uncorrected


def test_cramers_v_of_a_perfect_copy_is_one_and_of_a_constant_is_undefined() -> None:
    a = ["x", "y", "z"] * 50
    assert cramers_v(a, [s.upper() for s in a]) == pytest.approx(1.0, abs=1e-12)
    assert cramers_v(a, ["k"] * 150) is None


def test_correlation_ratio_by_hand() -> None:
    """groups a: 1,2,3 and b: 4,5,6; grand mean 3.5; SS_between 13.5, SS_total 17.5."""
    eta = correlation_ratio(["a"] * 3 + ["b"] * 3, [1, 2, 3, 4, 5, 6])
    assert eta == pytest.approx(math.sqrt(13.5 / 17.5), rel=1e-12)
    assert correlation_ratio(["a", "b", "a"], [2.0, 2.0, 2.0]) is None


def test_correlation_ratio_squared_is_the_one_way_anova_r_squared() -> None:
    rng = np.random.default_rng(5)
    groups = rng.choice(list("pqrs"), 600)
    values = rng.normal(size=600) + pd.Series(groups).map({"p": 0, "q": 0.3, "r": 0.6, "s": 1.0}).to_numpy()
    f = stats.f_oneway(*(values[groups == g] for g in "pqrs")).statistic
    df_between, df_within = 3, 600 - 4
    assert correlation_ratio(groups, values) ** 2 == pytest.approx(  # type: ignore[operator]
        f * df_between / (f * df_between + df_within), rel=1e-10)


def test_abs_pearson_equals_scipy_and_missing_rows_are_dropped() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=500)
    y = -0.7 * x + rng.normal(size=500)
    measure, value, n = _association(pd.Series(x), pd.Series(y))
    assert measure == "abs_pearson_r" and n == 500
    assert value == pytest.approx(abs(stats.pearsonr(x, y).statistic), abs=1e-12)
    x_nan = pd.Series(np.concatenate((x, [np.nan, 1.0])))
    y_nan = pd.Series(np.concatenate((y, [2.0, np.nan])))
    assert _association(x_nan, y_nan) == ("abs_pearson_r", value, 500)


def test_booleans_and_text_are_categorical() -> None:
    flags = pd.Series([True, False] * 50)
    text = pd.Series(["u", "v"] * 50)
    assert _association(flags, text)[0] == "cramers_v"
    assert _association(pd.Series(np.arange(100.0)), text)[0] == "correlation_ratio"


# --- optional SHAP -------------------------------------------------------------------------------


def test_shap_values_without_shap_installed_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)  # import shap now raises ImportError
    model, X, y, _ = zip_model()
    with pytest.raises(InputError, match=r"pip install 'mlledger\[shap\]'") as info:
        explain_report(model, X, y, shap_values=True)
    assert str(info.value) == SHAP_INSTALL


# --- bad input -----------------------------------------------------------------------------------


def bad_cases() -> dict[str, tuple[dict[str, Any], str]]:
    model, X, y, side = zip_model()
    base = {"model": model, "X": X, "y": y}
    return {
        "top_k_zero": (base | {"top_k": 0}, "top_k must be an integer >= 1, got 0"),
        "n_repeats_zero": (base | {"n_repeats": 0}, "n_repeats must be an integer >= 1, got 0"),
        "proxy_threshold_zero": (base | {"proxy_threshold": 0.0}, r"proxy_threshold must be in \(0, 1\]"),
        "sensitive_nowhere": (base | {"sensitive_features": ["gender"], "data_with_sensitive": side},
                              "sensitive feature 'gender' is not a column of X or data_with_sensitive"),
        "sensitive_without_side_data": (base | {"sensitive_features": ["race"]},
                                        r"'race' is not a column of X \(pass data_with_sensitive=\)"),
        "empty_rows": (base | {"X": X.iloc[:0], "y": y[:0]}, r"X is empty \(0 rows, 3 columns\)"),
        "no_columns": (base | {"X": X[[]]}, r"X is empty \(2000 rows, 0 columns\)"),
        "y_length": (base | {"y": y[:10]}, r"X has 2000 rows, y has shape \(10,\)"),
        "misaligned_side_data": (
            base | {"sensitive_features": ["race"], "data_with_sensitive": side.iloc[::-1]},
            "data_with_sensitive must hold the same rows as X with the same index"),
        "unknown_scoring": (base | {"scoring": "acuracy"}, "unknown scoring 'acuracy'"),
        "unfitted_model": (base | {"model": DecisionTreeClassifier()},
                           "model DecisionTreeClassifier is not fitted"),
    }


@pytest.mark.parametrize("case", list(bad_cases()))
def test_bad_input_is_refused(case: str) -> None:
    kwargs, message = bad_cases()[case]
    with pytest.raises(InputError, match=message):
        explain_report(**kwargs)
