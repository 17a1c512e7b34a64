"""Signed actions: an actor's Ed25519 signature over a governance entry (issue 12).

A payload model that derives from ``SignedAction`` may carry ``actor_signature``:
``{"signed_at": <RFC 3339 UTC, microseconds>, "signature": <base64 Ed25519>}`` by the
entry's ``actor`` (a registered identity) over the domain-separated message

    "mlledger/action/v1" LF origin LF kind LF actor LF canonical(subject) LF signed_at LF
    canonical(payload without "actor_signature")

where ``canonical`` is the ledger's canonical JSON (``ledger.canonical.encode``), so the
subject ``null`` and the string ``"null"`` differ. The signature binds the whole entry
content but its sequencing fields (``seq``, ``prev``, ``ts``): the signer cannot know
them in advance. Replay is refused by the access guard (``policies._access``): the
signature time must be close to the entry's and a signature counts once.

A payload with a ``vouched_by`` field (``human.reviewed`` written by the server) may be signed by
that identity instead of its actor: the same message, with the actor's name, under the voucher's
key. The server vouches that it authenticated the actor (a bearer token); the access guard checks
the voucher's role and the actor's token.

Invariants:
1. an absent ``actor_signature`` is omitted from the payload, so entries written before
   issue 12 keep their bytes;
2. ``action_message`` is a pure function of the entry's content.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, ClassVar, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import StringConstraints

from ledger.canonical import encode
from ledger.errors import SignatureError
from ledger.events import Event, Payload

__all__ = ["ACTION_DOMAIN", "ActorSignature", "SignedAction", "action_message", "sign_event",
           "verify_action"]

ACTION_DOMAIN: Final = b"mlledger/action/v1\n"

Ts = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")]
B64Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{85}[AQgw]==$")]  # canonical base64 only


class ActorSignature(Payload):
    """The actor's signature over the entry (see the module docstring)."""

    signed_at: Ts
    signature: B64Signature


class SignedAction(Payload):
    """Base of the governance kinds whose entries the actor signs."""

    GOVERNED: ClassVar[bool] = True
    #: Unsigned entries keep their pre-issue-12 bytes; subclasses add their own optional fields.
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"actor_signature"})
    actor_signature: ActorSignature | None = None


def action_message(origin: str, kind: str, actor: str, subject: str | None, signed_at: str,
                   payload: dict[str, Any]) -> bytes:
    """What the actor signs (pure)."""
    body = {k: v for k, v in payload.items() if k != "actor_signature"}
    return (ACTION_DOMAIN + f"{origin}\n{kind}\n{actor}\n".encode() + encode(subject, where="subject")
            + b"\n" + signed_at.encode() + b"\n" + encode(body, where="payload"))


def sign_event(event: Event, *, actor: str, key: Ed25519PrivateKey, origin: str, signed_at: str) -> Event:
    """``event`` with ``actor`` as its actor and, for a signed-action kind, the actor's signature.

    A payload that names ``actor`` as its ``vouched_by`` keeps the event's actor: ``actor`` signs as
    its voucher (see the module docstring)."""
    payload = event.payload
    if event.actor is not None and getattr(payload, "vouched_by", None) == actor:
        actor = event.actor
    if isinstance(payload, SignedAction):
        body = payload.model_copy(update={"actor_signature": None}).model_dump(mode="json")
        msg = action_message(origin, event.kind, actor, event.subject, signed_at, body)
        sig = ActorSignature(signed_at=signed_at, signature=base64.b64encode(key.sign(msg)).decode())
        payload = payload.model_copy(update={"actor_signature": sig})
    return Event(payload, actor=actor, subject=event.subject)


def verify_action(public_key_b64: str, origin: str, kind: str, actor: str, subject: str | None,
                  payload: dict[str, Any]) -> None:
    """Raise ``SignatureError`` unless ``payload['actor_signature']`` verifies with the key."""
    sig = payload.get("actor_signature")
    if not isinstance(sig, dict):
        raise SignatureError(f"{kind} by {actor} carries no actor signature")
    msg = action_message(origin, kind, actor, subject, str(sig["signed_at"]), payload)
    try:
        pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        pub.verify(base64.b64decode(str(sig["signature"]), validate=True), msg)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"the actor signature of {actor} on {kind} does not verify with their "
                             f"registered key ({type(exc).__name__})") from None


def identity_for_key(ledger: Any, key: Ed25519PrivateKey, *, where: str) -> str:
    """The name a private key acts as in ``ledger``: the genesis admin (the log key's owner) or the
    latest ``identity.registered`` with its public key. Whether that identity is trusted, and holds
    the role an action needs, is decided when the action is appended (the access guard)."""
    from cryptography.hazmat.primitives import serialization

    from ledger.errors import InputError, IntegrityError
    from ledger.keyhistory import KeyHistory

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        history = KeyHistory.from_entries(
            (e.seq, e.kind, e.payload) for e in ledger.iter(kind=["ledger.created", "key.added", "key.rotated",
                                                                   "key.revoked"]))
        if history.current_key().verifier.public_key == raw:
            return "ledger-key"
    except (InputError, IntegrityError):
        pass
    pub = base64.b64encode(raw).decode()
    names = [e.payload["name"] for e in ledger.iter(kind=["identity.registered"]) if e.payload["public_key"] == pub]
    if not names:
        raise InputError(f"{where}: its public key belongs to no registered identity of this ledger "
                         "(register it with 'mlledger identity register')")
    distinct = sorted(set(names))
    if len(distinct) > 1:  # e.g. someone registered another name with this key: never guess which one acts
        raise InputError(f"{where}: its public key is registered under several names ({', '.join(distinct)}); "
                         "an admin must resolve it (revoke the wrong registration's roles) before this key can act")
    return str(names[-1])
