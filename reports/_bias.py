"""The NYC Local Law 144 bias-audit summary of one model version (6 RCNY 5-301, 5-303).

(1) the audit is the model's latest ``evidence.recorded`` of type fairness; its date is
    that entry's ledger time and its data source the dataset it is bound to (name,
    role, source, rows, hash, from ``dataset.registered``);
(2) the auditor is the evidence's actor; the audit is independent when the auditor is
    not among the model's owners (who trained or registered it); the report's producer
    is shown apart;
(3) the tables: selection (and, with scores, scoring) rates and impact ratios by sex, by
    race/ethnicity and by their intersection, and the number in the unknown category,
    from the evidence's full result in the artifact store;
(4) whatever LL144 asks for that the evidence lacks is listed in ``missing``, plainly;
    nothing is recomputed behind the reader's back.
"""

from __future__ import annotations

from typing import Any

from ledger.api import Ledger
from ledger.artifacts import ArtifactStore
from ledger.verify import VerifyResult
from policies._governance import identities, trainer_of
from reports._data import REPORT_VERSION, certificate, covered, scoped, split_ref
from reports._evidence import evidence_of
from reports._model import datasets_of, model_entry

__all__ = ["assemble_bias"]

SEX = frozenset({"sex", "gender", "sex_at_birth"})
RACE = frozenset({"race", "ethnicity", "race_ethnicity", "race/ethnicity", "raceethnicity"})


def _category(features: list[str]) -> str:
    low = {f.lower() for f in features}
    has_sex, has_race = bool(low & SEX), bool(low & RACE)
    if len(features) == 1:
        return "sex" if has_sex else "race/ethnicity" if has_race else "other"
    return "intersection" if has_sex and has_race and len(features) == 2 else "other"


def _audit(e: dict[str, Any], owners: list[str], roles: dict[str, list[str]]) -> dict[str, Any]:
    tables: dict[str, list[dict[str, Any]]] = {"sex": [], "race/ethnicity": [], "intersection": [], "other": []}
    for g in e["groupings"]:
        tables[_category(g["features"])].append(g)
    missing = []
    if not tables["sex"]:
        missing.append("no grouping by sex (declare a sex or gender column as sensitive)")
    if not tables["race/ethnicity"]:
        missing.append("no grouping by race/ethnicity (declare a race or ethnicity column as sensitive)")
    if not tables["intersection"]:
        missing.append("no intersection of sex and race/ethnicity (the evidence was computed without "
                       "intersections, or lacks one of the two)")
    if not e["full_result"]:
        missing.append(f"per-category selection rates and counts: {e['full_result_missing']}")
    elif not e["values"] or not any(r.get("scoring_rate") is not None for g in e["groupings"] for r in g["groups"]):
        missing.append("scoring rates: the evidence was computed from decisions without scores "
                       "(selection rates are reported instead)")
    ds = e["dataset"] or {}
    auditor = e["actor"]
    return {
        "seq": e["seq"], "date": e["ts"][:10], "ts": e["ts"], "auditor": auditor,
        "auditor_roles": roles.get(auditor, []), "independent": auditor not in owners,
        "data_source": {"name": ds.get("name"), "role": ds.get("role"), "source": ds.get("source"),
                        "rows": ds.get("rows"), "sha256": ds.get("sha256"), "seq": ds.get("seq"),
                        "historical": ds.get("role") in ("production", "outputs")},
        "applicants": e["values"].get("n"), "tool": e["tool"], "artifact_sha256": e["artifact_sha256"],
        "tables": tables, "groupings": e["groupings"],
        "unknown": {g["name"]: g["unknown_count"] for g in e["groupings"]}, "missing": missing,
    }


def assemble_bias(ledger: Ledger, ref: str, *, size: int, verified: VerifyResult, artifacts: ArtifactStore | None,
                  producer: str) -> dict[str, Any]:
    """The LL144 summary's data for NAME@VERSION over the first ``size`` entries."""
    split_ref(ref)
    cov = covered(ledger, size)
    with scoped(ledger, size) as view:
        mv, entry = model_entry(view, ref)
        datasets = datasets_of(view)
        fair = [e for e in evidence_of(view, ref, mv.artifact_sha256, datasets, artifacts) if e["type"] == "fairness"]
        owners = sorted(trainer_of(view, mv.artifact_sha256)) if mv.artifact_sha256 else [mv.registered_by]
        roles = {n: sorted(i.roles) for n, i in identities(view).items()}
    audit = _audit(fair[-1], owners, roles) if fair else None
    p = entry.payload
    return {
        "report": "bias-audit", "format_version": REPORT_VERSION,
        "certificate": certificate(ledger, cov, verified),
        "model": {"ref": ref, "name": mv.name, "version": mv.version, "artifact_sha256": mv.artifact_sha256,
                  "owners": owners, "external": bool(p.get("external")), "vendor": p.get("vendor"),
                  "stages": dict(sorted(mv.stages.items()))},
        "producer": {"actor": producer, "independent": producer not in owners},
        "audit": audit,
        "earlier_audits": [e["seq"] for e in fair[:-1]],
    }
