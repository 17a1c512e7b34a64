"""fairness_report against fairlearn and aif360 on the same data, LL144 by hand, and bad input."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from aif360.sklearn import metrics as aif  # type: ignore[import-untyped]
from fairlearn import metrics as flm  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, precision_score  # type: ignore[import-untyped]

from ledger.errors import InputError
from policies.evidence._fairness import FairnessGrouping, FairnessResult, fairness_report

TOL = 1e-9
FEATURE_VALUES = {
    "sex": ["female", "male", "nonbinary"],
    "race": ["asian", "black", "hispanic", "other", "white"],
    "age": ["<40", "40-60", ">60"],
}
RATES = {
    "selection_rate": flm.selection_rate,
    "tpr": flm.true_positive_rate,
    "fpr": flm.false_positive_rate,
    "fnr": flm.false_negative_rate,
    "precision": functools.partial(precision_score, zero_division=np.nan),
    "accuracy": accuracy_score,
    "count": flm.count,
}
FAIRLEARN_DISPARITIES = {
    "demographic_parity_difference": flm.demographic_parity_difference,
    "demographic_parity_ratio": flm.demographic_parity_ratio,
    "equalized_odds_difference": flm.equalized_odds_difference,
    "equalized_odds_ratio": flm.equalized_odds_ratio,
    "equal_opportunity_difference": flm.equal_opportunity_difference,
    "equal_opportunity_ratio": flm.equal_opportunity_ratio,
    "false_positive_rate_difference": flm.false_positive_rate_difference,
    "false_positive_rate_ratio": flm.false_positive_rate_ratio,
}


def make_data(seed: int, n: int,
              levels: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Random rows plus one positive and one negative row for every combination of values,
    so every group and intersection has a defined TPR and FPR."""
    rng = np.random.default_rng(seed)
    values = {name: FEATURE_VALUES[name][:k] for name, k in levels.items()}
    grid = pd.MultiIndex.from_product(list(values.values()), names=list(values)).to_frame(index=False)
    random = pd.DataFrame({name: rng.choice(v, n) for name, v in values.items()})
    sf = pd.concat([grid, grid, random], ignore_index=True)
    m = len(sf)
    y_true = np.concatenate([np.ones(len(grid)), np.zeros(len(grid)), rng.integers(0, 2, n)]).astype(int)
    first = (sf.iloc[:, 0] == values[next(iter(values))][0]).to_numpy()
    y_score = np.clip(0.35 * y_true + rng.random(m) * 0.65 + 0.1 * first, 0, 1)
    y_pred = (y_score > 0.5).astype(int)
    order = rng.permutation(m)
    return y_true[order], y_pred[order], y_score[order], sf.iloc[order].reset_index(drop=True)


def same(ours: float | None, ref: Any) -> bool:
    """``ours`` equals the reference value; None stands for the reference's NaN."""
    if ours is None:
        return ref is None or bool(np.isnan(ref))
    return abs(float(ref) - ours) <= TOL


def sensitive(sf: pd.DataFrame, g: FairnessGrouping) -> pd.Series | pd.DataFrame:
    return sf[g.features[0]] if len(g.features) == 1 else sf[list(g.features)]


def check_group_rates(g: FairnessGrouping, y_true: np.ndarray, y_pred: np.ndarray, sf: pd.DataFrame) -> None:
    by_group = flm.MetricFrame(metrics=RATES, y_true=y_true, y_pred=y_pred,
                               sensitive_features=sensitive(sf, g)).by_group.dropna(how="all")
    assert len(by_group) == len(g.groups)
    for row in g.groups:
        ref = by_group.loc[row.key[0] if len(row.key) == 1 else tuple(row.key)]
        for name in RATES:
            ours = getattr(row, name)
            assert same(ours, ref[name]), (g.name, row.label, name, ours, ref[name])


def check_fairlearn(g: FairnessGrouping, y_true: np.ndarray, y_pred: np.ndarray, sf: pd.DataFrame) -> None:
    d = g.disparities
    if d.equalized_odds_ratio is None:
        # fairlearn takes Python's min() over the TPR and FPR ratios, so a NaN one wins or loses by
        # position; an undefined component makes ours None.
        assert None in (d.equal_opportunity_ratio, d.false_positive_rate_ratio)
    for name, fn in FAIRLEARN_DISPARITIES.items():
        if name == "equalized_odds_ratio" and d.equalized_odds_ratio is None:
            continue
        ref = fn(y_true, y_pred, sensitive_features=sensitive(sf, g))
        assert same(getattr(g.disparities, name), ref), (g.name, name, getattr(g.disparities, name), ref)


def check_aif360(g: FairnessGrouping, y_true: np.ndarray, y_pred: np.ndarray, sf: pd.DataFrame) -> None:
    d = g.disparities
    if len(g.groups) == 1:  # nobody is unprivileged; aif360 divides by zero or refuses empty input
        assert d.disparate_impact is d.statistical_parity_difference is d.average_odds_difference is None
        return
    prot = [sf[f].to_numpy() for f in g.features]
    kw: dict[str, Any] = {"prot_attr": prot[0] if len(prot) == 1 else prot,
                          "priv_group": d.privileged[0] if len(d.privileged) == 1 else tuple(d.privileged)}
    assert same(d.disparate_impact, aif.disparate_impact_ratio(y_true, y_pred, zero_division=np.nan, **kw))
    assert same(d.statistical_parity_difference, aif.statistical_parity_difference(y_true, y_pred, **kw))
    assert same(d.average_odds_difference, aif.average_odds_difference(y_true, y_pred, **kw))


def check_all(result: FairnessResult, y_true: np.ndarray, y_pred: np.ndarray, sf: pd.DataFrame) -> None:
    for g in result.groupings:
        check_group_rates(g, y_true, y_pred, sf)
        check_fairlearn(g, y_true, y_pred, sf)
        check_aif360(g, y_true, y_pred, sf)
    assert same(result.theil_index, aif.generalized_entropy_error(y_true, y_pred, alpha=1))
    assert same(result.theil_index, aif.theil_index(y_pred - y_true + 1))


# --- cross-checks against the reference libraries -----------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_every_rate_and_disparity_matches_fairlearn_and_aif360(seed: int) -> None:
    y_true, y_pred, y_score, sf = make_data(seed, 3000, {"sex": 2, "race": 5})
    result = fairness_report(y_true, y_pred, sensitive_features=sf, y_score=y_score)
    assert [g.name for g in result.groupings] == ["sex", "race", "sex & race"]
    check_all(result, y_true, y_pred, sf)


def test_three_features_add_every_pair_and_the_full_intersection() -> None:
    y_true, y_pred, _, sf = make_data(7, 2000, {"sex": 2, "race": 3, "age": 3})
    result = fairness_report(y_true, y_pred, sensitive_features=sf)
    assert [g.name for g in result.groupings] == [
        "sex", "race", "age", "sex & race", "sex & age", "race & age", "sex & race & age"]
    check_all(result, y_true, y_pred, sf)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300),
       sex=st.integers(1, 3), race=st.integers(1, 5), age=st.integers(0, 3))
def test_matches_references_for_any_sizes_and_group_counts(seed: int, n: int, sex: int, race: int,
                                                           age: int) -> None:
    levels = {"sex": sex, "race": race} | ({"age": age} if age else {})
    y_true, y_pred, _, sf = make_data(seed, n, levels)
    check_all(fairness_report(y_true, y_pred, sensitive_features=sf), y_true, y_pred, sf)


def test_missing_combinations_are_absent_like_fairlearn() -> None:
    """An intersection lists only the value combinations that occur; fairlearn's NaN rows are skipped."""
    y_true, y_pred, _, sf = make_data(3, 1500, {"sex": 2, "race": 5})
    keep = ~((sf["sex"] == "female") & (sf["race"] == "white"))
    y_true, y_pred, sf = y_true[keep], y_pred[keep], sf[keep].reset_index(drop=True)
    result = fairness_report(y_true, y_pred, sensitive_features=sf)
    assert "female & white" not in [g.label for g in result.grouping("sex & race").groups]
    check_all(result, y_true, y_pred, sf)


def test_configured_privileged_group_matches_aif360() -> None:
    y_true, y_pred, _, sf = make_data(11, 2000, {"sex": 2, "race": 5})
    result = fairness_report(y_true, y_pred, sensitive_features=sf,
                             privileged={"race": "black", "sex & race": ("male", "white")})
    race, both = result.grouping("race").disparities, result.grouping("sex & race").disparities
    assert (race.privileged, race.privileged_label) == (("black",), "black")
    assert race.privileged_source == "configured"
    assert (both.privileged, both.privileged_source) == (("male", "white"), "configured")
    assert result.grouping("sex").disparities.privileged_source == "highest_selection_rate"
    check_all(result, y_true, y_pred, sf)


def test_default_privileged_group_has_the_highest_selection_rate() -> None:
    y_true, y_pred, _, sf = make_data(5, 2000, {"sex": 2, "race": 5})
    g = fairness_report(y_true, y_pred, sensitive_features=sf).grouping("race")
    top = max(g.groups, key=lambda r: r.selection_rate)
    assert g.disparities.privileged_label == top.label
    assert g.disparities.disparate_impact is not None and g.disparities.disparate_impact <= 1


def test_string_labels_with_pos_label_equal_the_numeric_result() -> None:
    y_true, y_pred, y_score, sf = make_data(2, 500, {"sex": 2, "race": 3})
    words = np.array(["reject", "hire"])
    numeric = fairness_report(y_true, y_pred, sensitive_features=sf, y_score=y_score)
    text = fairness_report(pd.Series(words[y_true]), list(words[y_pred]), sensitive_features=sf,
                           y_score=y_score, pos_label="hire")
    assert text.groupings == numeric.groupings
    assert text.config["pos_label"] == "hire"


def test_undefined_tpr_is_none_and_the_group_is_left_out_of_the_comparison() -> None:
    y_true, y_pred, _, sf = make_data(4, 1500, {"sex": 2, "race": 5})
    y_true = np.where(sf["race"] == "other", 0, y_true)
    g = fairness_report(y_true, y_pred, sensitive_features=sf).grouping("race")
    assert g.group("other").tpr is None and g.group("other").fnr is None
    assert g.disparities.groups_without_positives == ("other",)
    assert g.disparities.groups_without_negatives == ()
    keep = (sf["race"] != "other").to_numpy()
    ref = flm.equal_opportunity_difference(y_true[keep], y_pred[keep], sensitive_features=sf["race"][keep])
    assert same(g.disparities.equal_opportunity_difference, ref)


# --- small groups, unknown values, LL144 ------------------------------------------------------

def test_a_small_group_is_flagged_and_kept() -> None:
    y_true, y_pred, _, sf = make_data(1, 1000, {"sex": 2, "race": 5})
    sf.loc[sf.index[:5], "race"] = "pacific"
    result = fairness_report(y_true, y_pred, sensitive_features=sf, min_group_size=30)
    race = result.grouping("race")
    assert race.group("pacific").small_group and race.group("pacific").count == 5
    assert not race.group("white").small_group
    assert race.small_groups == ("pacific",)
    assert result.summary()["race"]["small_groups"] == ["pacific"]
    assert result.summary()["race"]["n_small_groups"] == 1
    assert sum(r.count for r in race.groups) == len(y_true)


def test_ll144_impact_and_scoring_ratios_by_hand() -> None:
    """10 women (4 selected), 20 men (12 selected), 3 unknown (all selected).

    Selection rates: women 4/10 = 0.4, men 12/20 = 0.6; impact ratios 0.4/0.6 = 2/3 and 1.
    Scores are 1..33, so the sample median is 17. Women score 10..19 (18, 19 above: 2/10 = 0.2),
    men 1..9 and 20..30 (11 above: 11/20 = 0.55), unknown 31..33 (3/3, excluded from the ratios).
    Scoring impact ratios: 0.2/0.55 = 4/11 and 1.
    """
    sex = ["F"] * 10 + ["M"] * 20 + [None] * 3
    y_pred = [1] * 4 + [0] * 6 + [1] * 12 + [0] * 8 + [1] * 3
    y_score = list(range(10, 20)) + list(range(1, 10)) + list(range(20, 31)) + [31, 32, 33]
    y_true = [1, 0] * 16 + [1]
    result = fairness_report(y_true, y_pred, sensitive_features=pd.Series(sex, name="sex"), y_score=y_score,
                             min_group_size=0)
    g = result.grouping("sex")
    women, men = g.group("F"), g.group("M")
    assert (women.selection_rate, men.selection_rate) == (0.4, 0.6)
    assert women.impact_ratio == pytest.approx(2 / 3, abs=1e-15) and men.impact_ratio == 1.0
    assert (women.scoring_rate, men.scoring_rate) == (0.2, 0.55)
    assert women.scoring_impact_ratio == pytest.approx(4 / 11, abs=1e-15) and men.scoring_impact_ratio == 1.0
    assert g.unknown_count == 3
    assert g.unknown is not None and g.unknown.selection_rate == 1.0 and g.unknown.impact_ratio is None
    summary = result.summary()["sex"]
    assert summary["min_impact_ratio"] == pytest.approx(2 / 3, abs=1e-15)
    assert summary["min_scoring_impact_ratio"] == pytest.approx(4 / 11, abs=1e-15)
    assert summary["unknown_count"] == 3


def test_unknown_rows_are_counted_and_excluded_from_every_disparity() -> None:
    y_true, y_pred, _, sf = make_data(9, 2000, {"sex": 2, "race": 5})
    sf = sf.astype(object)
    sf.loc[sf.index[::50], "race"] = None
    sf.loc[sf.index[1::70], "sex"] = np.nan
    result = fairness_report(y_true, y_pred, sensitive_features=sf)
    race_null, sex_null = sf["race"].isna(), sf["sex"].isna()
    assert result.grouping("race").unknown_count == race_null.sum()
    assert result.grouping("sex & race").unknown_count == (race_null | sex_null).sum()
    assert result.summary()["race"]["unknown_count"] == race_null.sum()
    known = ~(race_null | sex_null).to_numpy()
    for name in ("sex", "race", "sex & race"):
        g = result.grouping(name)
        rows = ~sensitive(sf, g).isna().to_numpy().reshape(len(sf), -1).any(axis=1)
        check_fairlearn(g, y_true[rows], y_pred[rows], sf[rows])
        check_aif360(g, y_true[rows], y_pred[rows], sf[rows])
    assert known.sum() < len(sf)


def test_declared_categories_keep_their_order() -> None:
    y_true, y_pred, _, sf = make_data(6, 300, {"sex": 2, "race": 3})
    sf["race"] = pd.Categorical(sf["race"], categories=["hispanic", "asian", "black"])
    g = fairness_report(y_true, y_pred, sensitive_features=sf).grouping("race")
    assert [r.label for r in g.groups] == ["hispanic", "asian", "black"]


# --- result shape ------------------------------------------------------------------------------

def test_to_json_is_finite_json_with_none_for_undefined_values() -> None:
    sf = pd.Series(["a", "a", "b", "b"], name="g")
    result = fairness_report([0, 0, 1, 1], [0, 0, 0, 0], sensitive_features=sf)
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["tool"] == "mlledger.fairness"
    assert set(data["libraries"]) == {"numpy", "pandas"}
    assert data["config"]["min_group_size"] == 30
    g = data["groupings"][0]
    assert g["groups"][0]["tpr"] is None and g["disparities"]["demographic_parity_ratio"] is None
    assert g["disparities"]["disparate_impact"] is None
    json.dumps(result.summary(), allow_nan=False)


def test_theil_index_is_none_when_every_benefit_is_zero() -> None:
    """b = y_pred - y_true + 1 is 0 on every row when every row is a false negative."""
    result = fairness_report([1, 1, 1], [0, 0, 0], sensitive_features=pd.Series(["a", "b", "b"], name="g"))
    assert result.theil_index is None
    assert result.summary()["theil_index"] is None


def test_summary_is_flat_with_one_level_per_grouping() -> None:
    y_true, y_pred, _, sf = make_data(0, 200, {"sex": 2, "race": 2})
    summary = fairness_report(y_true, y_pred, sensitive_features=sf).summary()
    assert set(summary) == {"n", "theil_index", "sex", "race", "sex & race"}
    for value in summary["sex & race"].values():
        assert value is None or isinstance(value, str | int | float | bool | list)


def test_result_is_frozen() -> None:
    result = fairness_report([0, 1], [1, 1], sensitive_features=pd.Series(["a", "b"], name="g"))
    with pytest.raises(ValidationError):
        result.n = 3


# --- bad input ------------------------------------------------------------------------------------

GOOD_SF = pd.DataFrame({"sex": ["f", "m", "f", "m"], "race": ["a", "b", "b", "a"]})
BAD_INPUT: dict[str, tuple[dict[str, Any], str]] = {
    "non-binary label": ({"y_true": [0, 1, 2, 1]},
                         "y_true must be binary; found 3 distinct values: [0, 1, 2]"),
    "non-binary prediction": ({"y_pred": [0, 3, 2, 1]}, "y_pred must be binary; found 4 distinct values"),
    "three labels across both": ({"y_pred": [2, 2, 1, 1]}, "y_true has [0, 1], y_pred has [1, 2]"),
    "pos_label absent": ({"y_true": [0, 2, 0, 2], "y_pred": [0, 2, 2, 2]},
                         "pos_label 1 is not among the label values found: [0, 2]"),
    "NaN prediction": ({"y_pred": [0.0, 1.0, np.nan, np.nan]},
                       "y_pred has 2 null, NaN or infinite values (first at index 2)"),
    "null label": ({"y_true": np.array([0, None, 1, 1], dtype=object)},
                   "y_true has 1 null, NaN or infinite values (first at index 1)"),
    "infinite score": ({"y_score": [0.1, np.inf, 0.3, 0.4]},
                       "y_score has 1 null, NaN or infinite values (first at index 1)"),
    "NaN score": ({"y_score": [0.1, 0.2, 0.3, np.nan]},
                  "y_score has 1 null, NaN or infinite values (first at index 3)"),
    "text score": ({"y_score": ["a", "b", "c", "d"]}, "y_score must be numeric"),
    "short prediction": ({"y_pred": [0, 1, 1]}, "y_pred has 3 rows but y_true has 4"),
    "short score": ({"y_score": [0.5] * 5}, "y_score has 5 rows but y_true has 4"),
    "short sensitive features": ({"sensitive_features": GOOD_SF.iloc[:3]},
                                 "sensitive_features has 3 rows but y_true has 4"),
    "empty": ({"y_true": [], "y_pred": [], "sensitive_features": GOOD_SF.iloc[:0]}, "y_true is empty"),
    "two-dimensional": ({"y_true": [[0, 1, 0, 1]]}, "y_true must be one-dimensional; got shape (1, 4)"),
    "no sensitive columns": ({"sensitive_features": pd.DataFrame(index=range(4))},
                             "sensitive_features has no columns"),
    "duplicate columns": ({"sensitive_features": pd.DataFrame([[1, 2]] * 4, columns=["a", "a"])},
                          "duplicate column names: ['a', 'a']"),
    "declared category without rows": (
        {"sensitive_features": pd.Series(pd.Categorical(["f", "m", "f", "m"], categories=["f", "m", "x"]),
                                         name="sex")},
        "sensitive feature 'sex': declared categories ['x'] have no rows"),
    "all values null": ({"sensitive_features": pd.Series([None] * 4, name="sex", dtype=object)},
                        "sensitive feature 'sex' has no known values: all 4 rows are null"),
    "privileged feature missing": ({"privileged": {"gender": "f"}},
                                   "privileged names 'gender', which is not a sensitive feature"),
    "privileged group missing": ({"privileged": {"sex": "x"}}, "privileged group 'x' for 'sex' has no rows"),
    "reserved feature name": ({"sensitive_features": pd.Series([1, 2, 1, 2], name="theil_index")},
                              "sensitive feature names ['theil_index'] clash"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_refused_with_a_message_naming_it(case: str) -> None:
    overrides, message = BAD_INPUT[case]
    args: dict[str, Any] = {"y_true": [0, 1, 0, 1], "y_pred": [0, 1, 1, 1], "sensitive_features": GOOD_SF}
    args |= overrides
    with pytest.raises(InputError) as err:
        fairness_report(args.pop("y_true"), args.pop("y_pred"), **args)
    assert message in str(err.value)


def test_programmer_misuse_raises_value_and_type_errors() -> None:
    with pytest.raises(ValueError, match="min_group_size"):
        fairness_report([0, 1], [0, 1], sensitive_features=pd.Series(["a", "b"]), min_group_size=-1)
    with pytest.raises(TypeError, match="DataFrame or Series"):
        fairness_report([0, 1], [0, 1], sensitive_features=["a", "b"])
