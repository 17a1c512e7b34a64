"""Electronic signatures on gate decisions (21 CFR 11.50 / 11.70 pattern).

An approval binds the signer's printed name, the date and time, and the meaning of
the signature to the exact record it signs: the ``gate.evaluated`` entry's seq and
leaf hash, in this log (origin). The Ed25519 signature is domain-separated:

    "mlledger/approval/v1" LF origin LF decision_seq LF decision_leaf_hash LF
    signer LF meaning LF signed_at LF

A signature therefore cannot be replayed onto another decision, another log, or
with another meaning or time. Verification is pure.
"""

from __future__ import annotations

import base64
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import SignatureError

__all__ = ["APPROVAL_DOMAIN", "GENESIS_ADMIN", "IDENTITY_DOMAIN", "IDENTITY_DOMAIN_V2", "approval_message",
           "identity_message", "sign_approval", "verify_approval"]

APPROVAL_DOMAIN: Final = b"mlledger/approval/v1\n"
IDENTITY_DOMAIN: Final = b"mlledger/identity/v1\n"
#: Version 2 also covers ``display_name``; it signs canonical JSON, so no field can run into another.
IDENTITY_DOMAIN_V2: Final = b"mlledger/identity/v2\n"
#: ``signed_by`` of a registration vouched for by the log key's owner (the genesis admin).
GENESIS_ADMIN: Final = "ledger-key"


def identity_message(origin: str, name: str, roles: list[str], public_key: str, signed_by: str, *,
                     display_name: str | None = None, version: int = 2) -> bytes:
    """What an admin signs to register an identity (domain-separated, bound to the log).

    Version 1 (registrations without ``signature_version``) did not cover ``display_name``.
    """
    if version == 1:
        return IDENTITY_DOMAIN + f"{origin}\n{name}\n{','.join(sorted(roles))}\n{public_key}\n{signed_by}\n".encode()
    from ledger.canonical import encode

    return IDENTITY_DOMAIN_V2 + encode({"origin": origin, "name": name, "roles": sorted(roles),
                                        "public_key": public_key, "signed_by": signed_by,
                                        "display_name": display_name})


def approval_message(origin: str, decision_seq: int, decision_leaf_hash: str, signer: str,
                     meaning: str, signed_at: str) -> bytes:
    return APPROVAL_DOMAIN + (
        f"{origin}\n{decision_seq}\n{decision_leaf_hash}\n{signer}\n{meaning}\n{signed_at}\n"
    ).encode()


def sign_approval(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def verify_approval(public_key_b64: str, message: bytes, signature_b64: str, *, signer: str) -> None:
    """Raise ``SignatureError`` naming the signer unless the signature verifies."""
    try:
        pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        pub.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"the signature of {signer} does not verify with their registered key "
                             f"({type(exc).__name__})") from None
