"""Policy files: strict loading with file:line errors, the built-in packs, extends, lint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from ledger.errors import InputError
from policies._policy import (
    ApprovalRule,
    DriftRule,
    FairnessRule,
    FreshnessRule,
    LoadedPolicy,
    PerformanceRule,
    _resolve,
    load_policy,
    parse_pack,
    parse_policy,
    policy_lint,
)
from policies.packs import PACKS, load_pack, pack_sha256

GOOD = """\
name: credit-policy
stage: production
description: Credit scoring model, production gate.
rules:
  - id: fair.sex
    kind: fairness
    feature: sex
    metric: min_impact_ratio
    min: 0.8
  - id: sign-off
    kind: approval
    quorum: 2
    role: [validator, model-risk]
    meaning: approved
"""


def parse(text: str) -> LoadedPolicy:
    return parse_policy(text.encode(), "policy.yaml")


def test_a_good_policy_loads_with_its_bytes_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    loaded = load_policy(path)
    assert loaded.raw_bytes == GOOD.encode()
    assert loaded.sha256 == hashlib.sha256(GOOD.encode()).hexdigest()
    assert (loaded.name, loaded.stage) == ("credit-policy", "production")
    assert [r.id for r in loaded.rules] == ["fair.sex", "sign-off"]
    fair, sign = loaded.rules
    assert isinstance(fair, FairnessRule) and fair.min == 0.8 and fair.dataset_role == "eval"
    assert isinstance(sign, ApprovalRule) and sign.roles == ("validator", "model-risk") and sign.exclude_trainer


def test_an_own_rule_without_source_cites_the_policy() -> None:
    assert {r.source for r in parse(GOOD).rules} == {"policy credit-policy"}


def test_the_hash_covers_the_exact_bytes() -> None:
    assert parse(GOOD).sha256 != parse(GOOD + "\n").sha256


def test_an_intersection_name_is_normalised() -> None:
    rule = parse(GOOD.replace("feature: sex", "feature: 'sex&race '")).rules[0]
    assert isinstance(rule, FairnessRule) and rule.feature == "sex & race"


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope.yaml: cannot read the policy"):
        load_policy(tmp_path / "nope.yaml")


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(InputError, match=r"^policy.yaml: not UTF-8 text \(byte 6\)$"):
        parse_policy(b"name: \xff", "policy.yaml")


# -- each kind of mistake: the line and the key --------------------------------------------

RULE = GOOD.split("  - id: sign-off")[0]  # the header and the fairness rule (lines 1-9)
MISTAKES = [
    pytest.param(GOOD.replace("description:", "descripton:"),
                 "policy.yaml:3: (top level): unknown key 'descripton'; did you mean 'description'?",
                 id="unknown-key-top-level"),
    pytest.param(RULE + "    treshold: 0.8\n",
                 "policy.yaml:10: rules[0] (id 'fair.sex'): unknown key 'treshold'",
                 id="unknown-key-in-rule"),
    pytest.param(RULE.replace("metric: min_impact_ratio", "metrc: min_impact_ratio"),
                 "policy.yaml:8: rules[0] (id 'fair.sex'): unknown key 'metrc'; did you mean 'metric'?",
                 id="typo-key-in-rule"),
    pytest.param(RULE.replace("min: 0.8", "min: high"),
                 "policy.yaml:9: rules[0] (id 'fair.sex').min: expected a number, got str 'high'",
                 id="wrong-type"),
    pytest.param(RULE.replace("min: 0.8", "min: 8e-1"),
                 "policy.yaml:9: rules[0] (id 'fair.sex').min: expected a number, got str '8e-1' "
                 "(YAML reads 1e-2 as text: write 0.01 or 1.0e-2)",
                 id="wrong-type-yaml-exponent"),
    pytest.param(GOOD.replace("quorum: 2", "quorum: '2'"),
                 "policy.yaml:12: rules[1] (id 'sign-off').quorum: expected an integer, got str '2'",
                 id="wrong-type-quoted-int"),
    pytest.param(GOOD.replace("role: [validator, model-risk]", "role: [validator, boss]"),
                 "policy.yaml:13: rules[1] (id 'sign-off').role[1]: expected 'admin', 'data-steward', "
                 "'model-developer', 'validator', 'model-risk', 'deployer', 'dpo', 'auditor' or 'service', "
                 "got str 'boss'",
                 id="unknown-role"),
    pytest.param(RULE.replace("kind: fairness", "kind: fairnes"),
                 "policy.yaml:6: rules[0] (id 'fair.sex').kind: unknown rule kind 'fairnes' (did you mean "
                 "'fairness'?); the kinds are fairness, drift, explainability, performance, data_validation, "
                 "lineage, freshness, approval, custom",
                 id="unknown-rule-kind"),
    pytest.param(RULE.replace("    kind: fairness\n", ""),
                 "policy.yaml:5: rules[0] (id 'fair.sex'): a rule needs a 'kind': one of fairness, drift, "
                 "explainability, performance, data_validation, lineage, freshness, approval, custom",
                 id="no-rule-kind"),
    pytest.param(RULE.replace("    metric: min_impact_ratio\n", ""),
                 "policy.yaml:5: rules[0] (id 'fair.sex'): missing required key 'metric'",
                 id="missing-key"),
    pytest.param(GOOD.replace("id: sign-off", "id: fair.sex"),
                 "policy.yaml:10: rules[1].id: duplicate rule id 'fair.sex' (first at line 5); rule ids "
                 "must be unique",
                 id="duplicate-rule-id"),
    pytest.param(GOOD.replace("stage: production", "stage: production\nstage: staging"),
                 "policy.yaml:3: duplicate key 'stage'",
                 id="duplicate-key"),
    pytest.param(GOOD.split("rules:")[0] + "rules: []\n",
                 "policy.yaml:4: rules: a policy needs at least one rule; an empty rule set is an error",
                 id="empty-rules"),
    pytest.param(GOOD.split("rules:")[0],
                 "policy.yaml:1: (top level): a policy needs 'rules' (or 'extends'); an empty rule set is "
                 "an error",
                 id="no-rules"),
    pytest.param(RULE + "  - id: cel\n    kind: custom\n    expression: 'fairness.sex.min_impact_ratio >= '\n",
                 "policy.yaml:12: rules[1] (id 'cel').expression: CEL expression does not compile at line 1, "
                 "column 31: 'fairness.sex.min_impact_ratio >= '",
                 id="bad-cel"),
    pytest.param(RULE + "  - id: cel\n    kind: custom\n    expression: fairnes.sex.min_impact_ratio >= 0.8\n",
                 "policy.yaml:12: rules[1] (id 'cel').expression: CEL expression reads unknown variable "
                 "'fairnes' (did you mean 'fairness'?); the variables are drift, explainability, fairness, "
                 "model, performance",
                 id="cel-unknown-variable"),
    pytest.param(RULE + "  - id: fresh\n    kind: freshness\n    max_age: 30 days\n",
                 "policy.yaml:12: rules[1] (id 'fresh').max_age: expected a duration such as '30d' or '12h' "
                 "(a positive whole number and one of the units s, m, h, d, w), got '30 days'",
                 id="bad-duration"),
    pytest.param(RULE.replace("min: 0.8", "min: 0.8\n    max: 0.5"),
                 "policy.yaml:5: rules[0] (id 'fair.sex'): min 0.8 is greater than max 0.5",
                 id="min-above-max"),
    pytest.param(RULE + "  - id: psi\n    kind: drift\n    statistic: psi\n",
                 "policy.yaml:10: rules[1] (id 'psi'): a drift rule on psi needs a 'limit'",
                 id="drift-without-limit"),
    pytest.param(RULE + "  - id: perf\n    kind: performance\n    min: {acuracy: 0.8}\n",
                 "policy.yaml:12: rules[1] (id 'perf').min: unknown key 'acuracy'; did you mean 'accuracy'?",
                 id="unknown-metric-key"),
    pytest.param(GOOD.replace("rules:", "extends: [basline]\nrules:"),
                 "policy.yaml:4: extends[0]: expected 'baseline', 'eu-ai-act-high-risk', 'four-fifths' or "
                 "'model-risk-sr-11-7', got str 'basline'",
                 id="unknown-pack"),
    pytest.param(GOOD.replace("name: credit-policy", "name: credit policy"),
                 "policy.yaml:1: name: expected an identifier (letters, digits and . _ @ : / + -, starting "
                 "with a letter or digit), got str 'credit policy'",
                 id="bad-name"),
    pytest.param(GOOD.split("rules:")[0] + "rules: {fair: 1}\n",
                 "policy.yaml:4: rules: expected a list, got a mapping",
                 id="rules-not-a-list"),
    pytest.param(GOOD + "  - id: [\n",
                 "policy.yaml:16: not valid YAML: expected the node content, but found '<stream end>'",
                 id="not-yaml"),
    pytest.param("- just a list\n", "policy.yaml:1: a policy is a mapping with name, stage, description and rules",
                 id="not-a-mapping"),
]


@pytest.mark.parametrize(("text", "message"), MISTAKES)
def test_a_mistake_names_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(InputError) as exc:
        parse(text)
    assert str(exc.value) == message


# -- packs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PACKS)
def test_each_pack_loads_and_cites_every_rule(name: str) -> None:
    pack = load_pack(name)
    assert pack.pack == name and pack.rules
    assert all(r.source and len(r.source) > 20 for r in pack.rules)
    assert len(pack_sha256(name)) == 64


@pytest.mark.parametrize("name", PACKS)
def test_a_policy_may_consist_of_a_pack(name: str) -> None:
    loaded = parse(f"name: p\nstage: production\ndescription: d\nextends: [{name}]\n")
    assert loaded.rules == load_pack(name).rules
    assert dict(loaded.packs) == {name: pack_sha256(name)}


def test_an_unknown_pack_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"^unknown pack 'nope'; the packs are baseline, "):
        load_pack("nope")


def test_the_four_fifths_pack_holds_every_feature_to_0_8() -> None:
    (rule,) = load_pack("four-fifths").rules
    assert isinstance(rule, FairnessRule)
    assert (rule.feature, rule.metric, rule.min, rule.max) == ("*", "min_impact_ratio", 0.8, None)
    assert rule.source and "29 CFR 1607.4(D)" in rule.source and "Local Law 144" in rule.source


def test_the_baseline_pack_limits() -> None:
    rules = {r.id: r for r in load_pack("baseline").rules}
    psi, share = rules["drift.psi"], rules["drift.share"]
    assert isinstance(psi, DriftRule) and (psi.statistic, psi.limit) == ("psi", 0.2)
    assert isinstance(share, DriftRule) and (share.statistic, share.limit) == ("drifted_share", 0.5)
    floors = rules["performance.floors"]
    assert isinstance(floors, PerformanceRule) and floors.limits == {"accuracy": ("min", 0.7),
                                                                     "roc_auc": ("min", 0.7)}
    fresh = rules["evidence.freshness"]
    assert isinstance(fresh, FreshnessRule) and fresh.max_age == "90d"
    assert {r.kind for r in rules.values()} >= {"fairness", "data_validation", "lineage"}


def test_the_eu_ai_act_pack_covers_articles_9_to_15() -> None:
    rules = load_pack("eu-ai-act-high-risk").rules
    for article in ("Art. 9", "Art. 10", "Art. 13", "Art. 14", "Art. 15"):
        assert any(r.source and article in r.source for r in rules), article
    (oversight,) = [r for r in rules if isinstance(r, ApprovalRule)]
    assert (oversight.quorum, oversight.roles, oversight.exclude_trainer) == (1, ("model-risk",), True)


def test_the_sr_11_7_pack_needs_independent_validation_and_fresh_drift() -> None:
    rules = {r.kind: r for r in load_pack("model-risk-sr-11-7").rules}
    approval, fresh, perf = rules["approval"], rules["freshness"], rules["performance"]
    assert isinstance(approval, ApprovalRule) and set(approval.roles) == {"validator", "model-risk"}
    assert approval.exclude_trainer
    assert isinstance(fresh, FreshnessRule) and (fresh.types, fresh.max_age) == (("drift",), "30d")
    assert isinstance(perf, PerformanceRule) and perf.no_regression and perf.no_regression.tolerance == 0.01


# -- extends -----------------------------------------------------------------------------------


def test_extends_puts_own_rules_first_and_overrides_by_id() -> None:
    loaded = parse(GOOD.replace("rules:", "extends: [baseline]\nrules:") + """\
  - id: drift.psi
    kind: drift
    statistic: psi
    limit: 0.1
""")
    ids = [r.id for r in loaded.rules]
    assert ids[:3] == ["fair.sex", "sign-off", "drift.psi"]
    assert ids.count("drift.psi") == 1
    psi = loaded.rules[2]
    assert isinstance(psi, DriftRule) and psi.limit == 0.1 and psi.source == "policy credit-policy"
    assert len(ids) == 2 + len(load_pack("baseline").rules)


def test_extends_merges_packs_deduplicating_shared_rules_and_joining_citations() -> None:
    loaded = parse("name: p\nstage: production\ndescription: d\n"
                   "extends: [baseline, eu-ai-act-high-risk, four-fifths]\n")
    ids = [r.id for r in loaded.rules]
    assert len(ids) == len(set(ids))
    baseline = {r.id for r in load_pack("baseline").rules}
    eu = {r.id for r in load_pack("eu-ai-act-high-risk").rules}
    assert set(ids) == baseline | eu
    validated = next(r for r in loaded.rules if r.id == "data.validated")
    assert validated.source and validated.source.startswith("mlledger baseline")
    assert "Art. 10(2)" in validated.source
    four = next(r for r in loaded.rules if r.id == "fairness.four-fifths")
    assert four.source == load_pack("four-fifths").rules[0].source  # the same citation is not repeated


def test_two_packs_defining_one_id_differently_is_an_error() -> None:
    text = "pack: {}\ndescription: d\nrules:\n  - {{id: x, kind: lineage, source: {}}}\n"
    one = parse_pack(text.format("baseline", "a").encode(), "one")
    two = parse_pack(text.format("four-fifths", "b").encode().replace(b"lineage", b"data_validation"), "two")
    policy = parse("name: p\nstage: s\ndescription: d\nextends: [baseline, four-fifths]\n").policy
    with pytest.raises(InputError, match=r"^here: packs 'baseline' and 'four-fifths' define rule 'x' differently"):
        _resolve(policy, {"baseline": one, "four-fifths": two}, "here")


def test_a_pack_rule_must_cite_its_source() -> None:
    with pytest.raises(InputError, match=r"^pack:1: \(top level\): rule 'x': a built-in pack rule must cite"):
        parse_pack(b"pack: baseline\ndescription: d\nrules:\n  - {id: x, kind: lineage}\n", "pack")


EVERY_KIND = GOOD.replace("rules:", "extends: [baseline, eu-ai-act-high-risk, four-fifths, model-risk-sr-11-7]\n"
                                    "rules:") + """\
  - {id: k1, kind: fairness, feature: '*', metric: equalized_odds_difference, max: 0.1, min_group_size: 50}
  - {id: k2, kind: drift, statistic: ks_p, limit: 0.01, feature: income, dataset_role: production}
  - {id: k3, kind: explainability, top_k: 3, allow_unassessed: true}
  - {id: k4, kind: performance, min: {f1: 0.5}, max: {brier_score: 0.2}, feature: sex,
     no_regression: {tolerance: 0.02, metrics: [f1]}}
  - {id: k5, kind: data_validation, roles: [eval]}
  - {id: k6, kind: freshness, types: [fairness], max_age: 12h, dataset_role: any}
  - {id: k7, kind: custom, expression: "performance.accuracy > 0.5 && model.version >= 1"}
"""


@pytest.mark.parametrize("exclude_none", [False, True], ids=["full", "exclude-none"])
def test_resolved_rules_dump_and_reload_to_the_same_rules(exclude_none: bool) -> None:
    """Publishing may inline the packs: the dumped rules must parse back to equal rules."""
    loaded = parse(EVERY_KIND)
    doc = loaded.policy.model_dump(mode="json", exclude={"extends", "rules"})
    doc["rules"] = [r.model_dump(mode="json", exclude_none=exclude_none) for r in loaded.rules]
    again = parse_policy(yaml.safe_dump(doc, sort_keys=False).encode(), "resolved")
    assert again.rules == loaded.rules and not again.policy.extends


# -- lint --------------------------------------------------------------------------------------


def test_lint_of_a_careful_policy_is_silent(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    assert policy_lint(path) == []


def test_lint_warns_of_loose_thresholds_and_switched_off_safeguards(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.replace("min: 0.8", "min: 0.7\n    allow_small_groups: true")
                    .replace("meaning: approved", "exclude_trainer: false")
                    .replace("rules:", "extends: [baseline]\nrules:") + """\
  - id: drift.psi
    kind: drift
    statistic: psi
    limit: 0.25
""")
    assert policy_lint(path) == [
        f"{path}:6: rule 'fair.sex': min 0.7 is looser than the four-fifths rule (0.8, 29 CFR 1607.4(D))",
        f"{path}:6: rule 'fair.sex': allow_small_groups: disparities over small groups are unreliable",
        f"{path}:12: rule 'sign-off': exclude_trainer: false lets the trainer approve their own model",
        f"{path}:17: rule 'drift.psi': overrides the rule of the same id in pack 'baseline'",
        f"{path}:17: rule 'drift.psi': PSI limit 0.25 is looser than 0.2 (DESIGN.md section 6: 0.2 blocks)",
    ]


def test_lint_warns_when_nobody_signs_off(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(RULE)
    assert policy_lint(path) == [f"{path}:1: no approval rule: no person signs off on promotion to 'production'"]


def test_lint_errors_raise(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(RULE.replace("kind: fairness", "kind: fairnes"))
    with pytest.raises(InputError, match=r"p.yaml:6: .*unknown rule kind 'fairnes'"):
        policy_lint(path)
