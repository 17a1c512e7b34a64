"""Payload models of the access-control kinds (issue 12, docs/FORMAT.md 3.20-3.24).

``role.granted`` / ``role.revoked``, ``access.enabled``, ``token.issued`` / ``token.revoked``
are signed actions of an admin; ``access.denied`` counts refused HTTP requests per window.
``access.read`` (who read what) is a ledger kind (``ledger.kinds``), as ``mlledger export`` writes it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from ledger.actions import SignedAction
from ledger.events import Payload, Sha256Hex, register
from ledger.kinds import Identifier, Role

__all__ = ["AccessDenied", "AccessEnabled", "RoleGranted", "RoleRevoked", "Scope", "TokenIssued",
           "TokenRevoked"]

Reason = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Ts = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")]
Scope = Literal["predict", "review", "proofs", "model"]


@register("role.granted")
class RoleGranted(SignedAction):
    """An admin grants a registered identity one more role, from this entry on."""

    identity: Identifier
    role: Role
    reason: Reason


@register("role.revoked")
class RoleRevoked(SignedAction):
    """An admin takes a role away; actions after this entry may no longer use it."""

    identity: Identifier
    role: Role
    reason: Reason


@register("access.enabled")
class AccessEnabled(SignedAction):
    """From this entry on, every governed action must be signed by an identity holding its role."""

    reason: Reason


@register("token.issued")
class TokenIssued(SignedAction):
    """An HTTP bearer token for ``identity``; only its SHA-256 is recorded, never the token."""

    token_sha256: Sha256Hex
    identity: Identifier
    scopes: Annotated[list[Scope], Field(min_length=1)]
    expires_at: Ts


@register("token.revoked")
class TokenRevoked(SignedAction):
    """A bearer token is refused from this entry on."""

    token_sha256: Sha256Hex
    reason: Reason


@register("access.denied")
class AccessDenied(Payload):
    """Refused HTTP requests in one window, counted by reason and endpoint (no token, no address)."""

    window_start: Ts
    window_s: Annotated[int, Field(ge=1, le=86_400)]
    counts: dict[Literal["missing", "invalid", "expired", "revoked", "scope"], Annotated[int, Field(ge=1)]]
    endpoints: dict[Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9/_{}.-]{0,127}$")],
                    Annotated[int, Field(ge=1)]]
