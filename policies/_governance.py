"""Governance over the ledger: identities, approval checks, registry views and the audit.

Everything here is a projection of the ledger (``LedgerView``): nothing is stored
beside it. The checks registered for ``approval.signed`` and ``model.promoted`` run
inside the sequencing transaction, so a refused entry is never written.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from ledger.canonical import format_ts, parse_ts
from ledger.errors import InputError, SignatureError
from ledger.events import register_check
from ledger.view import LedgerView, ViewEntry
from policies._approvals import GENESIS_ADMIN, approval_message, identity_message, verify_approval

__all__ = [
    "APPROVER_ROLES",
    "Finding",
    "Identity",
    "ModelVersion",
    "approvals_for",
    "audit",
    "identities",
    "model_versions",
    "trainer_of",
]

#: Roles that may sign an approval when the policy names none (issue 12's table).
APPROVER_ROLES = frozenset({"validator", "model-risk"})
#: How far in the future a signature's time may be (clock skew).
MAX_SKEW_US = 5 * 60 * 1_000_000


@dataclass(frozen=True)
class Identity:
    name: str
    roles: frozenset[str]
    public_key: str
    seq: int


def identities(view: LedgerView, *, before: int | None = None) -> dict[str, Identity]:
    """Trusted identities as of ``before`` (exclusive); a later registration replaces an earlier.

    Only registrations signed by an admin count: the genesis admin is the log key's
    owner (``signed_by: ledger-key``, verified with the checkpoint key current then);
    later admins are identities already trusted with the ``admin`` role.
    """
    return _identities(view, before)[0]


#: Per ledger store: (seq, leaf hash) of the last identity or role entry counted -> the result. The
#: leaf hash pins the whole prefix (hash chain), so a rolled-back or different log never matches.
_IDENTITY_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[int, bytes], tuple[dict[str, Identity], list[Finding]]]]
_IDENTITY_CACHE = weakref.WeakKeyDictionary()
_IDENTITY_CACHE_LOCK = threading.Lock()


def _identities(view: LedgerView, before: int | None) -> tuple[dict[str, Identity], list[Finding]]:
    """Memoised by the identity and role entries before ``before``: a signed append or an audit
    does not re-verify every registration each time."""
    rel = [e for e in view.of_kind("identity.registered", "role.granted", "role.revoked")
           if before is None or e.seq < before]
    key = (rel[-1].seq, rel[-1].leaf_hash) if rel else (-1, b"")
    with _IDENTITY_CACHE_LOCK:
        cache = _IDENTITY_CACHE.setdefault(view.owner, {})
        hit = cache.get(key)
    if hit is None:
        hit = _compute_identities(view, rel)
        with _IDENTITY_CACHE_LOCK:
            if len(cache) >= 64:
                cache.pop(next(iter(cache)))
            cache[key] = hit
    return dict(hit[0]), list(hit[1])


def _compute_identities(view: LedgerView, rel: list[ViewEntry]) -> tuple[dict[str, Identity], list[Finding]]:
    out: dict[str, Identity] = {}
    untrusted: list[Finding] = []
    keys = None
    used: dict[str, int] = {}  # registration signature -> the seq of the registration that used it
    for e in rel:
        if e.kind != "identity.registered":
            untrusted.extend(_apply_role_event(view, e, out))
            continue
        p = e.payload
        sig = p.get("signature")
        problem = _registration_problem(view, e, out, keys)
        if problem is None and sig in used:  # a re-appended registration would undo later revocations
            problem = f"its admin signature was already used by the registration at seq {used[sig]} (a replay)"
        if sig is not None:
            used.setdefault(sig, e.seq)
        if problem is not None:
            untrusted.append(Finding(e.seq, "violation", f"identity {p['name']} is not trusted: {problem}"))
            continue
        out[p["name"]] = Identity(p["name"], frozenset(p["roles"]), p["public_key"], e.seq)
    return out, untrusted


def _apply_role_event(view: LedgerView, e: ViewEntry, trusted: dict[str, Identity]) -> list[Finding]:
    """A valid role grant or revocation (signed by an admin then) changes the identity's roles."""
    from policies._access import action_problem

    p = e.payload
    problem = action_problem(view, e.seq, parse_ts(e.ts), e.kind, e.actor, e.subject, p, trusted)
    ident = trusted.get(p["identity"])
    if problem is None and ident is None:
        problem = f"{p['identity']} is not a trusted identity"
    if problem is not None:
        return [Finding(e.seq, "violation", f"{e.kind} ({p['role']} for {p['identity']}) does not count: {problem}")]
    assert ident is not None
    roles = ident.roles | {p["role"]} if e.kind == "role.granted" else ident.roles - {p["role"]}
    trusted[ident.name] = Identity(ident.name, roles, ident.public_key, ident.seq)
    return []


def _registration_problem(view: LedgerView, e: ViewEntry, trusted: dict[str, Identity], keys: Any) -> str | None:
    from ledger.errors import IntegrityError
    from ledger.keyhistory import KeyHistory

    p = e.payload
    if p.get("signature") is None:
        return "its registration carries no admin signature"
    msg = identity_message(view.origin(), p["name"], p["roles"], p["public_key"], p["signed_by"],
                           display_name=p.get("display_name"), version=int(p.get("signature_version") or 1))
    if p["signed_by"] == GENESIS_ADMIN:
        try:
            history = KeyHistory.from_entries(
                (x.seq, x.kind, x.payload) for x in [view.get(0), *view.of_kind("key.added", "key.rotated",
                                                                                 "key.revoked")]
                if x is not None and x.seq < e.seq)
            key = history.current_key().verifier
        except (IntegrityError, InputError) as exc:
            return f"the log key cannot vouch for it ({exc})"
        import base64

        try:
            ok = key.verify(msg, base64.b64decode(p["signature"], validate=True))
        except ValueError:
            ok = False
        return None if ok else "the ledger key's signature over it does not verify"
    admin = trusted.get(p["signed_by"])
    if admin is None or "admin" not in admin.roles:
        return f"{p['signed_by']} is not a trusted admin"
    try:
        verify_approval(admin.public_key, msg, p["signature"], signer=p["signed_by"])
    except SignatureError as exc:
        return str(exc)
    return None


@dataclass
class ModelVersion:
    name: str
    version: int
    artifact_sha256: str | None  # None: an external model registered without an artifact
    registered_seq: int
    registered_by: str
    training_data: list[str]
    stages: dict[str, int] = field(default_factory=dict)  # stage -> seq of the promotion
    external: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def model_versions(view: LedgerView, *, until_seq: int | None = None) -> dict[str, ModelVersion]:
    """Every registered model version and the stages it holds (the latest promotion per stage wins)."""
    versions: dict[str, ModelVersion] = {}
    for e in view.of_kind("model.registered", "model.trained", "model.promoted"):
        if until_seq is not None and e.seq > until_seq:
            break
        p = e.payload
        if e.kind in ("model.registered", "model.trained"):
            mv = ModelVersion(p["name"], p["version"], p["artifact_sha256"], e.seq, e.actor,
                              list(p.get("training_data", [])), external=bool(p.get("external", False)))
            versions[mv.ref] = mv
        else:
            for other in versions.values():  # one version per stage
                other.stages.pop(p["stage"], None)
            if p["model"] in versions:
                versions[p["model"]].stages[p["stage"]] = e.seq
    return versions


def trainer_of(view: LedgerView, artifact_sha256: str | None, model: str | None = None) -> set[str]:
    """Who trained or registered the artifact (separation of duties).

    An external model without an artifact is identified by ``model`` (NAME@VERSION): whoever
    registered that version.
    """
    if artifact_sha256 is None:
        return {e.actor for e in view.of_kind("model.registered")
                if model is not None and f"{e.payload['name']}@{e.payload['version']}" == model}
    return {e.actor for e in view.of_kind("model.registered", "model.trained")
            if e.payload["artifact_sha256"] == artifact_sha256}


def _trainers(view: LedgerView, decision: ViewEntry) -> set[str]:
    return trainer_of(view, decision.payload["artifact_sha256"], decision.payload["model"])


def approvals_for(view: LedgerView, decision_seq: int) -> list[ViewEntry]:
    return [e for e in view.of_kind("approval.signed") if e.payload["decision_seq"] == decision_seq]


def _check_signature(view: LedgerView, decision: ViewEntry, sig: dict[str, Any], at_seq: int,
                     *, roles: frozenset[str], trainers: set[str]) -> Identity:
    """(1) a registered signer, (2) holding a role, (3) not the trainer, (4) a valid, timely signature."""
    signer = sig["signer"]
    ident = identities(view, before=at_seq).get(signer)
    if ident is None:
        raise InputError(f"approval refused: {signer} is not a registered identity with an admin-signed "
                         "registration (register with 'mlledger identity register')")
    if not ident.roles & roles:
        raise InputError(f"approval refused: {signer} holds {sorted(ident.roles)}, none of the "
                         f"roles that may approve ({', '.join(sorted(roles))})")
    if signer in trainers:
        raise InputError(f"approval refused: {signer} trained or registered this model; "
                         "separation of duties forbids self-approval")
    signed_us = parse_ts(sig["signed_at"])
    if signed_us < parse_ts(decision.ts):
        raise InputError(f"approval refused: signed_at {sig['signed_at']} is before the decision "
                         f"({decision.ts})")
    if signed_us > time.time_ns() // 1000 + MAX_SKEW_US:
        raise InputError(f"approval refused: signed_at {sig['signed_at']} is in the future")
    msg = approval_message(view.origin(), decision.seq, decision.leaf_hash.hex(), signer, sig["meaning"],
                           sig["signed_at"])
    try:
        verify_approval(ident.public_key, msg, sig["signature"], signer=signer)
    except SignatureError as exc:
        raise InputError(f"approval refused: {exc}; it was forged, altered, or signed for "
                         "another decision or log") from None
    return ident


def _decision(view: LedgerView, seq: int, leaf_hex: str) -> ViewEntry:
    decision = view.get(seq)
    if decision is None or decision.kind != "gate.evaluated":
        raise InputError(f"approval refused: seq {seq} is not a gate.evaluated decision")
    if decision.leaf_hash.hex() != leaf_hex:
        raise InputError(f"approval refused: the decision's leaf hash is {decision.leaf_hash.hex()}, "
                         f"not {leaf_hex}")
    return decision


@register_check("identity.registered")
def _check_registration(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    """New admin-signed registrations sign version 2 of the identity message (it covers the display
    name); version 1 ones already on the ledger still verify, their display name unauthenticated."""
    if payload.get("signature") is not None and payload.get("signature_version") != 2:
        raise InputError("identity.registered refused: its admin signature must be over version 2 of the identity "
                         "message (signature_version: 2), which also covers display_name; sign it again with "
                         "'mlledger identity register'")


@register_check("approval.signed")
def _check_approval(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    decision = _decision(view, payload["decision_seq"], payload["decision_leaf_hash"])
    for prior in approvals_for(view, decision.seq):
        if prior.payload["signer"] == payload["signer"] and prior.payload["meaning"] == payload["meaning"]:
            raise InputError(f"approval refused: {payload['signer']} already signed decision "
                             f"{decision.seq} ({payload['meaning']}) at seq {prior.seq}; a signature "
                             "counts once")
    _check_signature(view, decision, payload, seq, roles=APPROVER_ROLES, trainers=_trainers(view, decision))


@register_check("waiver.granted")
def _check_waiver(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    decision = _decision(view, payload["decision_seq"], payload["decision_leaf_hash"])
    trainers = _trainers(view, decision)
    signers = set()
    for sig in payload["approvals"]:
        ident = _check_signature(view, decision, sig, seq, roles=APPROVER_ROLES | {"admin"},
                                 trainers=trainers)
        signers.add(ident.name)
    if len(signers) < 2:
        raise InputError("waiver refused: it needs two distinct approvers")


# -- the audit ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    seq: int
    severity: str  # "violation" or "notice"
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "severity": self.severity, "message": self.message}


def audit(view: LedgerView) -> list[Finding]:
    """Re-check DESIGN.md section 3's governance invariants over the whole ledger.

    1. every model.promoted refers to an allowing gate.evaluated (or a waiver over a
       denying one) for that exact artifact hash and stage, under the policy published
       for that stage at that time;
    2. approvals: registered signers holding an approver role, not the trainer, valid
       signatures over that decision, none counted twice;
    3. every waiver is reported (a notice), so no break-glass goes unseen;
    4. every identity registration is signed by a trusted admin (else it is reported and
       its holder's signatures do not count);
    5. operations (``policies._audit_ops``): every decision refers to the deployment that served
       it, erasures are reported, and no decision uses an erased key;
    6. access (``policies._access``): every signed action's signature verifies and its actor held
       the kind's role at that seq; after ``access.enabled`` an unsigned one is a forged actor.
    """
    findings: list[Finding] = list(_identities(view, None)[1])
    policies: dict[str, tuple[int, str]] = {}  # stage -> (seq, sha256) of the latest publication
    for e in view.of_kind("policy.published", "approval.signed", "waiver.granted", "model.promoted"):
        p = e.payload
        if e.kind == "policy.published":
            policies[p["stage"]] = (e.seq, p["policy_hash"])
        elif e.kind == "approval.signed":
            findings.extend(_audit_signature(view, e, [p]))
        elif e.kind == "waiver.granted":
            findings.append(Finding(e.seq, "notice", f"waiver over decision {p['decision_seq']}: "
                                                     f"{p['justification']}"))
            findings.extend(_audit_signature(view, e, p["approvals"]))
        else:
            findings.extend(_audit_promotion(view, e, policies))
    from policies._audit_ops import audit_operations

    findings.extend(audit_operations(view, Finding))
    from policies._access import audit_access

    findings.extend(audit_access(view, Finding))
    return sorted(findings, key=lambda f: f.seq)


def _audit_signature(view: LedgerView, e: ViewEntry, sigs: list[dict[str, Any]]) -> list[Finding]:
    out = []
    p = e.payload
    try:
        decision = _decision(view, p["decision_seq"], p["decision_leaf_hash"])
        roles = APPROVER_ROLES | ({"admin"} if e.kind == "waiver.granted" else set())
        for sig in sigs:
            _check_signature(view, decision, sig, e.seq, roles=roles, trainers=_trainers(view, decision))
    except InputError as exc:
        out.append(Finding(e.seq, "violation", str(exc)))
    return out


def _audit_promotion(view: LedgerView, e: ViewEntry, policies: dict[str, tuple[int, str]]) -> list[Finding]:
    p = e.payload
    gate = view.get(p["gate_seq"])
    if gate is None or gate.kind != "gate.evaluated" or gate.seq > e.seq:
        return [Finding(e.seq, "violation", f"promotion of {p['model']} to {p['stage']} refers to "
                                            f"seq {p['gate_seq']}, which is not an earlier gate decision")]
    g = gate.payload
    problems = []
    if g["artifact_sha256"] != p["artifact_sha256"] or g["model"] != p["model"]:
        problems.append("the gate decision is for another model artifact")
    registered = model_versions(view, until_seq=e.seq).get(p["model"])
    if registered is None or registered.artifact_sha256 != p["artifact_sha256"]:
        problems.append("the promoted artifact is not the one registered or trained as that version")
    if g["stage"] != p["stage"]:
        problems.append(f"the gate decision is for stage {g['stage']}, not {p['stage']}")
    bound = policies.get(p["stage"])
    if bound is None or bound[1] != g["policy_sha256"]:
        problems.append(f"the gate used policy {g['policy_sha256'][:12]}, but the policy bound to "
                        f"{p['stage']} at seq {e.seq} is {bound[1][:12] if bound else 'none'}")
    if g["decision"] != "allow":
        waiver = view.get(p["waiver_seq"]) if p.get("waiver_seq") is not None else None
        approved = _quorum_met(view, gate, p.get("approvals", []))
        if g["decision"] == "needs_approval" and approved:
            pass
        elif waiver is None or waiver.kind != "waiver.granted" or waiver.payload["decision_seq"] != gate.seq:
            problems.append(f"the gate decided {g['decision']} and no valid waiver or approval covers it")
    return [Finding(e.seq, "violation", f"promotion of {p['model']} to {p['stage']}: {x}") for x in problems]


def _quorum_met(view: LedgerView, gate: ViewEntry, approval_seqs: list[int]) -> bool:
    needed = max((int(r.get("threshold") or 0) for r in gate.payload["rules"]
                  if r["kind"] == "approval" and isinstance(r.get("threshold"), int)), default=1)
    signers = {e.payload["signer"] for e in approvals_for(view, gate.seq)
               if e.seq in approval_seqs and e.payload["meaning"] == "approval"}
    return len(signers) >= needed


def now_ts() -> str:
    return format_ts(time.time_ns() // 1000)
