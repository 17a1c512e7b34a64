"""The rule engine: one named case per behaviour, checked through ``GateResult.decide``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from policies._decision import Decision, GateResult, RuleOutcome, RuleResult
from policies._policy import LoadedPolicy, parse_policy
from policies._rules import GateInputs, evaluate, gate_result
from policies.evidence import drift_report, explain_report, fairness_report, performance_report

ART, OTHER, INC = "a" * 64, "b" * 64, "c" * 64
TRAIN, EVAL, PROD, EVAL2 = "d" * 64, "e" * 64, "f" * 64, "0" * 64
NOW = datetime(2025, 6, 30, tzinfo=UTC)


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fairness_row(ratio: float | None, small: list[str] | None = None) -> dict[str, Any]:
    return {"demographic_parity_difference": 0.05, "demographic_parity_ratio": ratio,
            "equalized_odds_difference": 0.04, "equalized_odds_ratio": 0.9, "equal_opportunity_difference": 0.03,
            "disparate_impact": ratio, "statistical_parity_difference": -0.05, "average_odds_difference": -0.02,
            "privileged": "m", "min_impact_ratio": ratio, "min_scoring_impact_ratio": None, "unknown_count": 0,
            "n_small_groups": len(small or []), "small_groups": small or []}


FAIRNESS = {"n": 1000, "theil_index": 0.1, "sex": fairness_row(0.9), "race": fairness_row(0.85),
            "sex & race": fairness_row(0.82)}
PERFORMANCE = {"n": 1000, "accuracy": 0.85, "precision": 0.8, "recall": 0.75, "f1": 0.77, "roc_auc": 0.9,
               "brier_score": 0.12,
               "sex": {"min_accuracy": 0.82, "min_precision": 0.78, "min_recall": 0.7, "min_f1": 0.74,
                       "min_roc_auc": 0.88, "max_brier_score": 0.14, "unknown_count": 0},
               "race": {"min_accuracy": 0.8, "min_precision": 0.76, "min_recall": 0.7, "min_f1": 0.73,
                        "min_roc_auc": 0.86, "max_brier_score": 0.15, "unknown_count": 0}}
DRIFT = {"dataset_drift": False, "drifted_share": 0.25, "drift_share_threshold": 0.5, "n_features": 4,
         "n_drifted": 1, "drifted_features": ["income"], "warned_features": [], "no_data_features": [],
         "max_psi": 0.12, "prediction_status": "ok", "prediction_psi": 0.03,
         "features": {"income": {"status": "drift", "psi": 0.12, "js": 0.08, "ks_p": 0.01, "chi2_p": None},
                      "age": {"status": "ok", "psi": 0.02, "js": 0.03, "ks_p": 0.4, "chi2_p": None},
                      "region": {"status": "ok", "psi": 0.01, "js": 0.02, "ks_p": None, "chi2_p": 0.3},
                      "tenure": {"status": "ok", "psi": 0.05, "js": 0.04, "ks_p": 0.2, "chi2_p": None}}}
EXPLAIN = {"top_k": ["income", "tenure", "age", "zip", "sex"],
           "importance": {"income": 0.2, "tenure": 0.1, "age": 0.05, "zip": 0.02, "sex": 0.01},
           "sensitive_in_top_k": ["sex"],
           "proxies_in_top_k": [{"feature": "zip", "sensitive": "race", "measure": "cramers_v", "value": 0.6}],
           "unassessed": [], "proxy_threshold": 0.5, "flagged": True}
CONFIG = {"fairness": {"min_group_size": 30}, "explainability": {"top_k": 5, "proxy_threshold": 0.5}}


def item(seq: int, kind: str, values: dict[str, Any], *, model: str | None = ART, dataset: str = EVAL,
         role: str = "eval", days: float = 2, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"seq": seq, "ts": ago(days), "type": kind, "model_sha256": model, "dataset_sha256": dataset,
            "dataset_role": role, "values": copy.deepcopy(values),
            "config": copy.deepcopy(CONFIG.get(kind, {}) if config is None else config)}


def base_inputs() -> dict[str, Any]:
    return {
        "model": {"name": "credit", "version": 3, "artifact_sha256": ART, "registered_by": "dev@example.com",
                  "registered_seq": 10, "trained_by": "trainer@example.com", "training_data": [TRAIN]},
        "stage": "production",
        "now": ago(0),
        "policy_seq": 5,
        "evidence": [item(20, "fairness", FAIRNESS), item(21, "performance", PERFORMANCE),
                     item(22, "drift", DRIFT, dataset=PROD, role="production"),
                     item(23, "explainability", EXPLAIN)],
        "validations": {TRAIN: [{"seq": 8, "ts": ago(9), "passed": True}],
                        EVAL: [{"seq": 9, "ts": ago(9), "passed": True}]},
        "datasets": {TRAIN: {"seq": 2, "name": "train", "role": "train", "sensitive_features": ["sex", "race"]},
                     EVAL: {"seq": 3, "name": "eval", "role": "eval", "sensitive_features": ["sex", "race"]},
                     PROD: {"seq": 4, "name": "window", "role": "production"}},
        "approvals": [],
        "incumbent": None,
    }


def policy(*rules: dict[str, Any]) -> LoadedPolicy:
    text = yaml.safe_dump({"name": "credit-policy", "stage": "production", "description": "test",
                           "rules": list(rules)}, sort_keys=False)
    return parse_policy(text.encode(), "policy.yaml")


Change = Callable[[dict[str, Any]], None]


def values(kind: str, *path: str, to: Any) -> Change:
    """Set ``path`` in the values of the evidence item of ``kind``."""
    def change(d: dict[str, Any]) -> None:
        target = next(e for e in d["evidence"] if e["type"] == kind)["values"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = to
    return change


def config(kind: str, **kw: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        next(e for e in d["evidence"] if e["type"] == kind)["config"].update(kw)
    return change


def drop(kind: str) -> Change:
    def change(d: dict[str, Any]) -> None:
        d["evidence"] = [e for e in d["evidence"] if e["type"] != kind]
    return change


def add(*items: dict[str, Any]) -> Change:
    def change(d: dict[str, Any]) -> None:
        d["evidence"] += list(items)
    return change


def setting(key: str, value: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        d[key] = value
    return change


def model(**kw: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        d["model"].update(kw)
    return change


def approvals(*signed: tuple[str, list[str]], meaning: str = "approval") -> Change:
    return setting("approvals", [{"seq": 100 + i, "ts": ago(0.1), "signer": s, "roles": r, "meaning": meaning}
                                 for i, (s, r) in enumerate(signed)])


def incumbent(*perf: dict[str, Any]) -> Change:
    return setting("incumbent", {"name": "credit", "version": 2, "artifact_sha256": INC, "performance": list(perf)})


def both(*changes: Change) -> Change:
    def change(d: dict[str, Any]) -> None:
        for c in changes:
            c(d)
    return change


FAIR = {"id": "fair", "kind": "fairness", "feature": "sex", "metric": "min_impact_ratio", "min": 0.8}
FAIR_ALL = {**FAIR, "feature": "*"}
PSI = {"id": "psi", "kind": "drift", "statistic": "psi", "limit": 0.2}
SHARE = {"id": "share", "kind": "drift", "statistic": "drifted_share", "limit": 0.5}
DATASET_DRIFT = {"id": "dd", "kind": "drift", "statistic": "dataset_drift"}
KS_AGE = {"id": "ks", "kind": "drift", "statistic": "ks_p", "limit": 0.05, "feature": "age"}
KS_ALL = {"id": "ks", "kind": "drift", "statistic": "ks_p", "limit": 0.05}
PRED = {"id": "pred", "kind": "drift", "statistic": "prediction_psi", "limit": 0.2}
TOP3 = {"id": "top", "kind": "explainability", "top_k": 3}
TOP5 = {"id": "top", "kind": "explainability", "top_k": 5}
FLOORS = {"id": "perf", "kind": "performance", "min": {"accuracy": 0.8, "roc_auc": 0.85}}
GROUPS = {"id": "perf", "kind": "performance", "min": {"accuracy": 0.78}, "feature": "*"}
BRIER = {"id": "perf", "kind": "performance", "max": {"brier_score": 0.1}}
REGRESS = {"id": "perf", "kind": "performance", "no_regression": {"tolerance": 0.01}}
VALID = {"id": "valid", "kind": "data_validation"}
LINEAGE = {"id": "lineage", "kind": "lineage"}
FRESH = {"id": "fresh", "kind": "freshness", "max_age": "30d"}
PRESENT = {"id": "fresh", "kind": "freshness", "types": ["drift", "performance"]}
QUORUM = {"id": "sign", "kind": "approval", "quorum": 2, "role": ["model-risk", "validator"]}
ONE = {"id": "sign", "kind": "approval", "quorum": 1, "role": "model-risk"}


def custom(expression: str) -> dict[str, Any]:
    return {"id": "cel", "kind": "custom", "expression": expression}


def perf_of_incumbent(seq: int, accuracy: float, *, dataset: str = EVAL, model: str = INC) -> dict[str, Any]:
    return item(seq, "performance", {**PERFORMANCE, "accuracy": accuracy}, model=model, dataset=dataset, days=60)


class Case(NamedTuple):
    rule: dict[str, Any]
    change: Change | None
    outcome: RuleOutcome
    reason: str  # the reason starts with this
    evidence: list[int] | None = None


def case(name: str, *args: Any, **kw: Any) -> Any:
    return pytest.param(Case(*args, **kw), id=name)


CASES = [
    # fairness
    case("fairness-pass", FAIR, None, "pass", "min_impact_ratio >= 0.8 for sex", [20]),
    case("fairness-deny", FAIR, values("fairness", "sex", "min_impact_ratio", to=0.71), "fail",
         "min_impact_ratio of sex 0.71 < 0.8"),
    case("fairness-max-deny", {**FAIR, "metric": "equalized_odds_difference", "min": None, "max": 0.02}, None,
         "fail", "equalized_odds_difference of sex 0.04 > 0.02"),
    case("fairness-intersection-named-either-way", {**FAIR, "feature": "race & sex"}, None, "pass",
         "min_impact_ratio >= 0.8 for sex & race"),
    case("fairness-undefined-metric-fails", FAIR, values("fairness", "sex", "min_impact_ratio", to=None), "fail",
         "min_impact_ratio of sex is undefined"),
    case("fairness-missing-evidence", FAIR, drop("fairness"), "missing_evidence",
         "missing evidence: no fairness evidence for model credit@3 on an eval dataset"),
    case("fairness-feature-not-in-evidence", {**FAIR, "feature": "age"}, None, "missing_evidence",
         "missing evidence: fairness evidence seq 20 has no feature 'age' (it has race, sex, sex & race)"),
    case("fairness-evidence-on-train-data-only", FAIR,
         both(drop("fairness"), add(item(30, "fairness", FAIRNESS, dataset=TRAIN, role="train"))),
         "missing_evidence", "missing evidence: no fairness evidence for model credit@3 on an eval dataset; "
         "seq 30 is on a train dataset"),
    case("fairness-small-groups-fail", FAIR, values("fairness", "sex", "small_groups", to=["x"]), "fail",
         "sex has groups under 30 rows (x): too small to judge"),
    case("fairness-small-groups-allowed", {**FAIR, "allow_small_groups": True},
         values("fairness", "sex", "small_groups", to=["x"]), "pass", "min_impact_ratio >= 0.8"),
    case("fairness-evidence-computed-with-smaller-groups", FAIR, config("fairness", min_group_size=5), "fail",
         "the evidence flagged groups under 5 rows, not under 30: recompute it with min_group_size 30"),
    case("fairness-evidence-without-its-config", FAIR, setting("evidence", [item(20, "fairness", FAIRNESS, config={})]),
         "fail", "fairness evidence seq 20 does not state its min_group_size"),
    case("fairness-wildcard-pass", FAIR_ALL, None, "pass",
         "min_impact_ratio >= 0.8 for race, sex, sex & race"),
    case("fairness-wildcard-deny-on-intersection", FAIR_ALL,
         values("fairness", "sex & race", "min_impact_ratio", to=0.75), "fail",
         "min_impact_ratio of sex & race 0.75 < 0.8"),
    case("fairness-wildcard-must-cover-declared-features", FAIR_ALL,
         values("fairness", "sex & race", to="dropped"), "missing_evidence",
         "missing evidence: fairness evidence seq 20 does not cover race & sex, declared sensitive by "
         "dataset 'eval'"),
    case("fairness-wildcard-without-fairness-evidence", FAIR_ALL, drop("fairness"), "missing_evidence",
         "missing evidence: no fairness evidence for model credit@3"),
    # drift
    case("drift-psi-pass", PSI, None, "pass", "psi (worst feature) 0.12 < 0.2", [22]),
    case("drift-psi-deny", PSI, values("drift", "max_psi", to=0.25), "fail",
         "psi (worst feature) 0.25 >= 0.2: drift"),
    case("drift-psi-at-the-limit-denies", PSI, values("drift", "max_psi", to=0.2), "fail",
         "psi (worst feature) 0.2 >= 0.2: drift"),
    case("drift-share-pass", SHARE, None, "pass", "drifted_share 0.25 < 0.5"),
    case("drift-share-deny", SHARE, values("drift", "drifted_share", to=0.5), "fail", "drifted_share 0.5 >= 0.5"),
    case("drift-dataset-pass", DATASET_DRIFT, None, "pass", "dataset drift is false"),
    case("drift-dataset-deny", DATASET_DRIFT, values("drift", "dataset_drift", to=True), "fail",
         "dataset drift is true"),
    case("drift-feature-ks-pass", KS_AGE, None, "pass", "ks_p of age 0.4 >= 0.05"),
    case("drift-worst-ks-deny", KS_ALL, None, "fail", "ks_p of income (worst feature) 0.01 < 0.05: drift"),
    case("drift-no-data-feature-fails", PSI, values("drift", "no_data_features", to=["tenure"]), "fail",
         "features with no data to compare: tenure"),
    case("drift-feature-statistics-absent", KS_AGE, values("drift", "features", to=None), "missing_evidence",
         "missing evidence: drift evidence seq 22 has no ks_p of feature 'age' (no per-feature statistics)"),
    case("drift-prediction-not-measured", PRED, values("drift", "prediction_status", to=None),
         "missing_evidence", "missing evidence: drift evidence seq 22 measured no prediction drift"),
    case("drift-missing-evidence", PSI, drop("drift"), "missing_evidence",
         "missing evidence: no drift evidence for model credit@3 on any dataset"),
    case("drift-unbound-evidence-does-not-count", PSI,
         both(drop("drift"), add(item(30, "drift", DRIFT, model=None, dataset=PROD, role="production"))),
         "missing_evidence", "missing evidence: no drift evidence for model credit@3 on any dataset (1 drift "
         "entry bound to another artifact does not count)"),
    # explainability
    case("explain-pass-above-the-flags", TOP3, None, "pass",
         "no sensitive feature or proxy among the top 3 (income, tenure, age)", [23]),
    case("explain-sensitive-and-proxy-deny", TOP5, None, "fail",
         "sensitive feature sex among the top 5; proxies of a sensitive feature among the top 5: "
         "zip ~ race (cramers_v 0.6)"),
    case("explain-proxy-deny", {**TOP5, "top_k": 4}, None, "fail",
         "proxies of a sensitive feature among the top 4: zip ~ race (cramers_v 0.6)"),
    case("explain-evidence-ranks-too-few", {**TOP5, "top_k": 8}, None, "fail",
         "the evidence ranks the top 5 features only; the rule needs the top 8"),
    case("explain-unassessed-fails", TOP3, values("explainability", "unassessed", to=[["age", "race"]]), "fail",
         "association undefined, so not assessed: age ~ race"),
    case("explain-unassessed-allowed", {**TOP3, "allow_unassessed": True},
         values("explainability", "unassessed", to=[["age", "race"]]), "pass", "no sensitive feature"),
    case("explain-lax-proxy-threshold", TOP3, values("explainability", "proxy_threshold", to=0.9), "fail",
         "the evidence flags proxies at association >= 0.9; the rule needs 0.5 or lower"),
    case("explain-missing-evidence", TOP3, drop("explainability"), "missing_evidence",
         "missing evidence: no explainability evidence for model credit@3 on an eval dataset"),
    # performance
    case("performance-floor-pass", FLOORS, None, "pass", "every floor met", [21]),
    case("performance-floor-deny", FLOORS, values("performance", "roc_auc", to=0.8), "fail", "roc_auc 0.8 < 0.85"),
    case("performance-undefined-metric-fails", FLOORS, values("performance", "roc_auc", to=None), "fail",
         "roc_auc is undefined"),
    case("performance-brier-ceiling-deny", BRIER, None, "fail", "brier_score 0.12 > 0.1"),
    case("performance-groups-pass", GROUPS, None, "pass", "every floor met"),
    case("performance-groups-deny", GROUPS, values("performance", "race", "min_accuracy", to=0.7), "fail",
         "accuracy of the worst race group 0.7 < 0.78"),
    case("performance-missing-evidence", FLOORS, drop("performance"), "missing_evidence",
         "missing evidence: no performance evidence for model credit@3 on an eval dataset"),
    case("regression-no-incumbent-passes", REGRESS, None, "pass",
         "no incumbent in stage 'production': nothing to regress against"),
    case("regression-within-tolerance-passes", REGRESS, incumbent(perf_of_incumbent(15, 0.855)), "pass",
         "no regression against credit@2 beyond 0.01 (accuracy, roc_auc)", [15, 21]),
    case("regression-at-tolerance-passes", REGRESS, incumbent(perf_of_incumbent(15, 0.86)), "pass",
         "no regression"),
    case("regression-beyond-tolerance-denies", REGRESS, incumbent(perf_of_incumbent(15, 0.87)), "fail",
         "accuracy regressed: 0.85 < credit@2's 0.87 - 0.01"),
    case("regression-incumbent-without-evidence", REGRESS, incumbent(), "missing_evidence",
         f"missing evidence: the incumbent credit@2 has no performance evidence on dataset {EVAL[:12]}"),
    case("regression-incumbent-evidence-on-other-data-ignored", REGRESS,
         incumbent(perf_of_incumbent(15, 0.99, dataset=EVAL2)), "missing_evidence",
         "missing evidence: the incumbent credit@2 has no performance evidence"),
    case("regression-incumbent-evidence-of-other-artifact-ignored", REGRESS,
         incumbent(perf_of_incumbent(15, 0.5, model=OTHER)), "missing_evidence",
         "missing evidence: the incumbent credit@2 has no performance evidence"),
    case("regression-floor-and-regression-both-reported", {**REGRESS, "min": {"accuracy": 0.9}},
         incumbent(perf_of_incumbent(15, 0.87)), "fail",
         "accuracy 0.85 < 0.9; accuracy regressed: 0.85 < credit@2's 0.87 - 0.01"),
    # data validation and lineage
    case("data-validation-pass", VALID, None, "pass",
         "the newest validation of every training and evaluation dataset passed", [8, 9]),
    case("data-validation-failed-denies", VALID,
         setting("validations", {TRAIN: [{"seq": 8, "ts": ago(9), "passed": True}],
                                 EVAL: [{"seq": 9, "ts": ago(9), "passed": False}]}),
         "fail", "evaluation dataset eval failed validation (seq 9)"),
    case("data-validation-newest-wins", VALID,
         setting("validations", {TRAIN: [{"seq": 8, "ts": ago(9), "passed": True},
                                         {"seq": 12, "ts": ago(3), "passed": False}],
                                 EVAL: [{"seq": 9, "ts": ago(9), "passed": True}]}),
         "fail", "training dataset train failed validation (seq 12)"),
    case("data-validation-missing", VALID, setting("validations", {TRAIN: [{"seq": 8, "ts": ago(9),
                                                                             "passed": True}]}),
         "missing_evidence", "missing evidence: evaluation dataset eval has no dataset.validated entry"),
    case("data-validation-no-eval-evidence", {**VALID, "roles": ["eval"]},
         both(drop("fairness"), drop("performance"), drop("explainability")), "missing_evidence",
         "missing evidence: no evidence for model credit@3 names an eval dataset"),
    case("lineage-pass", LINEAGE, None, "pass", "all 1 training datasets are registered and validated", [2, 8]),
    case("lineage-unregistered-denies", LINEAGE, model(training_data=[TRAIN, "9" * 64]), "fail",
         "training data 999999999999 is not a registered dataset"),
    case("lineage-registered-after-the-model-denies", LINEAGE, model(registered_seq=1), "fail",
         "training dataset train was registered (seq 2) after the model (seq 1)"),
    case("lineage-not-validated", LINEAGE, setting("validations", {}), "missing_evidence",
         "missing evidence: training dataset train has no dataset.validated entry"),
    case("lineage-missing", LINEAGE, model(training_data=[]), "missing_evidence",
         "missing evidence: model credit@3 declares no training data, so its lineage is incomplete"),
    # freshness
    case("freshness-pass", FRESH, None, "pass",
         "fairness, drift, explainability, performance evidence bound to this artifact is present within 30d",
         [20, 21, 22, 23]),
    case("freshness-stale-denies", FRESH, both(drop("drift"), add(item(30, "drift", DRIFT, days=45.5))), "fail",
         "drift evidence seq 30 is 45d 12h old, older than 30d"),
    case("freshness-newest-counts", FRESH, add(item(15, "drift", DRIFT, days=45)), "pass", "fairness, drift",
         [20, 21, 22, 23]),
    case("freshness-presence-ignores-age", PRESENT, add(item(30, "drift", DRIFT, days=400)), "pass",
         "drift, performance evidence bound to this artifact is present"),
    case("freshness-missing", PRESENT, drop("performance"), "missing_evidence",
         "missing evidence: no performance evidence for model credit@3 on an eval dataset"),
    case("freshness-other-artifact-evidence-does-not-count", PRESENT,
         both(drop("performance"), add(item(30, "performance", PERFORMANCE, model=OTHER, days=0))),
         "missing_evidence", "missing evidence: no performance evidence for model credit@3 on an eval dataset "
         "(1 performance entry bound to another artifact does not count)"),
    # approval
    case("approval-none-needs-approval", ONE, None, "needs_approval", "0 of 1 approval by model-risk"),
    case("approval-quorum-met", QUORUM, approvals(("ann", ["model-risk"]), ("bob", ["validator", "auditor"])),
         "pass", "2 of 2 approvals by model-risk or validator (ann, bob)", [100, 101]),
    case("approval-trainer-does-not-count", ONE, approvals(("trainer@example.com", ["model-risk"])),
         "needs_approval", "0 of 1 approval by model-risk; not counted: trainer@example.com trained or "
         "registered the model (separation of duties)"),
    case("approval-registrant-does-not-count", ONE, approvals(("dev@example.com", ["model-risk"])),
         "needs_approval", "0 of 1 approval by model-risk; not counted: dev@example.com trained"),
    case("approval-trainer-counts-when-allowed", {**ONE, "exclude_trainer": False},
         approvals(("trainer@example.com", ["model-risk"])), "pass", "1 of 1 approval by model-risk"),
    case("approval-same-signer-twice-counts-once", QUORUM,
         approvals(("ann", ["model-risk"]), ("ann", ["model-risk"])), "needs_approval",
         "1 of 2 approvals by model-risk or validator (ann); not counted: ann signed more than once and "
         "counts once", [100]),
    case("approval-signer-without-role-does-not-count", ONE, approvals(("eve", ["auditor"])), "needs_approval",
         "0 of 1 approval by model-risk; not counted: eve held none of the roles model-risk"),
    case("approval-other-meaning-does-not-count", {**ONE, "meaning": "approved"},
         approvals(("ann", ["model-risk"]), meaning="reviewed"), "needs_approval",
         "0 of 1 approval by model-risk; not counted: ann signed 'reviewed', not 'approved'"),
    # custom CEL
    case("custom-true", custom("fairness['sex & race'].min_impact_ratio >= 0.8 && model.version > 2"), None,
         "pass", "the expression is true", [20]),
    case("custom-macro-variables", custom("drift.drifted_features.all(f, f != 'age') && "
                                          "explainability.top_k.exists(x, x == 'zip')"), None,
         "pass", "the expression is true", [22, 23]),
    case("custom-false", custom("performance.accuracy >= 0.9"), None, "fail", "the expression is false", [21]),
    case("custom-runtime-error", custom("fairness.age.min_impact_ratio >= 0.8"), None, "fail",
         "the expression failed: no such member in mapping: 'age'"),
    case("custom-int-double-mix", custom("fairness.n >= 100.0"), None, "fail",
         "the expression failed: found no matching overload"),
    case("custom-non-bool", custom("drift.max_psi"), None, "fail",
         "the expression returned DoubleType 0.12, not a bool"),
    case("custom-null", custom("drift.features.region.ks_p"), None, "fail",
         "the expression returned NoneType null, not a bool"),
    case("custom-missing-evidence", custom("explainability.flagged == false"), drop("explainability"),
         "missing_evidence", "missing evidence: no explainability evidence for model credit@3"),
    case("custom-reads-only-the-model", custom("model.name == 'credit'"), drop("fairness"), "pass",
         "the expression is true", []),
    # binding to the artifact, and the newest item
    case("other-artifact-evidence-ignored", FAIR,
         both(drop("fairness"), add(item(30, "fairness", FAIRNESS, model=OTHER))), "missing_evidence",
         "missing evidence: no fairness evidence for model credit@3 on an eval dataset (1 fairness entry bound "
         "to another artifact does not count)"),
    case("other-artifact-newer-evidence-does-not-shadow", FAIR,
         add(item(30, "fairness", {**FAIRNESS, "sex": fairness_row(0.1)}, model=OTHER, days=0)), "pass",
         "min_impact_ratio >= 0.8 for sex", [20]),
    case("newest-evidence-wins", FAIR, add(item(30, "fairness", {**FAIRNESS, "sex": fairness_row(0.6)}, days=1)),
         "fail", "min_impact_ratio of sex 0.6 < 0.8", [30]),
]


def outcome_decision(outcome: RuleOutcome) -> Decision:
    return {"pass": "allow", "fail": "deny", "missing_evidence": "deny", "needs_approval": "needs_approval"}[outcome]  # type: ignore[return-value]


def run(rule: dict[str, Any], change: Change | None) -> RuleResult:
    data = base_inputs()
    if change is not None:
        change(data)
    (result,) = evaluate(policy(rule), GateInputs.model_validate(data))
    return result


@pytest.mark.parametrize("c", CASES)
def test_rule_case(c: Case) -> None:
    result = run(c.rule, c.change)
    assert (result.outcome, result.reason[:len(c.reason)]) == (c.outcome, c.reason), result.reason
    assert GateResult.decide([result]) == outcome_decision(c.outcome)
    assert (result.rule_id, result.kind) == (c.rule["id"], c.rule["kind"])
    assert result.source == "policy credit-policy"
    assert result.threshold is not None and result.reason
    if c.outcome != "missing_evidence":
        assert result.measured is not None
    if c.evidence is not None:
        assert result.evidence == c.evidence


def test_a_missing_evidence_result_measures_nothing() -> None:
    result = run(FAIR, drop("fairness"))
    assert (result.measured, result.threshold, result.evidence) == (
        None, {"metric": "min_impact_ratio", "min": 0.8, "min_group_size": 30}, [])


def test_fairness_measures_every_feature_of_a_wildcard() -> None:
    assert run(FAIR_ALL, None).measured == {"race": 0.85, "sex": 0.9, "sex & race": 0.82}


def test_regression_measures_both_versions() -> None:
    result = run(REGRESS, incumbent(perf_of_incumbent(15, 0.87)))
    assert result.measured == {"incumbent": {"model": "credit@2",
                                             "accuracy": {"candidate": 0.85, "incumbent": 0.87},
                                             "roc_auc": {"candidate": 0.9, "incumbent": 0.9}}}


def test_a_pack_policy_with_full_evidence_allows() -> None:
    loaded = parse_policy(b"name: p\nstage: production\ndescription: d\n"
                          b"extends: [baseline, four-fifths, model-risk-sr-11-7]\n", "p.yaml")
    data = base_inputs()
    both(incumbent(perf_of_incumbent(15, 0.85)), approvals(("ann", ["validator"])))(data)
    gate = gate_result(loaded, GateInputs.model_validate(data))
    assert [(r.rule_id, r.outcome) for r in gate.rules if r.outcome != "pass"] == []
    assert (gate.decision, gate.exit_code, gate.model, gate.policy_sha256, gate.policy_seq) == (
        "allow", 0, "credit@3", loaded.sha256, 5)


def test_decisions_combine_fail_closed() -> None:
    loaded = policy(FAIR, ONE)
    allowed = gate_result(loaded, GateInputs.model_validate(base_inputs()))
    assert allowed.decision == "needs_approval" and allowed.exit_code == 3
    data = base_inputs()
    drop("fairness")(data)
    assert gate_result(loaded, GateInputs.model_validate(data)).decision == "deny"


def test_a_policy_for_another_stage_is_refused() -> None:
    data = base_inputs()
    data["stage"] = "staging"
    with pytest.raises(ValueError, match="policy 'credit-policy' binds stage 'production', not 'staging'"):
        evaluate(policy(FAIR), GateInputs.model_validate(data))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fairness", "drift", "explainability", "performance"]),
                          st.sampled_from([OTHER, INC, None]), st.integers(min_value=1, max_value=999)),
                max_size=6))
def test_evidence_for_other_artifacts_never_changes_an_outcome(foreign: list[tuple[str, str | None, int]]) -> None:
    """Whatever another artifact's evidence says, and however new it is, it is never read."""
    loaded = parse_policy(b"name: p\nstage: production\ndescription: d\nextends: [baseline]\n"
                          b"rules:\n  - {id: top, kind: explainability, top_k: 3}\n", "p.yaml")
    data = base_inputs()
    before = evaluate(loaded, GateInputs.model_validate(data))
    junk: dict[str, dict[str, Any]] = {
        "fairness": {"sex": fairness_row(0.0, ["a"])}, "drift": {**DRIFT, "max_psi": 9.0},
        "explainability": {**EXPLAIN, "top_k": ["sex"]}, "performance": {"accuracy": 0.0}}
    data["evidence"] += [item(1000 + seq, kind, junk[kind], model=sha, days=0)
                         for kind, sha, seq in foreign]
    after = evaluate(loaded, GateInputs.model_validate(data))
    assert [(r.outcome, r.measured, r.evidence) for r in after] == \
        [(r.outcome, r.measured, r.evidence) for r in before]


def test_rules_read_the_real_evaluator_summaries() -> None:
    """The keys the rules read are the keys the evidence evaluators write."""
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame({"income": rng.normal(50, 10, n), "tenure": rng.normal(5, 2, n),
                          "sex": rng.choice(["f", "m"], n), "race": rng.choice(["a", "b"], n)})
    y = (frame["income"] + rng.normal(0, 5, n) > 50).astype(int)
    X = frame[["income", "tenure"]]
    clf = LogisticRegression().fit(X, y)
    pred, score = clf.predict(X), clf.predict_proba(X)[:, 1]
    fair = fairness_report(y, pred, sensitive_features=frame[["sex", "race"]])
    perf = performance_report(y, pred, y_score=score, sensitive_features=frame[["sex", "race"]])
    drift = drift_report(X, X.sample(frac=1.0, random_state=1))
    expl = explain_report(clf, X, y, sensitive_features=["sex", "race"], top_k=2, n_repeats=2,
                          data_with_sensitive=frame[["sex", "race"]])
    data = base_inputs()
    data["evidence"] = [
        item(20, "fairness", fair.summary(), config=fair.config),
        item(21, "performance", perf.summary()),
        item(22, "drift", drift.summary(), dataset=PROD, role="production"),
        item(23, "explainability", expl.summary(), config=expl.config),
    ]
    rules: list[dict[str, Any]] = [{**FAIR_ALL, "min": 0.0}, {**GROUPS, "min": {"accuracy": 0.5, "roc_auc": 0.5}},
             PSI, SHARE, DATASET_DRIFT, {**TOP3, "top_k": 2}, custom("fairness.sex.min_impact_ratio >= 0.0")]
    results = evaluate(policy(*[{**r, "id": f"r{i}"} for i, r in enumerate(rules)]),
                       GateInputs.model_validate(data))
    assert [(r.rule_id, r.outcome, r.reason) for r in results if r.outcome != "pass"] == []
