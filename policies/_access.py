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
   by their approvers' signatures (and the actor must be such a signer);
4. an entry the serving API writes for the holder of a bearer token (``VOUCHED``: a
   ``human.reviewed`` from ``POST /v1/reviews``) keeps the token's identity as its actor and is
   signed by the server's own identity, named in ``vouched_by`` (``ledger.actions``). It is
   valid when the voucher holds ``service``, the actor holds one of the kind's roles, and the
   actor held a live token with the kind's scope at that seq: the server vouches that it
   authenticated the actor, and the token scope is what it vouches with. (``prediction.made``
   is not governed: it is recorded by the deployed service, whose token scope ``predict`` the
   server checks, and audited against its deployment.)

A signature counts once (no replay) and its time must lie within ``SIGNATURE_WINDOW_US`` of
the entry's. ``mlledger audit`` re-runs the same checks (``action_problem``) at each seq.
"""

from __future__ import annotations

import base64
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol

import orjson

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
    "VOUCHED",
    "VOUCHER_ROLES",
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
    ("evaluate a policy gate (alone, or as the first step of a promotion)",
     frozenset({"deployer", "validator", "model-risk"}), ("gate.evaluated",)),
    ("approve, review decisions", frozenset({"validator", "model-risk"}),
     ("approval.signed", "waiver.granted", "human.reviewed")),
    ("promote (with the gate), deploy", frozenset({"deployer"}),
     ("model.promoted", "model.deployed", "model.undeployed")),
    ("open an incident", frozenset({"deployer", "model-risk", "service"}), ("incident.opened",)),
    ("report an incident to an authority, close it", frozenset({"deployer", "model-risk"}),
     ("incident.reported", "incident.closed")),
    ("record ground-truth labels", frozenset({"data-steward", "service"}), ("label.received",)),
    ("erase subjects", frozenset({"dpo"}), ("subject.erased",)),
    ("read, export, report", frozenset({"auditor"}), ("access.read", "report.generated")),
    ("predict; monitor, raise alerts, trigger retraining (the closed loop also needs the roles of "
     "the steps it runs)", frozenset({"service"}), ("monitor.window", "monitor.alert", "retrain.triggered")),
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
#: Kinds the serving API writes for a token's holder, vouched for by the server (step 4 of the module
#: docstring): kind -> the token scope the actor must have held.
VOUCHED: Final[dict[str, str]] = {"human.reviewed": "review"}
#: The roles a vouching server's identity must hold.
VOUCHER_ROLES: Final = frozenset({"service"})
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
    A vouched entry (``vouched_by``) is signed by its voucher: (1)-(4) apply to the voucher, and
    (6) the voucher holds ``service``, the actor a role the kind needs and a live token of its scope.
    """
    from policies._approvals import GENESIS_ADMIN

    sig = payload.get("actor_signature")
    voucher = payload.get("vouched_by")
    if not isinstance(sig, Mapping):
        by = "its actor" if voucher is None else f"{voucher}, the server that vouches for it"
        return f"{kind} by {actor} is not signed by {by}"
    signer = actor if voucher is None else str(voucher)
    if voucher is not None and (kind not in VOUCHED or voucher == actor):
        return f"{kind} by {actor} cannot be vouched for by {voucher}"
    if signer == GENESIS_ADMIN:
        try:
            key, roles = genesis_key(view, seq), frozenset({"admin"})
        except (IntegrityError, InputError) as exc:
            return f"the ledger key cannot sign it ({exc})"
    else:
        ident = trusted.get(signer)
        if ident is None:
            return f"{signer} is not a registered identity with an admin-signed registration"
        key, roles = ident.public_key, ident.roles
    try:
        verify_action(key, view.origin(), kind, actor, subject, dict(payload))
    except SignatureError as exc:
        if voucher is not None:
            return f"the signature of {voucher}, vouching for {actor}, does not verify with its registered key"
        return f"{exc}: it was forged or altered"
    if abs(parse_ts(str(sig["signed_at"])) - at_us) > SIGNATURE_WINDOW_US:
        return f"its signature time {sig['signed_at']} is more than 10 minutes from the entry's (a replay?)"
    earlier = seen.get(sig["signature"]) if seen is not None else _signatures(view).earlier_use(
        view, seq, at_us, sig["signature"])
    if earlier is not None:
        return f"its signature was already used at seq {earlier} (a replay)"
    needed = roles_for(kind, payload) or frozenset()
    if voucher is not None:
        if not roles & VOUCHER_ROLES:
            return (f"{voucher} holds {', '.join(sorted(roles)) or 'no role'}; vouching for {kind} needs the "
                    f"role {_describe_roles(VOUCHER_ROLES)}")
        held = trusted.get(actor)
        roles = held.roles if held is not None else frozenset()
        if not _holds_token(view, seq, at_us, actor, VOUCHED[kind]):
            return (f"{actor} held no live token with the scope {VOUCHED[kind]} at seq {seq}: {voucher} may "
                    "vouch only for a token's holder")
    if needed and not roles & needed:
        return (f"{actor} holds {', '.join(sorted(roles)) or 'no role'}; {kind} needs the role "
                f"{_describe_roles(needed)}")
    return None


class _SignatureIndex:
    """The signatures of one ledger's recent signed actions, for the replay check at write time.

    A signature counts only within ``SIGNATURE_WINDOW_US`` of its entry's time, so a replay can
    only collide with an entry less than twice that old. The index reads each entry once, from
    that horizon on, and forgets older signatures: a signed append costs amortised O(1) reads,
    not a scan of every earlier entry of its kind. It remembers where it stopped by the leaf hash
    there; a rolled-back batch (or any other change) shows there, and the index starts again.
    """

    def __init__(self) -> None:
        self.upto = 0  # every entry below this seq, from covered_us on, has been read
        self.covered_us = 0  # entries at or after this time (below upto) are in ``first``
        self.anchor: bytes | None = None  # the leaf hash of upto - 1 when it was read
        self.first: dict[str, tuple[int, int]] = {}  # signature -> (seq, ts_us) of its first use
        self.lock = threading.Lock()

    def earlier_use(self, view: LedgerView, seq: int, at_us: int, signature: str) -> int | None:
        horizon = at_us - 2 * SIGNATURE_WINDOW_US - _CLOCK_SLACK_US
        with self.lock:
            if self.upto and view.leaf(self.upto - 1) != self.anchor:  # rolled back or rewritten
                self.upto, self.anchor, self.first = 0, None, {}
            if horizon < self.covered_us:
                return _scan_for(view, view.first_at_or_after(horizon), seq, signature)  # an old check (audit)
            if self.upto < seq:
                if not self.upto:
                    self.covered_us = horizon
                for s, d in _signed_entries(view.raw_between(self.upto or view.first_at_or_after(horizon), seq)):
                    self.first.setdefault(d["payload"]["actor_signature"]["signature"], (s, parse_ts(d["ts"])))
                self.upto, self.anchor = seq, view.leaf(seq - 1)
            if len(self.first) > _INDEX_PRUNE_AT:
                self.first = {k: v for k, v in self.first.items() if v[1] >= horizon}
                self.covered_us = max(self.covered_us, horizon)
            hit = self.first.get(signature)
        return hit[0] if hit is not None and hit[0] < seq else None


def _signed_entries(rows: list[tuple[int, bytes, bytes]]) -> Iterator[tuple[int, dict[str, Any]]]:
    for s, _leaf, raw in rows:
        if b'"actor_signature"' in raw:
            d = orjson.loads(raw)
            if isinstance(d["payload"].get("actor_signature"), dict):
                yield s, d


def _scan_for(view: LedgerView, lo: int, hi: int, signature: str) -> int | None:
    for s, d in _signed_entries(view.raw_between(lo, hi)):
        if d["payload"]["actor_signature"].get("signature") == signature:
            return s
    return None


_CLOCK_SLACK_US: Final = 10 * 60 * 1_000_000  # writers' clocks may disagree by this much
_INDEX_PRUNE_AT: Final = 50_000
_INDEXES: weakref.WeakKeyDictionary[Any, _SignatureIndex] = weakref.WeakKeyDictionary()
_INDEXES_LOCK: Final = threading.Lock()


def _signatures(view: LedgerView) -> _SignatureIndex:
    """The index of the view's ledger (of the view itself when it has no store: an offline audit)."""
    with _INDEXES_LOCK:
        index = _INDEXES.get(view.owner)
        if index is None:
            index = _INDEXES[view.owner] = _SignatureIndex()
        return index


def _holds_token(view: LedgerView, seq: int, at_us: int, identity: str, scope: str) -> bool:
    """Whether ``identity`` had a token with ``scope`` before ``seq``, unrevoked and unexpired at ``at_us``."""
    revoked = {e.payload["token_sha256"] for e in view.of_kind("token.revoked") if e.seq < seq}
    return any(e.seq < seq and e.payload["identity"] == identity and scope in e.payload["scopes"]
               and e.payload["token_sha256"] not in revoked and parse_ts(e.payload["expires_at"]) > at_us
               for e in view.of_kind("token.issued"))


@register_guard
def _guard(view: LedgerView, seq: int, kind: str, actor: str | None, subject: str | None,
           payload: dict[str, Any]) -> None:
    """Refuse a governed entry its actor may not write (see the module docstring)."""
    from policies._governance import _registration_problem, identities

    needed = KIND_ROLES.get(kind)
    if needed is None or actor is None:
        return
    # Whether access control is on is read once per batch (the batch holds the write lock, so only
    # an access.enabled in the batch itself can change it: the next entry reads again).
    memo = view.memo
    if "access_enabled" not in memo:
        memo["access_enabled"] = access_enabled_seq(view, before=seq)
    enforced = memo["access_enabled"] is not None
    if kind == "access.enabled":
        memo.pop("access_enabled")
    if not enforced and (kind in ("identity.registered", "approval.signed", "waiver.granted") or (
            payload.get("actor_signature") is None and kind not in ALWAYS_SIGNED)):
        return  # before access control: nothing more to check here (and nothing read)
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
            " (act as a registered identity: --as KEYFILE or MLLEDGER_IDENTITY" + (
                "; through the serving API, the server vouches for a token's holder only when it runs as a "
                "registered service identity: mlledger --as KEYFILE serve" if kind in VOUCHED else "") + ")")
        raise InputError(f"{kind} refused: {problem}{hint}")


def _pending(view: LedgerView, seq: int, kind: str, actor: str, subject: str | None,
             payload: dict[str, Any]) -> Any:
    from ledger.view import ViewEntry

    return ViewEntry(seq, kind, actor, subject, "", b"", payload)


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
    return out



def require_roles_for(ledger: Any, kinds: tuple[str, ...], action: str) -> None:
    """Before a run that writes several kinds (the closed loop), refuse it, writing nothing, unless in an
    access-controlled ledger the acting identity holds a role for each of ``kinds``: so a loop does not
    stop half-way at its first refused step. The guard still checks every entry as it is appended."""
    from policies._approvals import GENESIS_ADMIN
    from policies._governance import identities

    with ledger.view() as view:
        enabled = access_enabled_seq(view)
        held = identities(view)
    if enabled is None:
        return
    name: str | None = ledger.acting_as
    if name is None:
        raise InputError(f"{action} refused: this ledger is access-controlled (since seq {enabled}); act as a "
                         "registered identity with --as KEYFILE or MLLEDGER_IDENTITY")
    ident = held.get(name)
    have = frozenset({"admin"}) if name == GENESIS_ADMIN else ident.roles if ident is not None else frozenset()
    missing: dict[str, list[str]] = {}
    for kind in kinds:
        needed = KIND_ROLES[kind]
        if not have & needed:
            missing.setdefault(_describe_roles(needed), []).append(kind)
    if missing:
        what = "; ".join(f"{roles} ({', '.join(ks)})" for roles, ks in missing.items())
        raise InputError(f"{action} refused: {name} holds {', '.join(sorted(have)) or 'no role'}; it also needs the "
                         f"role {what}")
