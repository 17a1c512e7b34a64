"""The exception hierarchy: one root, split by cause.

The CLI maps each class to an exit code (DESIGN.md section 9); nothing else
branches on message text.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "GateDenied",
    "InputError",
    "IntegrityError",
    "LedgerNotFound",
    "MlledgerError",
    "PolicyError",
    "ProofError",
    "SignatureError",
    "StorageError",
]


class MlledgerError(Exception):
    """Root of every error mlledger raises on purpose."""


class InputError(MlledgerError):
    """Bad user input: a malformed event, an unknown kind, an invalid field."""


class LedgerNotFound(InputError):
    """The location holds no mlledger ledger (missing, or something else)."""


class IntegrityError(MlledgerError):
    """Stored or supplied data was tampered with or is inconsistent."""


class ProofError(IntegrityError):
    """A Merkle inclusion or consistency proof does not verify."""


class SignatureError(IntegrityError):
    """A signed note or cosignature does not verify under a trusted key."""


class StorageError(MlledgerError):
    """The database failed or refused an operation (locked, unreachable, not a ledger)."""


class PolicyError(MlledgerError):
    """A governance decision could not be made (bad policy, missing evidence)."""


class GateDenied(PolicyError):
    """A policy gate denied the action."""


class BackendError(MlledgerError):
    """A training or serving engine failed."""
