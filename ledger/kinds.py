"""Payload models of the ledger's own kinds (DESIGN.md section 3).

``ledger.created``, ``key.added``, ``key.rotated``, ``key.revoked``,
``identity.registered``, ``policy.published``, ``dataset.registered`` and ``subject.erased``.
Other packages register their kinds the same way, with ``ledger.events.register``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)

from ledger.actions import SignedAction
from ledger.events import Payload, Sha256Hex, register, register_check
from ledger.view import LedgerView

__all__ = [
    "ROLES",
    "AccessRead",
    "ColumnSummary",
    "DatasetRegistered",
    "IdentityRegistered",
    "KeyAdded",
    "KeyRevoked",
    "KeyRotated",
    "LedgerCreated",
    "PolicyPublished",
    "Role",
    "SubjectErased",
]

Origin = Annotated[str, StringConstraints(pattern=r"^[^\s+\x00-\x1f\x7f]{1,255}$")]
"""A schema-less URL-like log name, e.g. ``example.com/credit-risk``; no spaces or '+'."""

VKey = Annotated[str, StringConstraints(pattern=r"^[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*$")]
"""A C2SP verifier key: ``<name>+<8 hex key id>+<base64(type || public key)>``."""

Text = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,254}$")]
B64Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{85}[AQgw]==$")]  # canonical base64 only

Role = Literal[
    "admin", "data-steward", "model-developer", "validator", "model-risk",
    "deployer", "dpo", "auditor", "service",
]
ROLES: tuple[str, ...] = Role.__args__  # type: ignore[attr-defined]


def _log_key(vkey: str, origin: str) -> None:
    """A checkpoint key must be an Ed25519 note key (type 0x01) named by the origin."""
    from ledger.errors import InputError
    from ledger.note import Verifier

    try:
        key = Verifier.parse(vkey)
    except InputError as exc:
        raise ValueError(str(exc)) from None
    if key.kind != "ed25519":
        raise ValueError(f"{vkey!r} is a {key.kind} key; a checkpoint key must be Ed25519 (type 0x01)")
    if key.name != origin:
        raise ValueError(f"key name {key.name!r} must be the origin {origin!r}")


@register("ledger.created")
class LedgerCreated(Payload):
    """Genesis: names the log and the key that signs its checkpoints."""

    origin: Origin
    verifier_key: VKey
    format: Literal["mlledger/v1"] = "mlledger/v1"
    software: Text

    @model_validator(mode="after")
    def _key_is_the_origins(self) -> Self:
        _log_key(self.verifier_key, self.origin)
        return self


@register("key.added")
class KeyAdded(SignedAction):
    """A further trusted key: a checkpoint key for this log, or a witness."""

    verifier_key: VKey
    purpose: Literal["checkpoint", "witness"]

    @model_validator(mode="after")
    def _key_type_fits_purpose(self) -> Self:
        from ledger.errors import InputError
        from ledger.note import Verifier

        try:
            key = Verifier.parse(self.verifier_key)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        want = "cosignature" if self.purpose == "witness" else "ed25519"
        if key.kind != want:
            raise ValueError(f"a {self.purpose} key must be a {want} key (vkey type "
                             f"{'0x04' if want == 'cosignature' else '0x01'}), not {key.kind}")
        return self


@register("key.rotated")
class KeyRotated(SignedAction):
    """The checkpoint key changes; the old key signs the hand-over.

    ``old_key_signature`` is base64 Ed25519 by the old key over
    ``"mlledger/key-rotation/v1\\n" + origin + "\\n" + old_key + "\\n" + new_key + "\\n"``.
    """

    old_key: VKey
    new_key: VKey
    old_key_signature: B64Signature


@register("key.revoked")
class KeyRevoked(SignedAction):
    """A key is no longer trusted for anything it signs after this entry."""

    verifier_key: VKey
    reason: Literal["compromised", "superseded", "retired"]
    note: Text | None = None


@register("identity.registered")
class IdentityRegistered(Payload):
    """A person or service, its roles and its Ed25519 public key (raw 32 bytes, base64)."""

    GOVERNED: ClassVar[bool] = True  # authenticated by its admin signature (signed_by)
    #: Unsigned registrations keep their pre-signature bytes, version 1 ones theirs.
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"signed_by", "signature", "signature_version"})
    name: Identifier
    roles: Annotated[list[Role], Field(min_length=1)]
    public_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]
    display_name: Text | None = None
    #: The admin who vouches for it ("ledger-key" for the genesis admin, the log key's owner)
    #: and their signature over ``identity_message`` (policies._approvals). Governance trusts
    #: only identities whose registration carries a valid admin signature.
    signed_by: Identifier | None = None
    signature: B64Signature | None = None
    #: 2: the signature covers ``display_name`` too (FORMAT.md 3.7); absent: version 1, which did not.
    signature_version: Literal[2] | None = None

    @model_validator(mode="after")
    def _unique_roles(self) -> Self:
        if len(set(self.roles)) != len(self.roles):
            raise ValueError("roles must not repeat")
        if (self.signed_by is None) != (self.signature is None):
            raise ValueError("signed_by and signature go together")
        if self.signature_version is not None and self.signature is None:
            raise ValueError("signature_version needs a signature")
        return self



@register("policy.published")
class PolicyPublished(SignedAction):
    """A policy document bound to a stage; ``policy_hash`` is SHA-256 of ``body`` (UTF-8)."""

    policy_hash: Sha256Hex
    stage: Identifier
    name: Identifier
    body: Annotated[str, StringConstraints(min_length=1)]

    @model_validator(mode="after")
    def _hash_matches(self) -> Self:
        actual = hashlib.sha256(self.body.encode("utf-8")).hexdigest()
        if actual != self.policy_hash:
            raise ValueError(f"policy_hash {self.policy_hash} is not SHA-256 of body ({actual})")
        return self


class ColumnSummary(Payload):
    """One column of a dataset: type and summary statistics, never raw values."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    dtype: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    nullable: bool
    stats: dict[str, JsonValue] = Field(default_factory=dict)


@register("dataset.registered")
class DatasetRegistered(SignedAction):
    """A dataset by content hash; the data itself stays where it is."""

    name: Identifier
    sha256: Sha256Hex
    format: Literal["csv", "parquet"]
    size_bytes: Annotated[int, Field(ge=0)]
    rows: Annotated[int, Field(ge=0)]
    role: Literal["train", "eval", "reference", "production", "outputs"]
    columns: Annotated[list[ColumnSummary], Field(min_length=1)]
    sensitive_features: list[str] = Field(default_factory=list)
    target: str | None = None
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]

    @model_validator(mode="after")
    def _declared_columns_exist(self) -> Self:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        for col in [*self.sensitive_features, *([self.target] if self.target else [])]:
            if col not in names:
                raise ValueError(f"declared column {col!r} is not among the dataset's columns")
        return self


KeyId = Annotated[str, StringConstraints(pattern=r"^[sd]k-[0-9a-f]{32}$")]
"""A key of the erasable key table: ``sk-`` per data subject, ``dk-`` per deployment."""


@register("subject.erased")
class SubjectErased(SignedAction):
    """A data subject's key destroyed (GDPR Art. 17): their commitments become unlinkable.

    ``request_ref`` is the erasure request's reference (never the subject's identity);
    ``legal_ground`` e.g. ``GDPR Art. 17(1)(a)``.
    """

    key_id: KeyId
    request_ref: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    legal_ground: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    reason: Text


@register_check("subject.erased")
def _check_erasure(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    """Only a live subject key may be erased, and only once."""
    from ledger.errors import InputError

    key_id = payload["key_id"]
    if not key_id.startswith("sk-"):
        raise InputError(f"erasure refused: {key_id} is a deployment key, not a data subject's")
    earlier = view.of_kind("subject.erased", subject=f"key:{key_id}")
    if earlier:
        raise InputError(f"erasure refused: key {key_id} was already erased at seq {earlier[0].seq}")
    status = view.key_status(key_id)
    if status != "live":
        raise InputError(f"erasure refused: key {key_id} is {status} in this ledger's key table")


@register("access.read")
class AccessRead(SignedAction):
    """A read of sensitive records (HIPAA 164.312(b)): who read what. Appended *before* the read,
    so in an access-controlled ledger the access guard refuses a reader without the role."""

    what: Literal["bundle", "report", "inputs"]
    target: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    detail: Text | None = None
