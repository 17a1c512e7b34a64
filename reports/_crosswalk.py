"""The compliance crosswalk (Annex A of the dossier): requirement -> evidence entries, or missing.

The table ``REQUIREMENTS`` is data: a framework, the provision, what the ledger must
show, and the name of a predicate over the assembled dossier data. A predicate returns
the seqs of the entries that satisfy the requirement and a one-line note. The status is
(1) ``met`` when there are such entries; (2) ``n/a`` when the predicate says the
requirement does not arise (e.g. no automated decision was made, so GDPR Art. 22 has
nothing to show) and why; (3) ``missing`` otherwise. Nothing is met by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

__all__ = ["REQUIREMENTS", "crosswalk"]

Result = tuple[list[int], str]  # (seqs, note); seqs empty -> missing, unless the note starts with "n/a"
Check = Callable[[dict[str, Any]], Result]

_CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    def deco(fn: Check) -> Check:
        _CHECKS[name] = fn
        return fn

    return deco


def _ev(d: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in d["evidence"] if e["type"] == kind]


def _seqs(items: list[dict[str, Any]]) -> list[int]:
    return sorted({int(i["seq"]) for i in items})


def _docs(d: dict[str, Any], item: int | None = None, words: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [x for x in d["documents"] if (item is not None and str(x.get("annex_iv")) == str(item))
            or (words and any(w in x["title"].lower() for w in words))]


def _cert_seqs(d: dict[str, Any]) -> list[int]:
    c = d["certificate"]
    return [0] if c["verification"]["ok"] and c["checkpoint"] else []


@check("risk_management")
def _risk(d: dict[str, Any]) -> Result:
    return _seqs(d["decisions"]), "policy gates evaluated before promotion"


@check("data_governance")
def _data(d: dict[str, Any]) -> Result:
    sheets = [s for s in d["datasheets"] if s["use"] == "training"]
    validated = [v for s in sheets for v in s["validations"]]
    if not validated:
        return [], "training data registered by hash but not validated against a schema" if sheets else \
            "no training data on the ledger"
    return _seqs(sheets) + _seqs(validated), "training data registered and validated"


@check("technical_documentation")
def _tech(d: dict[str, Any]) -> Result:
    seqs = [d["card"]["details"]["seq"]]
    return seqs, "model card, datasheets and lineage in this dossier"


def _annex(item: int, fallback: Callable[[dict[str, Any]], list[int]] | None = None) -> Check:
    def fn(d: dict[str, Any]) -> Result:
        docs = _docs(d, item)
        if docs:
            return _seqs(docs), f"doc.attached for Annex IV item {item}"
        seqs = fallback(d) if fallback else []
        return seqs, "from the ledger's records" if seqs else f"no doc.attached for Annex IV item {item}"
    return fn


for _i, _fb in {
    1: lambda d: [d["card"]["details"]["seq"]],
    2: lambda d: [d["card"]["details"]["seq"]] + [t["seq"] for t in d["card"]["training_data"] if t["seq"] is not None],
    3: lambda d: _seqs(d["operations"]["windows"]) + _seqs([s for s in d["signatures"]]),
    4: lambda d: _seqs(_ev(d, "performance")),
    5: lambda d: _seqs(d["decisions"]),
    6: lambda d: _seqs(d["operations"]["lifecycle"]),
    7: None,
    8: None,
    9: lambda d: _seqs(d["operations"]["windows"]),
}.items():
    _CHECKS[f"annex_iv_{_i}"] = _annex(_i, _fb)


@check("record_keeping")
def _logs(d: dict[str, Any]) -> Result:
    seqs = _cert_seqs(d)
    return seqs, "hash-chained, Merkle-verified log; verification passed and a signed checkpoint exists" if seqs \
        else "no verified, checkpointed log"


@check("transparency")
def _transparency(d: dict[str, Any]) -> Result:
    docs = [x for x in d["card"]["intended_use"]]
    return _seqs(docs), "instructions for use attached" if docs else "no instructions for use / intended use document"


@check("human_oversight")
def _oversight(d: dict[str, Any]) -> Result:
    sigs = [s for s in d["signatures"] if s["verified"]]
    reviews = d["operations"]["predictions"]["reviews"]
    note = f"{len(sigs)} verified signature(s); {sum(reviews.values())} human review(s) of predictions"
    return _seqs(sigs), note


@check("accuracy_robustness")
def _accuracy(d: dict[str, Any]) -> Result:
    perf, drift = _ev(d, "performance"), _ev(d, "drift")
    if not perf:
        return [], "no performance evidence"
    return _seqs(perf + drift), "performance" + (" and drift evidence" if drift else " evidence (no drift evidence)")


@check("retention")
def _retention(d: dict[str, Any]) -> Result:
    return _cert_seqs(d), "append-only log from seq 0 retained and verifiable"


@check("post_market")
def _post_market(d: dict[str, Any]) -> Result:
    w = d["operations"]["windows"]
    return _seqs(w), f"{len(w)} monitoring window(s)" if w else "no monitoring windows recorded"


@check("incidents")
def _incidents(d: dict[str, Any]) -> Result:
    inc = d["operations"]["incidents"]
    opened = [i for i in inc if i["kind"] == "incident.opened"]
    reported = [i for i in inc if i["kind"] == "incident.reported"]
    if not opened:
        return [], "n/a: no incident recorded"
    if len(reported) < len(opened):
        return [], f"{len(opened)} incident(s) opened, {len(reported)} reported"
    return _seqs(reported), "every opened incident was reported"


@check("storage_limitation")
def _storage(d: dict[str, Any]) -> Result:
    p = d["operations"]["predictions"]
    if not p["total"]:
        return [], "n/a: no predictions recorded (no personal data processed through the ledger)"
    return [p["first_seq"]], "inputs are recorded as per-subject HMAC commitments only"


@check("erasure")
def _erasure(d: dict[str, Any]) -> Result:
    e = d["operations"]["erasures"]
    return _seqs(e), f"{len(e)} erasure(s) recorded" if e else "n/a: no erasure request recorded"


@check("automated_decisions")
def _automated(d: dict[str, Any]) -> Result:
    p = d["operations"]["predictions"]
    if not p["automated"]:
        return [], "n/a: no automated decision recorded"
    if not p["reviews"]:
        return [], f"{p['automated']} automated decision(s) and no human review recorded"
    return p["review_seqs"], f"{sum(p['reviews'].values())} human review(s) of {p['automated']} automated decision(s)"


@check("records_of_processing")
def _ropa(d: dict[str, Any]) -> Result:
    return _seqs(d["datasheets"]), "datasets registered with source, role and schema"


@check("dpia")
def _dpia(d: dict[str, Any]) -> Result:
    docs = _docs(d, words=("dpia", "data protection impact"))
    return _seqs(docs), "DPIA attached" if docs else "no DPIA document attached"


@check("development")
def _development(d: dict[str, Any]) -> Result:
    return [d["card"]["details"]["seq"]], "training or registration record with data lineage"


@check("independent_validation")
def _validation(d: dict[str, Any]) -> Result:
    owners = set(d["model"]["owners"])
    sigs = [s for s in d["signatures"] if s["verified"] and s["signer"] not in owners
            and set(s["roles"]) & {"validator", "model-risk"}]
    return _seqs(sigs), "signed by a validator or model-risk identity other than the developer" if sigs \
        else "no verified approval by an independent validator"


@check("ongoing_monitoring")
def _monitoring(d: dict[str, Any]) -> Result:
    seqs = _seqs(_ev(d, "drift")) + _seqs(d["operations"]["windows"])
    return seqs, "drift evidence / monitoring windows" if seqs else "no drift evidence or monitoring"


@check("govern")
def _govern(d: dict[str, Any]) -> Result:
    return sorted({g["policy_seq"] for g in d["decisions"] if g["policy_seq"] is not None}), \
        "published policies bound to stages"


@check("map")
def _map(d: dict[str, Any]) -> Result:
    seqs = _seqs(d["card"]["intended_use"]) + _seqs(d["datasheets"])
    return seqs, "context: intended use and data documented" if d["card"]["intended_use"] else \
        "no intended-use document (datasets only)"


@check("measure")
def _measure(d: dict[str, Any]) -> Result:
    return _seqs(d["evidence"]), f"{len(d['evidence'])} evidence entries"


@check("manage")
def _manage(d: dict[str, Any]) -> Result:
    return _seqs(d["decisions"]) + _seqs(d["operations"]["lifecycle"]), "gate decisions and lifecycle"


@check("bias_audit")
def _bias(d: dict[str, Any]) -> Result:
    fair = [e for e in _ev(d, "fairness") if any(g["min_impact_ratio"] is not None for g in e["groupings"])]
    if not fair:
        return [], "no fairness evidence with impact ratios"
    owners = set(d["model"]["owners"])
    independent = [e for e in fair if e["actor"] not in owners]
    return _seqs(fair), "impact ratios recorded" + ("; by a party other than the developer" if independent
                                                    else "; NOT by an independent auditor")


@check("four_fifths")
def _four_fifths(d: dict[str, Any]) -> Result:
    rules = [g for g in d["decisions"] for r in g["rules"] if r["kind"] == "fairness"]
    fair = _ev(d, "fairness")
    if not fair:
        return [], "no selection-rate evidence"
    return _seqs(fair) + _seqs(rules), "selection-rate ratios recorded" + (" and gated" if rules else "")


@check("audit_trail")
def _trail(d: dict[str, Any]) -> Result:
    return _cert_seqs(d), "secure, computer-generated, time-stamped, append-only audit trail"


@check("signature_manifestation")
def _manifest(d: dict[str, Any]) -> Result:
    sigs = d["signatures"]
    return _seqs(sigs), "printed name, date and time, and meaning on every signature" if sigs else "no signatures"


@check("signature_linking")
def _linking(d: dict[str, Any]) -> Result:
    sigs = d["signatures"]
    if not sigs:
        return [], "no signatures"
    bad = [s for s in sigs if not s["verified"]]
    return ([] if bad else _seqs(sigs)), (f"{len(bad)} signature(s) do not verify" if bad
                                          else "each signature is bound to its record's leaf hash and verifies")


REQUIREMENTS: Final[tuple[tuple[str, str, str, str], ...]] = (
    ("EU AI Act", "Art. 9", "Risk management system", "risk_management"),
    ("EU AI Act", "Art. 10", "Data and data governance", "data_governance"),
    ("EU AI Act", "Art. 11", "Technical documentation", "technical_documentation"),
    ("EU AI Act", "Annex IV(1)", "General description of the system", "annex_iv_1"),
    ("EU AI Act", "Annex IV(2)", "Elements and development process", "annex_iv_2"),
    ("EU AI Act", "Annex IV(3)", "Monitoring, functioning and control", "annex_iv_3"),
    ("EU AI Act", "Annex IV(4)", "Appropriateness of performance metrics", "annex_iv_4"),
    ("EU AI Act", "Annex IV(5)", "Risk management system", "annex_iv_5"),
    ("EU AI Act", "Annex IV(6)", "Changes through the lifecycle", "annex_iv_6"),
    ("EU AI Act", "Annex IV(7)", "Harmonised standards applied", "annex_iv_7"),
    ("EU AI Act", "Annex IV(8)", "EU declaration of conformity", "annex_iv_8"),
    ("EU AI Act", "Annex IV(9)", "Post-market monitoring plan", "annex_iv_9"),
    ("EU AI Act", "Art. 12", "Record-keeping (automatic logs)", "record_keeping"),
    ("EU AI Act", "Art. 13", "Transparency and instructions for use", "transparency"),
    ("EU AI Act", "Art. 14", "Human oversight", "human_oversight"),
    ("EU AI Act", "Art. 15", "Accuracy, robustness and cybersecurity", "accuracy_robustness"),
    ("EU AI Act", "Art. 19 / 26(6)", "Retention of logs (at least six months)", "retention"),
    ("EU AI Act", "Art. 72", "Post-market monitoring", "post_market"),
    ("EU AI Act", "Art. 73", "Reporting of serious incidents", "incidents"),
    ("GDPR", "Art. 5(1)(e)", "Storage limitation", "storage_limitation"),
    ("GDPR", "Art. 17", "Right to erasure", "erasure"),
    ("GDPR", "Art. 22", "Automated individual decision-making", "automated_decisions"),
    ("GDPR", "Art. 30", "Records of processing activities", "records_of_processing"),
    ("GDPR", "Art. 35", "Data protection impact assessment", "dpia"),
    ("SR 11-7 / SR 26-2", "III", "Model development, implementation and use", "development"),
    ("SR 11-7 / SR 26-2", "V", "Independent model validation", "independent_validation"),
    ("SR 11-7 / SR 26-2", "V", "Ongoing monitoring", "ongoing_monitoring"),
    ("SR 11-7 / SR 26-2", "VI", "Governance, policies and controls", "govern"),
    ("NIST AI RMF", "GOVERN", "Policies, roles and accountability", "govern"),
    ("NIST AI RMF", "MAP", "Context and intended use", "map"),
    ("NIST AI RMF", "MEASURE", "Measured risks and trustworthiness", "measure"),
    ("NIST AI RMF", "MANAGE", "Risk treatment and response", "manage"),
    ("NYC LL144", "§ 20-871; 6 RCNY 5-301", "Independent bias audit with impact ratios", "bias_audit"),
    ("29 CFR 1607", "1607.4(D)", "Four-fifths rule of adverse impact", "four_fifths"),
    ("21 CFR 11", "11.10(e)", "Secure, time-stamped audit trails", "audit_trail"),
    ("21 CFR 11", "11.50", "Signature manifestations", "signature_manifestation"),
    ("21 CFR 11", "11.70", "Signature/record linking", "signature_linking"),
)


def crosswalk(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate every requirement over the dossier data."""
    rows = []
    for framework, ref, title, name in REQUIREMENTS:
        seqs, note = _CHECKS[name](data)
        status = "met" if seqs else ("n/a" if note.startswith("n/a") else "missing")
        rows.append({"framework": framework, "ref": ref, "title": title, "status": status,
                     "evidence": sorted(set(seqs)), "note": note.removeprefix("n/a: ")})
    return rows
