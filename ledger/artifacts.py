"""A content-addressed artifact store: files named by the SHA-256 of their bytes.

``<root>/sha256/<first two hex>/<hex>``. Writes go to a temporary file that is
fsynced and renamed into place, so a reader never sees a partial artifact. Reads
re-hash the bytes and refuse a file whose content no longer matches its name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ledger._fsutil import atomic_write
from ledger.errors import InputError, IntegrityError

__all__ = ["ArtifactStore"]

_HEX = frozenset("0123456789abcdef")


class ArtifactStore:
    """Artifacts under ``root`` (``<ledger home>/artifacts`` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise InputError(f"{digest!r} is not a lowercase SHA-256 hex digest")
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its SHA-256 hex. Idempotent."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
        return digest

    def get(self, digest: str) -> bytes:
        """The artifact's bytes, re-hashed; IntegrityError if they changed."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"artifact {digest} is not in the store at {self.root}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(f"artifact {path} was modified: its SHA-256 is {actual}, not {digest}")
        return data

    def __contains__(self, digest: str) -> bool:
        return self.path(digest).exists()
