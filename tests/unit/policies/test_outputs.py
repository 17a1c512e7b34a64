"""Recorded outputs as evidence input: exact group rates on a synthetic decisions table, the same
disparities as fairlearn and aif360, scores without decisions (LL144 scoring rate), label-free
fairness, and every bad input refused with the file and column named."""

from __future__ import annotations

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from aif360.sklearn import metrics as aif  # type: ignore[import-untyped]
from fairlearn import metrics as flm  # type: ignore[import-untyped]

from ledger.errors import InputError
from policies.evidence._fairness import fairness_report
from policies.evidence._outputs import OutputsSpec, read_outputs, split_periods

TOL = 1e-12
WHERE = "decisions.csv"


def decisions_table() -> pd.DataFrame:
    """400 recorded hiring decisions with known rates.

    female: 200 applicants, 100 qualified; 60 hired (50 qualified, 10 not): selection 0.30,
            TPR 0.50, FPR 0.10.
    male:   200 applicants, 100 qualified; 100 hired (70 qualified, 30 not): selection 0.50,
            TPR 0.70, FPR 0.30.
    Race is balanced within each cell, so each race has the pooled rates.
    """
    rows = []
    for sex, cells in {"female": [(1, 1, 50), (1, 0, 50), (0, 1, 10), (0, 0, 90)],
                       "male": [(1, 1, 70), (1, 0, 30), (0, 1, 30), (0, 0, 70)]}.items():
        for qualified, hired, count in cells:
            for i in range(count):
                rows.append({"sex": sex, "race": "a" if i % 2 else "b", "qualified": qualified, "hired": hired})
    return pd.DataFrame(rows)


def spec(**kw: object) -> OutputsSpec:
    base: dict[str, object] = {"decision_column": "hired", "label_column": "qualified", "sensitive": ("sex",)}
    return OutputsSpec(**{**base, **kw})  # type: ignore[arg-type]


def report(frame: pd.DataFrame, s: OutputsSpec) -> object:
    t = read_outputs(frame, s, where=WHERE)
    return fairness_report(t.y_true, t.y_pred, sensitive_features=t.sensitive, y_score=t.y_score)


def test_group_rates_of_a_recorded_decisions_table_are_exact() -> None:
    result = report(decisions_table(), spec(sensitive=("sex", "race")))
    sex = result.grouping("sex")  # type: ignore[attr-defined]
    f, m = sex.group("female"), sex.group("male")
    assert (f.count, f.selection_rate, f.tpr, f.fpr) == (200, 0.3, 0.5, 0.1)
    assert (m.count, m.selection_rate, m.tpr, m.fpr) == (200, 0.5, 0.7, 0.3)
    assert f.impact_ratio == pytest.approx(0.6, abs=TOL) and m.impact_ratio == 1.0
    d = sex.disparities
    assert d.demographic_parity_difference == pytest.approx(0.2, abs=TOL)
    assert d.false_positive_rate_difference == pytest.approx(0.2, abs=TOL)
    assert d.min_impact_ratio == pytest.approx(0.6, abs=TOL) and d.privileged_label == "male"
    assert result.grouping("race").disparities.demographic_parity_difference == 0.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("features", [("sex",), ("race",), ("sex", "race")])
def test_fpr_and_selection_rate_disparities_equal_fairlearn_and_aif360(features: tuple[str, ...]) -> None:
    frame = decisions_table()
    rng = np.random.default_rng(7)  # make race informative too
    frame["hired"] = np.where((frame["race"] == "a") & (rng.random(len(frame)) < 0.2), 0, frame["hired"])
    result = report(frame, spec(sensitive=("sex", "race")))
    g = result.grouping(" & ".join(features))  # type: ignore[attr-defined]
    y_true, y_pred = frame["qualified"].to_numpy(), frame["hired"].to_numpy()
    sf = frame[list(features)] if len(features) > 1 else frame[features[0]]
    d = g.disparities
    assert d.false_positive_rate_difference == pytest.approx(
        flm.false_positive_rate_difference(y_true, y_pred, sensitive_features=sf), abs=TOL)
    assert d.false_positive_rate_ratio == pytest.approx(
        flm.false_positive_rate_ratio(y_true, y_pred, sensitive_features=sf), abs=TOL)
    assert d.demographic_parity_difference == pytest.approx(
        flm.demographic_parity_difference(y_true, y_pred, sensitive_features=sf), abs=TOL)
    assert d.demographic_parity_ratio == pytest.approx(
        flm.demographic_parity_ratio(y_true, y_pred, sensitive_features=sf), abs=TOL)
    frame_fl = flm.MetricFrame(metrics={"sel": flm.selection_rate, "fpr": flm.false_positive_rate},
                               y_true=y_true, y_pred=y_pred, sensitive_features=sf)
    for row in g.groups:
        key = row.key[0] if len(row.key) == 1 else tuple(row.key)
        assert row.selection_rate == pytest.approx(frame_fl.by_group.loc[key, "sel"], abs=TOL)
        assert row.fpr == pytest.approx(frame_fl.by_group.loc[key, "fpr"], abs=TOL)
    prot = [frame[f].to_numpy() for f in features]
    kw = {"prot_attr": prot[0] if len(prot) == 1 else prot,
          "priv_group": d.privileged[0] if len(d.privileged) == 1 else tuple(d.privileged)}
    assert d.disparate_impact == pytest.approx(aif.disparate_impact_ratio(y_true, y_pred, **kw), abs=TOL)
    assert d.statistical_parity_difference == pytest.approx(
        aif.statistical_parity_difference(y_true, y_pred, **kw), abs=TOL)
    assert d.average_odds_difference == pytest.approx(aif.average_odds_difference(y_true, y_pred, **kw), abs=TOL)


def test_scores_without_decisions_select_those_above_the_sample_median() -> None:
    """LL144 scoring rate: female 30 of 100 score 10, male 70 of 100; the median is 5.5."""
    frame = pd.DataFrame({"sex": ["female"] * 100 + ["male"] * 100,
                          "score": [10] * 30 + [1] * 70 + [10] * 70 + [1] * 30})
    t = read_outputs(frame, OutputsSpec(score_column="score", sensitive=("sex",)), where=WHERE)
    assert t.decision_source == "score_above_median" and t.median_score == 5.5 and t.y_true is None
    sex = fairness_report(None, t.y_pred, sensitive_features=t.sensitive, y_score=t.y_score).grouping("sex")
    f, m = sex.group("female"), sex.group("male")
    assert (f.selection_rate, f.scoring_rate, m.selection_rate, m.scoring_rate) == (0.3, 0.3, 0.7, 0.7)
    assert sex.disparities.min_scoring_impact_ratio == pytest.approx(3 / 7, abs=TOL)


def test_without_outcomes_the_rates_that_need_them_are_none() -> None:
    frame = decisions_table()
    labelled = report(frame, spec())
    bare = report(frame, spec(label_column=None))
    g, ref = bare.grouping("sex"), labelled.grouping("sex")  # type: ignore[attr-defined]
    assert [r.selection_rate for r in g.groups] == [r.selection_rate for r in ref.groups]
    assert g.disparities.disparate_impact == ref.disparities.disparate_impact
    row = g.group("female")
    assert (row.tn, row.fp, row.fn, row.tp, row.tpr, row.fpr, row.accuracy) == (None,) * 7
    assert g.disparities.equalized_odds_difference is None and g.disparities.groups_without_positives == ()
    assert bare.theil_index is None and bare.config["y_true"] is False  # type: ignore[attr-defined]


def test_string_decisions_need_a_positive_label() -> None:
    frame = decisions_table().assign(hired=lambda d: d["hired"].map({1: "hire", 0: "reject"}))
    with pytest.raises(InputError, match=r"decision column 'hired' holds \['hire', 'reject'\]; .*--pos-label"):
        read_outputs(frame, spec(), where=WHERE)
    t = read_outputs(frame, spec(pos_label="hire"), where=WHERE)
    assert t.y_pred.sum() == 160 and t.y_true is not None and t.y_true.sum() == 200


def _bad(frame: pd.DataFrame, column: str, value: object, row: int = 3) -> pd.DataFrame:
    out = frame.copy()
    out[column] = out[column].astype(object)
    out.loc[row, column] = value
    return out


BAD_INPUT = {
    "missing column": (lambda f: f.drop(columns=["hired"]), spec(),
                       r"decisions\.csv: the outputs table has no column\(s\) 'hired'"),
    "missing sensitive column": (lambda f: f, spec(sensitive=("gender",)),
                                 r"decisions\.csv: .*no column\(s\) 'gender'"),
    "non-numeric scores": (lambda f: _bad(f.assign(score=1.0), "score", "high"),
                           spec(score_column="score", decision_column=None),
                           r"decisions\.csv: score column 'score' is not numeric: row 3 holds 'high'"),
    "infinite scores": (lambda f: _bad(f.assign(score=1.0), "score", np.inf),
                        spec(score_column="score", decision_column=None),
                        r"score column 'score' has 1 empty, NaN or infinite values \(first at row 3\)"),
    "non-binary decisions": (lambda f: _bad(f, "hired", 2), spec(),
                             r"decisions\.csv: decision column 'hired' is not binary: it holds 3 distinct"),
    "empty decision": (lambda f: _bad(f, "hired", None), spec(),
                       r"decision column 'hired' has 1 empty values \(first at row 3\)"),
    "non-binary labels": (lambda f: _bad(f, "qualified", 5), spec(), r"label column 'qualified' is not binary"),
    "one group": (lambda f: f.assign(sex="female"), spec(),
                  r"decisions\.csv: sensitive column 'sex' has only one group \('female'\)"),
    "no rows": (lambda f: f.iloc[:0], spec(), r"decisions\.csv: the outputs table has no rows"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_outputs_are_refused_naming_the_file_and_column(case: str) -> None:
    change, s, message = BAD_INPUT[case]
    with pytest.raises(InputError, match=message):
        read_outputs(change(decisions_table()), s, where=WHERE)


def test_no_output_column_is_refused() -> None:
    with pytest.raises(InputError, match="give --score-column or --decision-column"):
        OutputsSpec(sensitive=("sex",))


def test_performance_from_outputs_needs_labels() -> None:
    with pytest.raises(InputError, match="needs the outcomes; name their column with --label-column"):
        read_outputs(decisions_table(), spec(label_column=None), where=WHERE, need_labels=True)


def test_periods_split_at_the_reference_end() -> None:
    frame = pd.DataFrame({"t": ["2026-01-05", "2026-02-10T12:00:00Z", "2026-03-01", "2026-03-02"]})
    before, periods = split_periods(frame, "t", "2026-03-01", where=WHERE)
    assert before.tolist() == [True, True, False, False]
    assert periods["reference_until"] == "2026-03-01T00:00:00+00:00"
    assert periods["current_period"] == ["2026-03-01T00:00:00+00:00", "2026-03-02T00:00:00+00:00"]
    with pytest.raises(InputError, match=r"no rows before 2020-01-01T00:00:00\+00:00 in 't'"):
        split_periods(frame, "t", "2020-01-01", where=WHERE)
    with pytest.raises(InputError, match=r"time column 't' holds 'soon' at row 1"):
        split_periods(frame.assign(t=["2026-01-01", "soon", "2026-01-02", "2026-01-03"]), "t", "2026-01-02",
                      where=WHERE)
