"""Access control: the fixed role table, and the guard that enforces it (issue 12).

Who may do what is fixed here (``PERMISSIONS``) and rendered in README.md. A role is held
*at seq N* when the identity's trusted registration (``identity.registered``, signed by an
admin) or a valid ``role.granted`` before N gives it and no ``role.revoked`` before N takes
it away (``policies._governance.identities``).

The guard runs inside the sequencing transaction for every governed kind, so a refused
action writes nothing:
1. an ``actor_signature`` that is present must verify, whether or not the ledger is
   access-controlled;
2. role grants, revocations, ``access.enabled`` and tokens must always be signed by an admin;
3. once the ledger is *access-controlled* (an ``access.enabled`` entry exists, written by an
   admin; it cannot be undone), every governed action must carry the signature of its
   actor, a trusted identity holding one of the kind's roles at that seq. Identity
   registrations are authenticated by their own admin signature, approvals and waivers
   by their approvers' signatures (and the actor must be such a signer).

A signature counts once (no replay) and its time must lie within ``SIGNATURE_WINDOW_US`` of
the entry's. ``mlledger audit`` re-runs the same checks (``action_problem``) at each seq.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol

from ledger.actions import verify_action
from ledger.canonical import parse_ts
from ledger.errors import InputError, IntegrityError, SignatureError
from ledger.events import register_guard
from ledger.view import LedgerView

__all__ = [
    "ALWAYS_SIGNED",
    "KIND_ROLES",
    "PERMISSIONS",
    "SCOPE_ROLES",
    "SIGNATURE_WINDOW_US",
    "access_enabled_seq",
    "action_problem",
    "genesis_key",
    "roles_for",
]

#: The fixed table (issue 12): what each role may do, and the entry kinds that do it.
PERMISSIONS: Final[tuple[tuple[str, frozenset[str], tuple[str, ...]], ...]] = (
    ("register identities, keys, roles and tokens; turn access control on", frozenset({"admin"}),
     ("identity.registered", "key.added", "key.rotated", "key.revoked", "role.granted", "role.revoked",
      "access.enabled", "token.issued", "token.revoked")),
    ("publish policies", frozenset({"model-risk", "admin"}), ("policy.published",)),
    ("register and validate data", frozenset({"data-steward"}), ("dataset.registered", "dataset.validated")),
    ("train, register models, record evidence and documents", frozenset({"model-developer"}),
     ("model.trained", "model.registered", "evidence.recorded", "doc.attached")),
    ("approve, review", frozenset({"validator", "model-risk"}), ("approval.signed", "waiver.granted")),
    ("promote (with the gate), deploy", frozenset({"deployer"}),
     ("model.promoted", "model.deployed", "model.undeployed")),
    ("erase subjects", frozenset({"dpo"}), ("subject.erased",)),
    ("read, export, report", frozenset({"auditor"}), ("access.read",)),
    ("predict", frozenset({"service"}), ()),
)

#: Entry kind -> the roles that may write it.
KIND_ROLES: Final[dict[str, frozenset[str]]] = {k: roles for _, roles, kinds in PERMISSIONS for k in kinds}
#: A waiver's approvers may also be admins (break-glass).
KIND_ROLES["waiver.granted"] = frozenset({"validator", "model-risk", "admin"})
#: Kinds that must be signed by an admin even before the ledger is access-controlled.
ALWAYS_SIGNED: Final = frozenset({"role.granted", "role.revoked", "access.enabled", "token.issued",
                                  "token.revoked"})
#: Who may read sealed raw inputs (``access.read`` of ``inputs``): auditors, and the reviewers and
#: the DPO who need them for a review or a subject's request.
INPUT_READ_ROLES: Final = frozenset({"auditor", "validator", "model-risk", "dpo"})
#: HTTP token scope -> the roles its identity must hold when the token is issued.
SCOPE_ROLES: Final[dict[str, frozenset[str]]] = {
    "predict": frozenset({"service"}),
    "review": frozenset({"validator", "model-risk"}),
    "proofs": frozenset({"service", "auditor", "validator", "model-risk"}),
    "model": frozenset({"service", "auditor", "deployer"}),
}
#: How far a signature's time may be from its entry's (clock skew and a human's pause).
SIGNATURE_WINDOW_US: Final = 10 * 60 * 1_000_000


class _Ident(Protocol):
    @property
    def roles(self) -> frozenset[str]: ...
    @property
    def public_key(self) -> str: ...


def roles_for(kind: str, payload: Mapping[str, Any] | None = None) -> frozenset[str] | None:
    """The roles that may write an entry of ``kind`` (reads of sealed inputs have their own)."""
    if kind == "access.read" and payload is not None and payload.get("what") == "inputs":
        return INPUT_READ_ROLES
    return KIND_ROLES.get(kind)


def access_enabled_seq(view: LedgerView, *, before: int | None = None) -> int | None:
    """The seq from which the ledger is access-controlled, if it is (before ``before``)."""
    for e in view.of_kind("access.enabled"):
        if before is None or e.seq < before:
            return e.seq
    return None


def genesis_key(view: LedgerView, before: int) -> str:
    """The genesis admin's public key (raw, base64): the log's checkpoint key current at ``before``."""
    from ledger.keyhistory import KeyHistory

    entries = [x for x in [view.get(0), *view.of_kind("key.added", "key.rotated", "key.revoked")]
               if x is not None and x.seq < before]
    history = KeyHistory.from_entries((x.seq, x.kind, x.payload) for x in entries)
    return base64.b64encode(history.current_key().verifier.public_key).decode()


def _describe_roles(roles: frozenset[str]) -> str:
    names = sorted(roles)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def action_problem(view: LedgerView, seq: int, at_us: int, kind: str, actor: str, subject: str | None,
                   payload: Mapping[str, Any], trusted: Mapping[str, _Ident],
                   seen: Mapping[str, int] | None = None) -> str | None:
    """Why an entry is not a valid signed action of an entitled actor at ``seq`` (None if it is).

    (1) a trusted identity (or the genesis admin), (2) a signature that verifies over this
    entry, (3) made within the window of ``at_us``, (4) not counted before, (5) a role the
    kind needs. ``seen`` maps earlier entries' signatures to their seq (else they are looked up).
    """
    from policies._approvals import GENESIS_ADMIN

    sig = payload.get("actor_signature")
    if not isinstance(sig, Mapping):
        return f"{kind} by {actor} is not signed by its actor"
    if actor == GENESIS_ADMIN:
        try:
            key, roles = genesis_key(view, seq), frozenset({"admin"})
        except (IntegrityError, InputError) as exc:
            return f"the ledger key cannot sign it ({exc})"
    else:
        ident = trusted.get(actor)
        if ident is None:
            return f"{actor} is not a registered identity with an admin-signed registration"
        key, roles = ident.public_key, ident.roles
    try:
        verify_action(key, view.origin(), kind, actor, subject, dict(payload))
    except SignatureError as exc:
        return f"{exc}: it was forged or altered"
    if abs(parse_ts(str(sig["signed_at"])) - at_us) > SIGNATURE_WINDOW_US:
        return f"its signature time {sig['signed_at']} is more than 10 minutes from the entry's (a replay?)"
    if seen is None:
        seen = {(e.payload.get("actor_signature") or {}).get("signature", ""): e.seq
                for e in reversed(view.of_kind(kind)) if e.seq < seq}
    if sig["signature"] in seen:
        return f"its signature was already used at seq {seen[sig['signature']]} (a replay)"
    needed = roles_for(kind, payload) or frozenset()
    if needed and not roles & needed:
        return (f"{actor} holds {', '.join(sorted(roles)) or 'no role'}; {kind} needs the role "
                f"{_describe_roles(needed)}")
    return None


@register_guard
def _guard(view: LedgerView, seq: int, kind: str, actor: str | None, subject: str | None,
           payload: dict[str, Any]) -> None:
    """Refuse a governed entry its actor may not write (see the module docstring)."""
    from policies._governance import _registration_problem, identities

    needed = KIND_ROLES.get(kind)
    if needed is None or actor is None:
        return
    enforced = access_enabled_seq(view, before=seq) is not None
    trusted = identities(view, before=seq)
    if kind == "identity.registered":
        if enforced:
            problem = _registration_problem(view, _pending(view, seq, kind, actor, subject, payload), trusted, None)
            earlier = [e.seq for e in view.of_kind("identity.registered")
                       if payload.get("signature") and e.payload.get("signature") == payload["signature"]]
            if problem is None and earlier:
                problem = f"its admin signature was already used by the registration at seq {earlier[0]} (a replay)"
            if problem is not None:
                raise InputError(f"identity.registered refused: {problem}")
        return
    if kind in ("approval.signed", "waiver.granted"):
        signers = {payload["signer"]} if kind == "approval.signed" else {a["signer"] for a in payload["approvals"]}
        if enforced and actor not in signers:
            raise InputError(f"{kind} refused: this ledger is access-controlled; its actor {actor} must be "
                             f"one of its signers ({', '.join(sorted(signers))})")
        return
    if payload.get("actor_signature") is None and not enforced and kind not in ALWAYS_SIGNED:
        return
    problem = action_problem(view, seq, time.time_ns() // 1000, kind, actor, subject, payload, trusted)
    if problem is not None:
        hint = "" if payload.get("actor_signature") else (
            " (act as a registered identity: --as KEYFILE or MLLEDGER_IDENTITY)")
        raise InputError(f"{kind} refused: {problem}{hint}")


def _pending(view: LedgerView, seq: int, kind: str, actor: str, subject: str | None,
             payload: dict[str, Any]) -> Any:
    from ledger.view import ViewEntry

    return ViewEntry(seq, kind, actor, subject, "", b"", payload)


UNGOVERNED_PERSON_KINDS: Final = ("human.reviewed", "gate.evaluated", "incident.opened", "incident.reported",
                                  "incident.closed", "label.received", "report.generated")
"""Kinds a person writes that are not signed actions yet: audit reports them after access.enabled."""


def audit_access(view: LedgerView, finding: Any) -> list[Any]:
    """Re-check every signed action: its signature, and the role its actor held at that seq.

    Findings are built with ``finding(seq, severity, message)``. Before ``access.enabled`` an
    unsigned action is reported once, as a notice; after it, an unsigned action (a forged
    actor name) is a violation. Role grants and revocations are checked where roles are
    computed (``policies._governance.identities``).
    """
    from policies._governance import identities

    out: list[Any] = []
    enabled = access_enabled_seq(view)
    unsigned = 0
    seen: dict[str, int] = {}  # signature -> the seq that used it first
    kinds = [k for k in KIND_ROLES if k not in ("identity.registered", "role.granted", "role.revoked")]
    for e in view.of_kind(*kinds):
        p = e.payload
        enforced = enabled is not None and e.seq > enabled
        if e.kind in ("approval.signed", "waiver.granted"):
            signers = {p["signer"]} if e.kind == "approval.signed" else {a["signer"] for a in p["approvals"]}
            if enforced and e.actor not in signers:
                out.append(finding(e.seq, "violation", f"{e.kind} by {e.actor}, who is not one of its signers"))
            continue
        if p.get("actor_signature") is None and not enforced and e.kind not in ALWAYS_SIGNED:
            unsigned += 1
            continue
        problem = action_problem(view, e.seq, parse_ts(e.ts), e.kind, e.actor, e.subject, p,
                                 identities(view, before=e.seq), seen)
        if p.get("actor_signature") is not None:
            seen.setdefault(p["actor_signature"]["signature"], e.seq)
        if problem is not None:
            out.append(finding(e.seq, "violation", f"{e.kind} by {e.actor}: {problem}"))
    if unsigned:
        since = "" if enabled is None else f" (before access control began at seq {enabled})"
        out.append(finding(0, "notice", f"{unsigned} governance action(s) are not signed by their actor{since}: "
                                        "their actor names are not authenticated"))
    if enabled is not None:  # kinds people write that the role table does not govern yet: say so, once each
        for kind in UNGOVERNED_PERSON_KINDS:
            late = [e.seq for e in view.of_kind(kind) if e.seq > enabled]
            if late:
                out.append(finding(late[0], "notice", f"{len(late)} {kind} entr{'y' if len(late) == 1 else 'ies'} "
                                                      f"after access control began (seq {enabled}) carry no actor "
                                                      "signature: their actor names are not authenticated"))
    return out


def require_role(ledger: Any, roles: frozenset[str], action: str) -> str | None:
    """For a CLI action the guard does not see (its entry is written by the server too, e.g. a review):
    in an access-controlled ledger, the acting identity must hold one of ``roles``. Returns the
    acting identity's name (the actor to record), if any."""
    from policies._governance import identities

    with ledger.view() as view:
        enabled = access_enabled_seq(view)
        held = identities(view)
    name: str | None = ledger.acting_as
    if enabled is None:
        return name
    if name is None:
        raise InputError(f"{action} refused: this ledger is access-controlled (since seq {enabled}); act as a "
                         "registered identity with --as KEYFILE or MLLEDGER_IDENTITY")
    ident = held.get(name)
    have = ident.roles if ident is not None else frozenset()
    if not have & roles:
        raise InputError(f"{action} refused: {name} holds {', '.join(sorted(have)) or 'no role'}; {action} needs "
                         f"the role {_describe_roles(roles)}")
    return name
