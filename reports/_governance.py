"""Decisions, signatures and operations of one model version, as report data.

(1) gate decisions: every ``gate.evaluated`` for NAME@VERSION, rule by rule, with the
    approvals and waivers over it;
(2) electronic signatures (21 CFR 11.50): printed name, date and time, meaning, key,
    and whether the signature verifies under the key the signer held when signing;
(3) operations: promotions, deployments, prediction volume by day, human reviews,
    monitoring windows, alerts, incidents and erasures. Kinds that are not on the
    ledger simply contribute nothing.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from ledger.errors import SignatureError
from ledger.view import ViewEntry
from policies._approvals import approval_message, verify_approval
from policies._governance import identities
from reports._data import Scope, entry_ref

__all__ = ["decisions", "operations"]


def _fingerprint(public_key_b64: str) -> str:
    import base64

    return hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()[:16]


def _signature(view: Scope, decision: ViewEntry, sig: dict[str, Any], at: ViewEntry, kind: str) -> dict[str, Any]:
    ident = identities(view, before=at.seq).get(sig["signer"])
    display = None
    reg = view.get(ident.seq) if ident else None
    if reg is not None:
        display = reg.payload.get("display_name")
        if display and reg.payload.get("signature_version") != 2:  # version 1 did not sign the display name
            display = f"{display} (unauthenticated)"
    verified, why = False, "the signer is not a trusted registered identity at that point"
    if ident is not None:
        msg = approval_message(view.origin(), decision.seq, decision.leaf_hash.hex(), sig["signer"], sig["meaning"],
                               sig["signed_at"])
        try:
            verify_approval(ident.public_key, msg, sig["signature"], signer=sig["signer"])
            verified, why = True, "verifies under the key registered at seq " + str(ident.seq)
        except SignatureError as exc:
            why = str(exc)
    return {"seq": at.seq, "kind": kind, "decision_seq": decision.seq, "signer": sig["signer"],
            "printed_name": display or sig["signer"], "signed_at": sig["signed_at"], "meaning": sig["meaning"],
            "roles": sorted(ident.roles) if ident else [], "key_fingerprint": _fingerprint(ident.public_key) if ident
            else None, "identity_seq": ident.seq if ident else None, "verified": verified, "verification": why}


def decisions(view: Scope, ref: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(gate decisions with their rules, approvals and waivers; every signature over them)."""
    gates = [e for e in view.of_kind("gate.evaluated") if e.payload.get("model") == ref]
    by_seq = {g.seq: g for g in gates}
    approvals = [e for e in view.of_kind("approval.signed") if e.payload["decision_seq"] in by_seq]
    waivers = [e for e in view.of_kind("waiver.granted") if e.payload["decision_seq"] in by_seq]
    sigs = [_signature(view, by_seq[a.payload["decision_seq"]], a.payload, a, "approval") for a in approvals]
    for w in waivers:
        sigs += [_signature(view, by_seq[w.payload["decision_seq"]], s, w, "waiver") for s in w.payload["approvals"]]
    sigs.sort(key=lambda s: (s["seq"], s["signer"]))
    out = []
    for g in gates:
        p = g.payload
        out.append({
            **entry_ref(g), "stage": p["stage"], "decision": p["decision"], "policy_name": p["policy_name"],
            "policy_sha256": p["policy_sha256"], "policy_seq": p.get("policy_seq"), "evidence": p.get("evidence", []),
            "rules": [{"rule_id": r["rule_id"], "kind": r["kind"], "outcome": r["outcome"],
                       "measured": r.get("measured"), "threshold": r.get("threshold"), "reason": r["reason"],
                       "source": r["source"],
                       "evidence": r.get("evidence", [])} for r in p["rules"]],
            "approvals": [a.seq for a in approvals if a.payload["decision_seq"] == g.seq],
            "waivers": [{"seq": w.seq, "ts": w.ts, "justification": w.payload["justification"],
                         "approvers": [s["signer"] for s in w.payload["approvals"]]}
                        for w in waivers if w.payload["decision_seq"] == g.seq],
        })
    return out, sigs


def _about(e: ViewEntry, ref: str) -> bool:
    p = e.payload
    return p.get("model") == ref or e.subject == f"model:{ref}"


def operations(view: Scope, ref: str) -> dict[str, Any]:
    """Lifecycle and serving facts about NAME@VERSION (and ledger-wide erasures)."""
    lifecycle = []
    for e in view.of_kind("model.promoted", "model.deployed", "model.undeployed", "model.retired"):
        if _about(e, ref):
            p = e.payload
            lifecycle.append({**entry_ref(e), "stage": p.get("stage"), "backend": p.get("backend"),
                              "gate_seq": p.get("gate_seq"), "waiver_seq": p.get("waiver_seq"),
                              "promotion_seq": p.get("promotion_seq")})
    per_day: Counter[str] = Counter()
    automated = 0
    stages: Counter[str] = Counter()
    predicted: set[int] = set()
    first: int | None = None
    latencies: list[float] = []
    for e in view.of_kind("prediction.made", "prediction.batch"):
        p = e.payload
        if p.get("model") != ref:
            continue
        n = int(p.get("count", 1)) if e.kind == "prediction.batch" else 1
        per_day[e.ts[:10]] += n
        first = e.seq if first is None else first
        stages[str(p.get("stage"))] += n
        if e.kind == "prediction.made":
            predicted.add(e.seq)
            automated += bool(p.get("automated_decision"))
            if isinstance(p.get("latency_ms"), int | float):
                latencies.append(float(p["latency_ms"]))
    reviews: Counter[str] = Counter()
    review_seqs: list[int] = []
    for e in view.of_kind("human.reviewed"):
        if e.payload.get("prediction_seq") in predicted:
            reviews[str(e.payload.get("outcome"))] += 1
            review_seqs.append(e.seq)
    latencies.sort()
    windows = [{**entry_ref(e), "payload": e.payload} for e in view.of_kind("monitor.window") if _about(e, ref)]
    alerts = [{**entry_ref(e), "alert": e.payload.get("kind"), "detail": e.payload.get("detail")}
              for e in view.of_kind("monitor.alert")
              if _about(e, ref) or e.payload.get("model") == ref.rpartition("@")[0]]
    incidents = [{**entry_ref(e), "payload": e.payload}
                 for e in view.of_kind("incident.opened", "incident.reported", "incident.closed") if _about(e, ref)]
    erasures = [{**entry_ref(e), "request_ref": e.payload.get("request_ref"),
                 "legal_ground": e.payload.get("legal_ground")} for e in view.of_kind("subject.erased")]
    return {
        "lifecycle": lifecycle,
        "predictions": {"total": sum(per_day.values()), "per_day": sorted(per_day.items()),
                        "by_stage": sorted(stages.items()), "automated": automated,
                        "latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
                        "latency_ms_p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
                        if latencies else None,
                        "reviews": dict(sorted(reviews.items())), "first_seq": first,
                        "review_seqs": review_seqs[:20]},
        "windows": windows, "alerts": alerts, "incidents": incidents, "erasures": erasures,
    }
