"""Evidence of one model version, as report data: fairness, performance, drift, explainability.

(1) The entries are the model's ``evidence.recorded``: bound to its artifact hash, or
    naming the version (external models).
(2) Each entry's ``values`` are the recorded headline numbers; the full result (per-group
    tables) is the artifact ``artifact_sha256``, read from the workspace's artifact store
    when it is there (re-hashed on read). When it is not, the report says so and shows
    the recorded values only: nothing is recomputed.
"""

from __future__ import annotations

from typing import Any

from ledger.artifacts import ArtifactStore
from ledger.errors import InputError, IntegrityError
from ledger.view import ViewEntry
from reports._data import Scope

__all__ = ["evidence_of", "full_result"]

#: Per-group columns of the fairness tables, in order.
FAIRNESS_COLUMNS = ("count", "selection_rate", "impact_ratio", "scoring_rate", "scoring_impact_ratio", "tpr", "fpr")


def full_result(artifacts: ArtifactStore | None, digest: str) -> tuple[dict[str, Any] | None, str | None]:
    """The stored full result, or None and why not."""
    import orjson

    if artifacts is None:
        return None, "no artifact store was given"
    try:
        data: dict[str, Any] = orjson.loads(artifacts.get(digest))
    except InputError:
        return None, f"the full result {digest[:12]}… is not in this workspace's artifact store"
    except IntegrityError as exc:
        return None, str(exc)
    return data, None


def bound_to(e: ViewEntry, ref: str, artifact_sha256: str | None) -> bool:
    p = e.payload
    return p.get("model") == ref or (artifact_sha256 is not None and p.get("model_sha256") == artifact_sha256)


def _dataset(datasets: dict[str, dict[str, Any]], digest: str | None) -> dict[str, Any] | None:
    if digest is None:
        return None
    d = datasets.get(digest)
    return {"sha256": digest, "name": d["name"] if d else None, "role": d["role"] if d else None,
            "source": d["source"] if d else None, "rows": d["rows"] if d else None,
            "seq": d["seq"] if d else None}


def _fairness(full: dict[str, Any] | None, values: dict[str, Any]) -> list[dict[str, Any]]:
    """One table per grouping: the groups (and "unknown") with their rates."""
    out = []
    if full is not None:
        for g in full.get("groupings", []):
            rows = [{"label": r["label"], **{c: r.get(c) for c in FAIRNESS_COLUMNS}, "small": r.get("small_group")}
                    for r in g["groups"]]
            if g.get("unknown"):
                u = g["unknown"]
                rows.append({"label": "unknown", **{c: u.get(c) for c in FAIRNESS_COLUMNS},
                             "small": u.get("small_group")})
            d = g["disparities"]
            out.append({"name": g["name"], "features": g["features"], "unknown_count": g["unknown_count"],
                        "privileged": d.get("privileged_label"), "min_impact_ratio": d.get("min_impact_ratio"),
                        "min_scoring_impact_ratio": d.get("min_scoring_impact_ratio"),
                        "demographic_parity_difference": d.get("demographic_parity_difference"),
                        "equalized_odds_difference": d.get("equalized_odds_difference"),
                        "small_groups": g.get("small_groups", []), "groups": rows})
        return out
    for name, v in values.items():
        if isinstance(v, dict):
            out.append({"name": name, "features": name.split(" & "), "unknown_count": v.get("unknown_count"),
                        "privileged": v.get("privileged"), "min_impact_ratio": v.get("min_impact_ratio"),
                        "min_scoring_impact_ratio": v.get("min_scoring_impact_ratio"),
                        "demographic_parity_difference": v.get("demographic_parity_difference"),
                        "equalized_odds_difference": v.get("equalized_odds_difference"),
                        "small_groups": v.get("small_groups", []), "groups": []})
    return out


def _performance(full: dict[str, Any] | None, values: dict[str, Any]) -> dict[str, Any]:
    overall = {k: v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    groups = []
    for f in (full or {}).get("features", []):
        for g in f.get("groups", []):
            groups.append({"feature": f.get("name"), "label": g.get("label"), "count": g.get("count"),
                           "accuracy": g.get("accuracy"), "precision": g.get("precision"),
                           "recall": g.get("recall"), "roc_auc": g.get("roc_auc")})
    return {"overall": overall, "groups": groups}


def _drift(full: dict[str, Any] | None, values: dict[str, Any]) -> dict[str, Any]:
    rows = []
    feats = values.get("features")
    if isinstance(feats, dict):
        for name, f in feats.items():
            if isinstance(f, dict):
                rows.append({"feature": name, "psi": f.get("psi"), "ks_p": f.get("ks_p"), "js": f.get("js"),
                             "chi2_p": f.get("chi2_p"), "status": f.get("status")})
    reasons = {f["name"]: f.get("reasons", []) for f in (full or {}).get("features", []) if "name" in f}
    for r in rows:
        r["reasons"] = reasons.get(r["feature"], [])
    return {"features": rows, "dataset_drift": values.get("dataset_drift"),
            "drifted_features": values.get("drifted_features", []), "drifted_share": values.get("drifted_share")}


def _explain(full: dict[str, Any] | None, values: dict[str, Any]) -> dict[str, Any]:
    imp = values.get("importance")
    importance = sorted(imp.items(), key=lambda kv: (-float(kv[1]), kv[0])) if isinstance(imp, dict) else []
    std = {i["feature"]: i.get("importance_std") for i in (full or {}).get("importances", []) if "feature" in i}
    return {"importance": [{"feature": k, "mean": v, "std": std.get(k)} for k, v in importance],
            "top_k": values.get("top_k", []), "sensitive_in_top_k": values.get("sensitive_in_top_k", []),
            "proxies_in_top_k": values.get("proxies_in_top_k", []), "flagged": values.get("flagged")}


def evidence_of(view: Scope, ref: str, artifact_sha256: str | None, datasets: dict[str, dict[str, Any]],
                artifacts: ArtifactStore | None) -> list[dict[str, Any]]:
    """Every evidence entry bound to the model version, with its tables, oldest first."""
    out = []
    for e in view.of_kind("evidence.recorded"):
        if not bound_to(e, ref, artifact_sha256):
            continue
        p = e.payload
        full, missing = full_result(artifacts, p["artifact_sha256"])
        item: dict[str, Any] = {
            "seq": e.seq, "ts": e.ts, "actor": e.actor, "type": p["type"], "tool": p["tool"],
            "libraries": p.get("libraries", {}), "artifact_sha256": p["artifact_sha256"],
            "dataset": _dataset(datasets, p["dataset_sha256"]),
            "reference": _dataset(datasets, p.get("reference_sha256")),
            "values": p["values"], "full_result": full is not None, "full_result_missing": missing,
        }
        kind = p["type"]
        if kind == "fairness":
            item["groupings"] = _fairness(full, p["values"])
        elif kind == "performance":
            item["performance"] = _performance(full, p["values"])
        elif kind == "drift":
            item["drift"] = _drift(full, p["values"])
        elif kind == "explainability":
            item["explain"] = _explain(full, p["values"])
        out.append(item)
    return out
