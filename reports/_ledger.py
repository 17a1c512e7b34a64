"""The integrity certificate of a whole ledger, assembled from the covered tree.

(1) the verification certificate (``reports._data.certificate``);
(2) every signed checkpoint up to the tree, with its witness cosignatures;
(3) entries by kind and by day (ledger time), counted in the database;
(4) the model inventory, trusted identities, published policies and earlier reports;
(5) the governance audit (``mlledger audit``): invariant findings and re-evaluated decisions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ledger.api import Ledger
from ledger.canonical import format_ts
from ledger.schema import entries
from ledger.verify import VerifyResult
from policies._gate import reevaluate
from policies._governance import audit, identities, model_versions
from reports._data import REPORT_VERSION, certificate, covered, entry_ref, scoped

__all__ = ["assemble_ledger"]

_DAY_US = 86_400_000_000


def _counts(ledger: Ledger, size: int) -> dict[str, Any]:
    day = (entries.c.ts_us / _DAY_US).cast(entries.c.seq.type)
    with ledger.store.engine.connect() as conn:
        by_kind = conn.execute(select(entries.c.kind, func.count()).where(entries.c.seq < size)
                               .group_by(entries.c.kind)).all()
        by_day = conn.execute(select(day, func.count()).where(entries.c.seq < size).group_by(day)
                              .order_by(day)).all()
    kinds = sorted(((str(k), int(n)) for k, n in by_kind), key=lambda kv: (-kv[1], kv[0]))
    return {"total": size, "by_kind": kinds,
            "per_day": [(format_ts(int(d) * _DAY_US)[:10], int(n)) for d, n in by_day]}


def assemble_ledger(ledger: Ledger, *, size: int, verified: VerifyResult) -> dict[str, Any]:
    """The integrity certificate's data over the first ``size`` entries."""
    cov = covered(ledger, size)
    cps = [{"size": cp.size, "root": cp.root.hex(), "signed_at": format_ts(cp.ts_us),
            "witnesses": [c.witness for c in cp.cosignatures]}
           for cp in ledger.checkpoints() if cp.size <= size]
    with scoped(ledger, size) as view:
        models = [{"ref": mv.ref, "artifact_sha256": mv.artifact_sha256, "stages": dict(sorted(mv.stages.items())),
                   "registered_seq": mv.registered_seq, "registered_by": mv.registered_by}
                  for mv in model_versions(view).values()]
        people = [{"name": i.name, "roles": sorted(i.roles), "seq": i.seq} for i in identities(view).values()]
        policies = [{**entry_ref(e), "name": e.payload["name"], "stage": e.payload["stage"],
                     "policy_hash": e.payload["policy_hash"]} for e in view.of_kind("policy.published")]
        reports = [{**entry_ref(e), **{k: e.payload.get(k) for k in ("kind", "format", "model", "tree_size",
                                                                       "report_sha256")}}
                   for e in view.of_kind("report.generated")]
        findings = [f.to_json() for f in sorted(audit(view) + reevaluate(view), key=lambda f: f.seq)]
    return {
        "report": "ledger", "format_version": REPORT_VERSION,
        "certificate": certificate(ledger, cov, verified),
        "checkpoints": cps,
        "events": _counts(ledger, size),
        "models": models, "identities": people, "policies": policies, "reports": reports,
        "audit": {"findings": findings, "violations": sum(f["severity"] == "violation" for f in findings),
                  "notices": sum(f["severity"] == "notice" for f in findings),
                  "clean": verified.ok and not any(f["severity"] == "violation" for f in findings)},
    }
