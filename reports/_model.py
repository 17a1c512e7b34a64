"""The audit dossier of one model version, assembled from the covered tree.

(1) resolve NAME@VERSION to its latest ``model.registered``/``model.trained`` entry;
(2) datasets by content hash (the latest registration of each), with validations;
(3) evidence, decisions, signatures and operations (``reports._evidence``,
    ``reports._governance``);
(4) the model card (Mitchell et al. 2019) and datasheets (Gebru et al. 2021) from those,
    saying "not recorded" where the ledger holds nothing, never inventing content;
(5) the lineage chain, the governance audit findings about this model, the summary and
    the compliance crosswalk (``reports._crosswalk``).
"""

from __future__ import annotations

from typing import Any

from ledger.api import Ledger
from ledger.artifacts import ArtifactStore
from ledger.errors import InputError
from ledger.verify import VerifyResult
from policies._gate import reevaluate
from policies._governance import audit, model_versions, trainer_of
from reports._crosswalk import crosswalk
from reports._data import REPORT_VERSION, Scope, certificate, covered, entry_ref, scoped, split_ref
from reports._evidence import evidence_of
from reports._governance import decisions, operations

__all__ = ["assemble_model", "datasets_of", "model_entry"]


def datasets_of(view: Scope) -> dict[str, dict[str, Any]]:
    """Every registered dataset by SHA-256 (the latest registration), with its validations."""
    out: dict[str, dict[str, Any]] = {}
    for e in view.of_kind("dataset.registered"):
        p = e.payload
        out[p["sha256"]] = {**{k: p.get(k) for k in ("name", "sha256", "format", "size_bytes", "rows", "role",
                                                      "sensitive_features", "target", "source")},
                            "seq": e.seq, "ts": e.ts, "actor": e.actor, "columns": p["columns"], "validations": []}
    for e in view.of_kind("dataset.validated"):
        d = out.get(e.payload["dataset_sha256"])
        if d is not None:
            d["validations"].append({"seq": e.seq, "ts": e.ts, "passed": e.payload["passed"],
                                     "checks": e.payload["checks"], "schema_sha256": e.payload["schema_sha256"]})
    return out


def _column_summary(c: dict[str, Any]) -> str:
    s = c.get("stats") or {}
    if "mean" in s and "min" in s:
        return f"min {s['min']:.4g}, mean {s['mean']:.4g}, max {s['max']:.4g}"
    if "top" in s:
        return "top: " + ", ".join(f"{t['value']} ({t['count']})" for t in s["top"][:4])
    return ", ".join(f"{k} {v}" for k, v in list(s.items())[:3] if not isinstance(v, dict | list))


def _datasheet(d: dict[str, Any], use: str) -> dict[str, Any]:
    cols = [{"name": c["name"], "dtype": c["dtype"], "nullable": c["nullable"],
             "nulls": (c.get("stats") or {}).get("nulls"), "summary": _column_summary(c)} for c in d["columns"]]
    return {**{k: v for k, v in d.items() if k != "columns"}, "use": use, "columns": cols}


def model_entry(view: Scope, ref: str) -> tuple[Any, Any]:
    name, version = split_ref(ref)
    versions = model_versions(view)
    if ref not in versions:
        known = ", ".join(sorted(versions)) or "none"
        raise InputError(f"model {ref!r} is not on the ledger (registered: {known})")
    entries = [e for e in view.of_kind("model.registered", "model.trained")
               if e.payload["name"] == name and e.payload["version"] == version]
    return versions[ref], entries[-1]


def _card(entry: Any, evidence: list[dict[str, Any]], docs: list[dict[str, Any]],
          datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    p = entry.payload
    spec = p.get("spec") or {}
    est = spec.get("estimator") or {}
    perf = [e for e in evidence if e["type"] == "performance"]
    fair = [e for e in evidence if e["type"] == "fairness"]
    expl = [e for e in evidence if e["type"] == "explainability"]
    drift = [e for e in evidence if e["type"] == "drift"]
    factors = sorted({f for e in fair for g in e.get("groupings", []) for f in g["features"]})
    ethical = []
    for e in expl:
        x = e["explain"]
        if x["sensitive_in_top_k"] or x["proxies_in_top_k"]:
            ethical.append(f"seq {e['seq']}: sensitive features or proxies among the top features: "
                           f"{', '.join(x['sensitive_in_top_k'] + x['proxies_in_top_k'])}")
    for e in fair:
        for g in e.get("groupings", []):
            if g["min_impact_ratio"] is not None and g["min_impact_ratio"] < 0.8:
                ethical.append(f"seq {e['seq']}: impact ratio {g['min_impact_ratio']:.4f} for {g['name']} is below "
                               "the four-fifths line (29 CFR 1607.4(D))")
    caveats = []
    for e in fair:
        for g in e.get("groupings", []):
            if g["small_groups"]:
                caveats.append(f"seq {e['seq']}: small groups in {g['name']}: {', '.join(g['small_groups'])}")
            if g["unknown_count"]:
                caveats.append(f"seq {e['seq']}: {g['unknown_count']} rows with unknown {g['name']}")
        if not e["full_result"]:
            caveats.append(f"seq {e['seq']}: {e['full_result_missing']}; per-group rates are not shown")
    for e in drift:
        if e["drift"]["drifted_features"]:
            caveats.append(f"seq {e['seq']}: drift in {', '.join(e['drift']['drifted_features'])}")
    use_docs = [d for d in docs if any(w in d["title"].lower() for w in ("intended use", "model card", "instructions"))]
    return {
        "details": {"name": p["name"], "version": p["version"], "kind": entry.kind, "seq": entry.seq, "ts": entry.ts,
                    "by": entry.actor, "artifact_sha256": p.get("artifact_sha256"), "format": p.get("format"),
                    "task": p.get("task"), "external": bool(p.get("external")), "vendor": p.get("vendor"),
                    "description": p.get("description"), "backend": p.get("backend"),
                    "estimator": est.get("name"), "params": p.get("params") or est.get("params"),
                    "code_version": p.get("code_version"), "source": p.get("source"),
                    "environment": p.get("environment") or p.get("libraries") or {},
                    "features": p.get("features", []), "target": p.get("target")},
        "intended_use": [{"seq": d["seq"], "title": d["title"], "sha256": d["sha256"]} for d in use_docs],
        "factors": factors,
        "metrics": [{"seq": e["seq"], "dataset": e["dataset"], **e["performance"]} for e in perf],
        "evaluation_data": sorted({(e["dataset"] or {}).get("name") or "" for e in evidence} - {""}),
        "training_data": [{"sha256": h, "name": (datasets.get(h) or {}).get("name"),
                           "seq": (datasets.get(h) or {}).get("seq")} for h in p.get("training_data", [])],
        "ethical": ethical,
        "caveats": caveats,
    }


def _lineage(entry: Any, datasets: dict[str, dict[str, Any]], evidence: list[dict[str, Any]],
             gates: list[dict[str, Any]], sigs: list[dict[str, Any]], ops: dict[str, Any]) -> list[dict[str, Any]]:
    """The chain data -> training -> artifact -> evidence -> decision -> approvals -> promotion -> deployment."""
    p = entry.payload

    def step(stage: str, items: list[str], seqs: list[int]) -> dict[str, Any]:
        return {"stage": stage, "items": items, "seqs": seqs}

    train = [datasets.get(h) for h in p.get("training_data", [])]
    life = ops["lifecycle"]
    return [
        step("data", [f"{d['name']} ({d['role']})" for d in train if d] or ["not recorded"],
             [d["seq"] for d in train if d]),
        step("training", [f"{entry.kind} by {entry.actor}"], [entry.seq]),
        step("artifact", [(p.get("artifact_sha256") or "none (external model)")[:16]], [entry.seq]),
        step("evidence", [f"{e['type']} #{e['seq']}" for e in evidence] or ["none"], [e["seq"] for e in evidence]),
        step("decision", [f"{g['stage']}: {g['decision']} #{g['seq']}" for g in gates] or ["none"],
             [g["seq"] for g in gates]),
        step("approvals", [f"{s['signer']} ({s['meaning']}) #{s['seq']}" for s in sigs] or ["none"],
             [s["seq"] for s in sigs]),
        step("promotion", [f"{x['stage']} #{x['seq']}" for x in life if x["kind"] == "model.promoted"] or ["none"],
             [x["seq"] for x in life if x["kind"] == "model.promoted"]),
        step("deployment", [f"{x['stage']} #{x['seq']}" for x in life if x["kind"] == "model.deployed"] or ["none"],
             [x["seq"] for x in life if x["kind"] == "model.deployed"]),
    ]


def assemble_model(ledger: Ledger, ref: str, *, size: int, verified: VerifyResult,
                   artifacts: ArtifactStore | None) -> dict[str, Any]:
    """The dossier's data for NAME@VERSION over the first ``size`` entries."""
    split_ref(ref)
    cov = covered(ledger, size)
    with scoped(ledger, size) as view:
        mv, entry = model_entry(view, ref)
        datasets = datasets_of(view)
        evidence = evidence_of(view, ref, mv.artifact_sha256, datasets, artifacts)
        gates, sigs = decisions(view, ref)
        ops = operations(view, ref)
        docs = [{**entry_ref(e), "title": e.payload["title"], "sha256": e.payload["sha256"],
                 "annex_iv": e.payload.get("annex_iv"), "model": e.payload.get("model")}
                for e in view.of_kind("doc.attached") if e.payload.get("model") in (ref, None)]
        owners = sorted(trainer_of(view, mv.artifact_sha256)) if mv.artifact_sha256 else [mv.registered_by]
        findings = [f.to_json() for f in sorted(audit(view) + reevaluate(view), key=lambda f: f.seq)]
        subjects = {e.seq: e.subject for e in view.of_kind("gate.evaluated", "model.promoted", "approval.signed",
                                                            "waiver.granted", "identity.registered")}
    mine = [f for f in findings if subjects.get(f["seq"]) == f"model:{ref}"]
    used = {entry.payload.get("training_data", [])[i]: "training"
            for i in range(len(entry.payload.get("training_data", [])))}
    for e in evidence:
        for side in ("dataset", "reference"):
            if e[side] is not None:
                used.setdefault(e[side]["sha256"], f"{e['type']} evidence")
    sheets = [_datasheet(datasets[h], use) for h, use in used.items() if h in datasets]
    missing_sheets = [h for h in used if h not in datasets]
    data: dict[str, Any] = {
        "report": "model", "format_version": REPORT_VERSION,
        "certificate": certificate(ledger, cov, verified),
        "model": {"ref": ref, "name": mv.name, "version": mv.version, "artifact_sha256": mv.artifact_sha256,
                  "stages": dict(sorted(mv.stages.items())), "registered_seq": mv.registered_seq, "owners": owners},
        "card": _card(entry, evidence, docs, datasets),
        "datasheets": sheets, "datasheets_missing": missing_sheets,
        "evidence": evidence, "decisions": gates, "signatures": sigs, "operations": ops, "documents": docs,
        "lineage": _lineage(entry, datasets, evidence, gates, sigs, ops),
        "findings": {"model": mine, "ledger_total": len(findings),
                     "ledger_violations": sum(f["severity"] == "violation" for f in findings)},
    }
    data["crosswalk"] = crosswalk(data)
    data["summary"] = _summary(data)
    return data


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    latest: dict[str, dict[str, Any]] = {}
    for g in data["decisions"]:
        latest[g["stage"]] = {"seq": g["seq"], "decision": g["decision"], "policy": g["policy_name"], "ts": g["ts"]}
    issues = []
    if not data["evidence"]:
        issues.append("no evidence is recorded for this model version")
    approved = {g["seq"]: g["approvals"] for g in data["decisions"]}
    for stage, g in latest.items():
        if g["decision"] == "needs_approval" and approved.get(g["seq"]) and stage in data["model"]["stages"]:
            continue  # approved, and the promotion it allowed holds the stage
        if g["decision"] != "allow":
            issues.append(f"latest gate decision for {stage} at seq {g['seq']} ({g['policy']}): {g['decision']}")
    issues += [f"seq {f['seq']}: {f['message']}" for f in data["findings"]["model"] if f["severity"] == "violation"]
    issues += [f"unverified signature at seq {s['seq']} by {s['signer']}" for s in data["signatures"]
               if not s["verified"]]
    issues += [f"alert at seq {a['seq']}: {a['alert']}" for a in data["operations"]["alerts"]]
    missing = [r for r in data["crosswalk"] if r["status"] == "missing"]
    if missing:
        issues.append(f"{len(missing)} of {len(data['crosswalk'])} crosswalk requirements have no evidence")
    if not data["certificate"]["verification"]["ok"]:
        issues.insert(0, "THE LEDGER FAILS VERIFICATION")
    return {"stages": data["model"]["stages"], "latest_decisions": latest, "issues": issues,
            "evidence_types": sorted({e["type"] for e in data["evidence"]})}
