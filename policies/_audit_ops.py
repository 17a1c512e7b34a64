"""Audit of operations: predictions against deployments, and erasures (DESIGN.md section 3).

Reads the serving and privacy kinds by name (``policies`` does not import ``backends``):
- every ``prediction.made`` / ``prediction.batch`` refers, by ``deployed_seq``, to an earlier
  ``model.deployed`` of that exact model, artifact and stage; one recorded after that
  deployment ended is a violation, unless within ``SWITCH_GRACE_S`` of its end (a request in
  flight during a switch-over: a notice);
- every reportable ``incident.opened`` (EU AI Act Art. 73) has its ``incident.reported`` by its
  ``report_due``: an overdue report is a violation, a pending one a notice;
- every ``subject.erased`` is reported (a notice, with how many recorded decisions it made
  unlinkable), refers to a key used by an earlier decision (else a notice), and no decision
  uses a key after its erasure (a violation).
"""

from __future__ import annotations

import time
from typing import Any

from ledger.canonical import parse_ts
from ledger.view import LedgerView

__all__ = ["SWITCH_GRACE_S", "audit_operations"]

SWITCH_GRACE_S = 5.0


def audit_operations(view: LedgerView, finding: Any) -> list[Any]:
    """Findings built with ``finding(seq, severity, message)`` (``policies._governance.Finding``)."""
    out: list[Any] = []
    deployments: dict[int, dict[str, Any]] = {}
    ended: dict[int, tuple[int, int]] = {}  # deployed_seq -> (seq, ts_us) of its model.undeployed
    erased: dict[str, int] = {}  # key_id -> seq of subject.erased
    uses: dict[str, int] = {}  # key_id -> decisions recorded under it
    kinds = ("model.deployed", "model.undeployed", "prediction.made", "prediction.batch", "subject.erased",
             "incident.opened", "incident.reported")
    incidents: dict[int, dict[str, Any]] = {}
    reported: dict[int, int] = {}  # incident seq -> ts_us of its report
    for e in view.of_kind(*kinds):
        p = e.payload
        if e.kind == "model.deployed":
            deployments[e.seq] = p
        elif e.kind == "model.undeployed":
            ended.setdefault(p["deployed_seq"], (e.seq, parse_ts(e.ts)))
        elif e.kind == "incident.opened":
            incidents[e.seq] = p
        elif e.kind == "incident.reported":
            reported.setdefault(p["incident_seq"], parse_ts(e.ts))
        elif e.kind == "subject.erased":
            key = p["key_id"]
            n = uses.get(key, 0)
            erased[key] = e.seq
            out.append(finding(e.seq, "notice", f"subject key {key} erased ({p['request_ref']}, {p['legal_ground']}): "
                                                f"{n} recorded decision(s) under it are now unlinkable"))
            if n == 0:
                out.append(finding(e.seq, "notice", f"erased key {key} was used by no recorded decision"))
        else:
            out.extend(_check_decision(e.seq, parse_ts(e.ts), e.kind, p, deployments, ended, erased, finding))
            if e.kind == "prediction.made":
                uses[p["key_id"]] = uses.get(p["key_id"], 0) + 1
    now_us = time.time_ns() // 1000
    for seq, p in incidents.items():
        due = p.get("report_due")
        if due is None:
            continue
        what = f"{p['severity']} incident on {p['model']} ({p['summary'][:80]})"
        if seq in reported:
            late = (reported[seq] - parse_ts(due)) / 86_400e6
            if late > 0:
                out.append(finding(seq, "violation", f"{what}: reported {late:.1f} days after its Art. 73 deadline "
                                                     f"{due}"))
            continue
        if parse_ts(due) < now_us:
            out.append(finding(seq, "violation", f"{what}: its report to the authority was due by {due} "
                                                 "(EU AI Act Art. 73) and none is recorded"))
        else:
            out.append(finding(seq, "notice", f"{what}: to be reported to the authority by {due}"))
    return out


def _check_decision(seq: int, ts_us: int, kind: str, p: dict[str, Any], deployments: dict[int, dict[str, Any]],
                    ended: dict[int, tuple[int, int]], erased: dict[str, int], finding: Any) -> list[Any]:
    d = deployments.get(p["deployed_seq"])
    what = f"{kind} of {p['model']} at {p['stage']}"
    if d is None:
        return [finding(seq, "violation", f"{what} refers to seq {p['deployed_seq']}, which is not an earlier "
                                          "model.deployed entry")]
    if (d["model"], d["artifact_sha256"], d["stage"]) != (p["model"], p["artifact_sha256"], p["stage"]):
        return [finding(seq, "violation", f"{what} ({p['artifact_sha256'][:12]}) was not what seq "
                                          f"{p['deployed_seq']} deployed ({d['model']} {d['artifact_sha256'][:12]} "
                                          f"at {d['stage']})")]
    out = []
    if p["deployed_seq"] in ended:
        end_seq, end_us = ended[p["deployed_seq"]]
        late = (ts_us - end_us) / 1e6
        if late <= SWITCH_GRACE_S:
            out.append(finding(seq, "notice", f"{what} was recorded {late:.3f} s after its deployment ended at seq "
                                              f"{end_seq} (a request in flight during a switch-over)"))
        else:
            out.append(finding(seq, "violation", f"{what} was recorded {late:.1f} s after its deployment ended at "
                                                 f"seq {end_seq}: a version that was no longer deployed decided"))
    key = p.get("key_id")
    if key in erased:
        out.append(finding(seq, "violation", f"{what} used key {key}, erased at seq {erased[key]}"))
    return out
