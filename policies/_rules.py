"""The rule engine: a resolved policy and what the gate gathered from the ledger in, one
``RuleResult`` per rule out. Pure: no I/O and no clock (``now`` is an input).

Invariants:
(1) evidence counts only when bound to the model's exact artifact hash (and, when it names a
    version, to that version; an external model without an artifact is bound by name alone);
    an item bound to another artifact or version (or to none) is never read, whatever it says;
(2) of each evidence type a rule reads the newest item (highest seq) on its dataset role:
    ``eval`` by default, any role for drift;
(3) fail closed: no evidence gives ``missing_evidence``; an undefined, malformed or too
    leniently computed value gives ``fail``; a CEL error or a non-bool result gives ``fail``;
    too few approvals give ``needs_approval``;
(4) every result fills ``measured`` (None only when the evidence is missing), ``threshold``,
    ``reason`` and ``source``, and lists the seqs of the ledger entries it read.
"""

from __future__ import annotations

import json
from typing import Any, Final

import celpy
from celpy.adapter import CELJSONEncoder, json_to_cel
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError
from pydantic import JsonValue

from policies._decision import GateResult, RuleResult
from policies._inputs import (
    ApprovalItem,
    DatasetItem,
    EvidenceItem,
    GateInputs,
    IncumbentItem,
    ModelItem,
    ValidationItem,
    binds,
)
from policies._policy import LoadedPolicy
from policies._rule_models import (
    ApprovalRule,
    CustomRule,
    DataValidationRule,
    DriftRule,
    ExplainabilityRule,
    FairnessRule,
    FreshnessRule,
    LineageRule,
    PerformanceRule,
    Rule,
    compile_cel,
)
from policies._rules_common import DEFAULT_ROLE, EVIDENCE_KINDS, Gate, rule_result
from policies._rules_data import approval, data_validation, freshness, lineage

__all__ = [
    "ApprovalItem",
    "DatasetItem",
    "EvidenceItem",
    "GateInputs",
    "IncumbentItem",
    "ModelItem",
    "ValidationItem",
    "evaluate",
    "gate_result",
]

_EPS: Final = 1e-12  # comparisons at a limit are not decided by float rounding


def evaluate(policy: LoadedPolicy, inputs: GateInputs) -> list[RuleResult]:
    """One result per resolved rule of ``policy``, in order."""
    if policy.stage != inputs.stage:
        raise ValueError(f"policy {policy.name!r} binds stage {policy.stage!r}, not {inputs.stage!r}")
    gate = Gate(inputs)
    return [_check(rule, gate) for rule in policy.rules]


def gate_result(policy: LoadedPolicy, inputs: GateInputs) -> GateResult:
    """``evaluate`` and the decision, ready for the ``gate.evaluated`` entry."""
    rules = evaluate(policy, inputs)
    return GateResult(model=inputs.model.ref, artifact_sha256=inputs.model.artifact_sha256, stage=inputs.stage,
                      policy_name=policy.name, policy_sha256=policy.sha256, policy_seq=inputs.policy_seq,
                      decision=GateResult.decide(rules), rules=rules, evaluated_at=inputs.now)


def _check(rule: Rule, gate: Gate) -> RuleResult:
    match rule:
        case FairnessRule():
            return _fairness(rule, gate)
        case DriftRule():
            return _drift(rule, gate)
        case ExplainabilityRule():
            return _explainability(rule, gate)
        case PerformanceRule():
            return _performance(rule, gate)
        case DataValidationRule():
            return data_validation(rule, gate)
        case LineageRule():
            return lineage(rule, gate)
        case FreshnessRule():
            return freshness(rule, gate)
        case ApprovalRule():
            return approval(rule, gate)
        case CustomRule():
            return _custom(rule, gate)
    raise TypeError(f"unknown rule {rule!r}")  # pragma: no cover - the union is closed


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _fmt(value: float, limit: float | None = None) -> str:
    text = f"{value:.4g}"
    return repr(value) if limit is not None and float(text) == limit else text


def _parts(name: str) -> frozenset[str]:
    return frozenset(p.strip() for p in name.split("&"))


def _bounded(what: str, value: float | None, lo: float | None, hi: float | None) -> str | None:
    """Why ``value`` is outside [lo, hi], or None."""
    if value is None:
        return f"{what} is undefined"
    if lo is not None and value < lo - _EPS:
        return f"{what} {_fmt(value, lo)} < {lo}"
    if hi is not None and value > hi + _EPS:
        return f"{what} {_fmt(value, hi)} > {hi}"
    return None


def _groupings(values: dict[str, JsonValue]) -> dict[str, dict[str, JsonValue]]:
    return {k: v for k, v in values.items() if isinstance(v, dict)}


def _select(rule: FairnessRule | PerformanceRule, gate: Gate, item: EvidenceItem,
            groups: dict[str, dict[str, JsonValue]]) -> tuple[list[str], str | None]:
    """The groupings a feature rule reads ("*": all, which must cover the declared features)."""
    feature = rule.feature or "*"
    if feature == "*":
        names = sorted(groups)
        if not names:
            return [], f"missing evidence: {item.type} evidence seq {item.seq} has no sensitive feature"
        gap = gate.coverage(item, {_parts(n) for n in names}, intersections=isinstance(rule, FairnessRule))
        return names, None if gap is None else f"missing evidence: {gap}"
    names = [n for n in groups if _parts(n) == _parts(feature)]
    if not names:
        return [], (f"missing evidence: {item.type} evidence seq {item.seq} has no feature {feature!r} "
                    f"(it has {', '.join(sorted(groups)) or 'none'})")
    return names, None


# -- the rule kinds --------------------------------------------------------------------------


def _fairness(rule: FairnessRule, gate: Gate) -> RuleResult:
    threshold: dict[str, JsonValue] = {"metric": rule.metric}
    threshold |= {k: v for k, v in (("min", rule.min), ("max", rule.max)) if v is not None}
    threshold["min_group_size"] = rule.min_group_size
    item = gate.newest("fairness", rule.dataset_role)
    if item is None:
        return rule_result(rule, "missing_evidence", gate.missing("fairness", rule.dataset_role), threshold=threshold)
    groups = _groupings(item.values)
    names, problem = _select(rule, gate, item, groups)
    if problem:
        return rule_result(rule, "missing_evidence", problem, threshold=threshold, evidence=[item.seq])
    used = item.config.get("min_group_size")
    failures: list[str] = []
    measured: dict[str, JsonValue] = {}
    for name in names:
        value = _num(groups[name].get(rule.metric))
        measured[name] = value
        failure = _bounded(f"{rule.metric} of {name}", value, rule.min, rule.max)
        if failure:
            failures.append(failure)
        small = groups[name].get("small_groups")
        if not isinstance(small, list):
            failures.append(f"the evidence does not list the small groups of {name}")
        elif small and not rule.allow_small_groups:
            failures.append(f"{name} has groups under {used} rows ({', '.join(map(str, small))}): "
                            "too small to judge")
    if not isinstance(used, int) or isinstance(used, bool):
        failures.append(f"fairness evidence seq {item.seq} does not state its min_group_size")
    elif used < rule.min_group_size:
        failures.append(f"the evidence flagged groups under {used} rows, not under {rule.min_group_size}: "
                        f"recompute it with min_group_size {rule.min_group_size}")
    if failures:
        return rule_result(rule, "fail", "; ".join(failures), measured=measured, threshold=threshold,
                           evidence=[item.seq])
    bounds = " and ".join(f"{'>=' if k == 'min' else '<='} {v}" for k, v in threshold.items() if k in ("min", "max"))
    return rule_result(rule, "pass", f"{rule.metric} {bounds} for {', '.join(names)}", measured=measured,
                       threshold=threshold, evidence=[item.seq])


def _drift(rule: DriftRule, gate: Gate) -> RuleResult:
    stat = rule.statistic
    threshold: dict[str, JsonValue] = {"statistic": stat, "limit": rule.limit, "passes": (
        "when false" if stat == "dataset_drift" else "at or above limit" if rule.lower_bound else "below limit")}
    if rule.feature is not None:
        threshold["feature"] = rule.feature
    item = gate.newest("drift", rule.dataset_role)
    if item is None:
        return rule_result(rule, "missing_evidence", gate.missing("drift", rule.dataset_role), threshold=threshold)
    vals, seq = item.values, [item.seq]
    no_data = vals.get("no_data_features")
    no_data = no_data if isinstance(no_data, list) else []
    feats = vals.get("features")
    where = ""
    if stat == "dataset_drift":
        flag = vals.get("dataset_drift")
        if not isinstance(flag, bool):
            return rule_result(rule, "fail", f"drift evidence seq {item.seq} does not say whether the dataset "
                               "drifted", measured={"dataset_drift": flag}, threshold=threshold, evidence=seq)
        share = _num(vals.get("drifted_share"))
        reason = f"dataset drift is {str(flag).lower()} (drifted share {share})"
        return rule_result(rule, "fail" if flag else "pass", reason, measured=flag, threshold=threshold, evidence=seq)
    if stat == "prediction_psi" and vals.get("prediction_status") is None:
        return rule_result(rule, "missing_evidence", f"missing evidence: drift evidence seq {item.seq} measured no "
                           "prediction drift (record drift evidence with the model)", threshold=threshold, evidence=seq)
    if stat in ("drifted_share", "n_drifted", "prediction_psi"):
        value = _num(vals.get(stat))
    elif rule.feature is not None:
        if rule.feature in no_data:
            return rule_result(rule, "fail", f"feature {rule.feature!r} has no data to compare",
                               measured={"no_data_features": no_data}, threshold=threshold, evidence=seq)
        row = feats.get(rule.feature) if isinstance(feats, dict) else None
        if not isinstance(row, dict):
            compared = ", ".join(sorted(feats)) if isinstance(feats, dict) else "no per-feature statistics"
            return rule_result(rule, "missing_evidence", f"missing evidence: drift evidence seq {item.seq} has no "
                               f"{stat} of feature {rule.feature!r} ({compared})", threshold=threshold, evidence=seq)
        value, where = _num(row.get(stat)), f" of {rule.feature}"
    else:
        if no_data:
            return rule_result(rule, "fail", f"features with no data to compare: {', '.join(map(str, no_data))}",
                               measured={"no_data_features": no_data}, threshold=threshold, evidence=seq)
        if stat == "psi":
            value, where = _num(vals.get("max_psi")), " (worst feature)"
        else:
            rows = {n: _num(r.get(stat)) for n, r in feats.items() if isinstance(r, dict)} \
                if isinstance(feats, dict) else {}
            defined = {n: v for n, v in rows.items() if v is not None}
            if not defined:
                return rule_result(rule, "missing_evidence", f"missing evidence: drift evidence seq {item.seq} has "
                                   f"no {stat} for any feature", threshold=threshold, evidence=seq)
            worst = (min if rule.lower_bound else max)(defined, key=lambda n: defined[n])
            value, where = defined[worst], f" of {worst} (worst feature)"
    limit = rule.limit if rule.limit is not None else 0.0
    if value is None:
        return rule_result(rule, "fail", f"{stat}{where} is undefined", measured={stat: None}, threshold=threshold,
                           evidence=seq)
    if rule.lower_bound:
        ok, rel = value >= limit - _EPS, (">=" if value >= limit - _EPS else "<")
    else:
        ok, rel = value < limit, ("<" if value < limit else ">=")
    reason = f"{stat}{where} {_fmt(value, limit)} {rel} {limit}" + ("" if ok else ": drift")
    return rule_result(rule, "pass" if ok else "fail", reason, measured=value, threshold=threshold, evidence=seq)


def _explainability(rule: ExplainabilityRule, gate: Gate) -> RuleResult:
    threshold: dict[str, JsonValue] = {"top_k": rule.top_k, "proxy_threshold": rule.proxy_threshold}
    item = gate.newest("explainability", rule.dataset_role)
    if item is None:
        return rule_result(rule, "missing_evidence", gate.missing("explainability", rule.dataset_role),
                           threshold=threshold)
    vals, seq = item.values, [item.seq]
    top, sensitive = vals.get("top_k"), vals.get("sensitive_in_top_k")
    proxies, unassessed = vals.get("proxies_in_top_k"), vals.get("unassessed")
    if not all(isinstance(x, list) for x in (top, sensitive, proxies, unassessed)):
        return rule_result(rule, "fail", f"explainability evidence seq {item.seq} lacks top_k, sensitive_in_top_k, "
                           "proxies_in_top_k or unassessed", measured={"top_k": top}, threshold=threshold,
                           evidence=seq)
    assert isinstance(top, list) and isinstance(sensitive, list)
    assert isinstance(proxies, list) and isinstance(unassessed, list)
    ranked = item.config.get("top_k")
    if len(top) < rule.top_k and not (isinstance(ranked, int) and ranked >= rule.top_k):
        return rule_result(rule, "fail", f"the evidence ranks the top {len(top)} features only; the rule needs the "
                           f"top {rule.top_k} (record explainability evidence with top_k {rule.top_k})",
                           measured={"top_k": top}, threshold=threshold, evidence=seq)
    considered = [str(f) for f in top[:rule.top_k]]
    found = [str(s) for s in sensitive if s in considered]
    proxy = [f"{p.get('feature')} ~ {p.get('sensitive')} ({p.get('measure')} {p.get('value')})"
             for p in proxies if isinstance(p, dict) and p.get("feature") in considered]
    unknown = [" ~ ".join(map(str, u)) for u in unassessed if isinstance(u, list) and u and u[0] in considered]
    measured: dict[str, JsonValue] = {"top_k": list(considered), "sensitive_in_top_k": list(found),
                                      "proxies_in_top_k": list(proxy), "unassessed": list(unknown)}
    failures = []
    if found:
        failures.append(f"sensitive feature{'s' if len(found) > 1 else ''} {', '.join(found)} among the top "
                        f"{rule.top_k}")
    if proxy:
        failures.append(f"proxies of a sensitive feature among the top {rule.top_k}: {', '.join(proxy)}")
    if unknown and not rule.allow_unassessed:
        failures.append(f"association undefined, so not assessed: {', '.join(unknown)}")
    used = _num(vals.get("proxy_threshold"))
    if used is None or used > rule.proxy_threshold + _EPS:
        failures.append(f"the evidence flags proxies at association >= {used}; the rule needs "
                        f"{rule.proxy_threshold} or lower")
    if vals.get("flagged") is True and len(considered) == len(top) and not (found or proxy):
        failures.append(f"explainability evidence seq {item.seq} is flagged")
    if failures:
        return rule_result(rule, "fail", "; ".join(failures), measured=measured, threshold=threshold, evidence=seq)
    return rule_result(rule, "pass", f"no sensitive feature or proxy among the top {rule.top_k} "
                       f"({', '.join(considered)})", measured=measured, threshold=threshold, evidence=seq)


def _performance(rule: PerformanceRule, gate: Gate) -> RuleResult:
    limits = rule.limits
    floors: dict[str, JsonValue] = {m: v for m, (b, v) in limits.items() if b == "min"}
    ceilings: dict[str, JsonValue] = {m: v for m, (b, v) in limits.items() if b == "max"}
    threshold: dict[str, JsonValue] = {k: v for k, v in (("min", floors), ("max", ceilings)) if v}
    if rule.feature is not None:
        threshold["feature"] = rule.feature
    if rule.no_regression is not None:
        threshold["no_regression"] = {"tolerance": rule.no_regression.tolerance,
                                      "metrics": list(rule.regression_metrics)}
    item = gate.newest("performance", rule.dataset_role)
    if item is None:
        return rule_result(rule, "missing_evidence", gate.missing("performance", rule.dataset_role),
                           threshold=threshold)
    vals, seqs = item.values, [item.seq]
    failures: list[str] = []
    notes: list[str] = []
    measured: dict[str, JsonValue] = {}
    if limits and rule.feature is None:
        for metric, (bound, limit) in limits.items():
            value = measured[metric] = _num(vals.get(metric))
            failure = _bounded(metric, value, *((limit, None) if bound == "min" else (None, limit)))
            failures += [failure] if failure else []
    elif limits:
        groups = _groupings(vals)
        names, problem = _select(rule, gate, item, groups)
        if problem:
            return rule_result(rule, "missing_evidence", problem, threshold=threshold, evidence=seqs)
        for name in names:
            row: dict[str, JsonValue] = {}
            for metric, (bound, limit) in limits.items():
                key = f"{bound}_{metric}"
                value = row[key] = _num(groups[name].get(key))
                failure = _bounded(f"{metric} of the worst {name} group", value,
                                   *((limit, None) if bound == "min" else (None, limit)))
                failures += [failure] if failure else []
            measured[name] = row
    if not failures and limits:
        notes.append(" and ".join(["every floor"] * bool(floors) + ["every ceiling"] * bool(ceilings)) + " met")
    if rule.no_regression is not None:
        missing = _regression(rule, gate, item, measured, failures, notes, seqs)
        if missing and not failures:
            return rule_result(rule, "missing_evidence", missing, measured=measured, threshold=threshold,
                               evidence=seqs)
    if failures:
        return rule_result(rule, "fail", "; ".join(failures), measured=measured, threshold=threshold, evidence=seqs)
    return rule_result(rule, "pass", "; ".join(notes), measured=measured, threshold=threshold, evidence=seqs)


def _regression(rule: PerformanceRule, gate: Gate, item: EvidenceItem, measured: dict[str, JsonValue],
                failures: list[str], notes: list[str], seqs: list[int]) -> str | None:
    """No regression against the incumbent's evidence on the same dataset; a missing-evidence reason."""
    assert rule.no_regression is not None
    inc, tol = gate.inputs.incumbent, rule.no_regression.tolerance
    if inc is None:
        notes.append(f"no incumbent in stage {gate.inputs.stage!r}: nothing to regress against")
        return None
    if inc.artifact_sha256 is not None and inc.artifact_sha256 == gate.model.artifact_sha256:
        notes.append(f"the incumbent {inc.ref} is this artifact")
        return None
    same = [e for e in inc.performance if e.type == "performance" and e.dataset_sha256 == item.dataset_sha256
            and binds(e.model_sha256, e.model, artifact_sha256=inc.artifact_sha256, ref=inc.ref)]
    old = max(same, key=lambda e: e.seq, default=None)
    if old is None:
        return (f"missing evidence: the incumbent {inc.ref} has no performance evidence on dataset "
                f"{item.dataset_sha256[:12]}, the one {gate.model.ref} was evaluated on (seq {item.seq})")
    seqs.append(old.seq)
    compared: dict[str, JsonValue] = {}
    for metric in rule.regression_metrics:
        new, was = _num(item.values.get(metric)), _num(old.values.get(metric))
        compared[metric] = {"candidate": new, "incumbent": was}
        if new is None or was is None:
            failures.append(f"{metric} is undefined for {gate.model.ref if new is None else inc.ref}")
        elif metric == "brier_score" and new > was + tol + _EPS:
            failures.append(f"brier_score regressed: {_fmt(new)} > {inc.ref}'s {_fmt(was)} + {tol}")
        elif metric != "brier_score" and new < was - tol - _EPS:
            failures.append(f"{metric} regressed: {_fmt(new)} < {inc.ref}'s {_fmt(was)} - {tol}")
    measured["incumbent"] = {"model": inc.ref, **compared}
    if not failures:
        notes.append(f"no regression against {inc.ref} beyond {tol} ({', '.join(rule.regression_metrics)})")
    return None


def _cel_message(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    text = text.split(" (in activation", 1)[0]
    if "no matching overload" in text:
        text += " (CEL does not mix int and double: write 1.0, or convert with double())"
    return text[:300]


def _custom(rule: CustomRule, gate: Gate) -> RuleResult:
    threshold: dict[str, JsonValue] = {"expression": rule.expression}
    tree, reads = compile_cel(rule.expression)
    items = {k: gate.newest(k, DEFAULT_ROLE[k]) for k in EVIDENCE_KINDS}
    absent = [k for k in sorted(reads) if items[k] is None]
    if absent:
        return rule_result(rule, "missing_evidence", "; ".join(gate.missing(k, DEFAULT_ROLE[k]) for k in absent),
                           threshold=threshold)
    activation: dict[str, Any] = {k: json_to_cel(e.values) for k, e in items.items() if e is not None}
    activation["model"] = json_to_cel({"name": gate.model.name, "version": gate.model.version})
    seqs = [e.seq for k, e in items.items() if e is not None and k in reads]
    try:
        value = celpy.Environment().program(tree).evaluate(activation)
    except CELEvalError as exc:
        error = _cel_message(exc)
        return rule_result(rule, "fail", f"the expression failed: {error}", measured={"error": error},
                           threshold=threshold, evidence=seqs)
    except Exception as exc:  # a CEL library failure fails closed, with the reason
        error = f"{type(exc).__name__}: {_cel_message(exc)}"
        return rule_result(rule, "fail", f"the expression failed: {error}", measured={"error": error},
                           threshold=threshold, evidence=seqs)
    if not isinstance(value, BoolType):
        shown = json.dumps(value, cls=CELJSONEncoder)[:100]
        return rule_result(rule, "fail", f"the expression returned {type(value).__name__} {shown}, not a bool",
                           measured={"result": shown}, threshold=threshold, evidence=seqs)
    result = bool(value)
    return rule_result(rule, "pass" if result else "fail", f"the expression is {str(result).lower()}",
                       measured=result, threshold=threshold, evidence=seqs)
