"""Which key may sign a checkpoint of a given size: pure, over the log's key events.

Invariants (docs/FORMAT.md section 5):
1. Entry 0 (``ledger.created``) names the first checkpoint key; it is valid from size 1.
2. ``key.rotated`` at seq r hands over from ``old_key`` to ``new_key``: the old key's
   signature over ``rotation_message(origin, old, new)`` must verify, ``old_key``
   must be a key that was current at r, and both keys must be named by the origin.
   The new key signs checkpoints of size > r; the old key none of size > r.
3. ``key.revoked`` at seq r: that key signs no checkpoint of size > r, for any
   purpose. Earlier checkpoints it signed stay valid.
4. ``key.added`` with purpose ``checkpoint`` at seq r adds a key valid for sizes > r.
   It is trusted only if the verifier trusts it directly; rotation is the only way
   trust is handed over by signature.
5. A key is trusted when the verifier was given it, or when it was reached by a
   valid rotation from a trusted key.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ledger.errors import InputError, IntegrityError, SignatureError
from ledger.note import Signer, Verifier

__all__ = ["KeyHistory", "LogKey", "rotation_message", "sign_rotation"]

ROTATION_DOMAIN: Final = b"mlledger/key-rotation/v1\n"


def rotation_message(origin: str, old_key: str, new_key: str) -> bytes:
    """What the old key signs to hand over to the new key (domain-separated)."""
    return ROTATION_DOMAIN + f"{origin}\n{old_key}\n{new_key}\n".encode()


def sign_rotation(origin: str, old: Signer, new_key: str) -> str:
    """Base64 of the old key's signature over the rotation message."""
    return base64.b64encode(old.sign(rotation_message(origin, old.verifier_key, new_key))).decode()


@dataclass
class LogKey:
    """One checkpoint key and the range of tree sizes it may sign."""

    verifier: Verifier
    valid_from: int  # smallest tree size it may sign
    valid_until: int | None = None  # largest tree size it may sign, if ended
    ended_by: str | None = None  # "rotated at seq r" / "revoked at seq r (reason)"
    rotated_from: str | None = None  # the vkey that handed over to it

    @property
    def vkey(self) -> str:
        return str(self.verifier)


@dataclass
class KeyHistory:
    """The checkpoint keys of one log, built from its key events in seq order."""

    origin: str
    keys: dict[str, LogKey] = field(default_factory=dict)
    current: str | None = None

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[int, str, Mapping[str, Any]]]) -> KeyHistory:
        """Build from ``(seq, kind, payload)`` of entry 0 and every ``key.*`` entry."""
        history: KeyHistory | None = None
        for seq, kind, payload in entries:
            if history is None:
                if seq != 0 or kind != "ledger.created":
                    raise IntegrityError("key history must start with entry 0, ledger.created")
                origin = str(payload["origin"])
                first = _verifier(payload["verifier_key"], 0)
                history = cls(origin)
                history._add(LogKey(first, 1), seq, current=True)
                continue
            history.apply(seq, kind, payload)
        if history is None:
            raise IntegrityError("the log has no entries; there is no key history")
        return history

    def apply(self, seq: int, kind: str, payload: Mapping[str, Any]) -> None:
        """Apply one key event at ``seq``; other kinds are ignored."""
        if kind == "key.rotated":
            old, new = str(payload["old_key"]), _verifier(payload["new_key"], seq)
            current = self.keys.get(old)
            if current is None or current.valid_until is not None:
                raise IntegrityError(f"entry {seq}: key.rotated from {old!r}, which is not a current key")
            sig = _b64(payload["old_key_signature"], seq)
            if not current.verifier.verify(rotation_message(self.origin, old, str(new)), sig):
                raise IntegrityError(f"entry {seq}: key.rotated is not signed by the old key {old!r}")
            current.valid_until, current.ended_by = seq, f"rotated at seq {seq}"
            self._add(LogKey(new, seq + 1, rotated_from=old), seq, current=self.current == old)
        elif kind == "key.revoked":
            vkey = str(payload["verifier_key"])
            key = self.keys.get(vkey)
            if key is not None:
                end = seq if key.valid_until is None else min(key.valid_until, seq)
                key.valid_until, key.ended_by = end, f"revoked at seq {seq} ({payload['reason']})"
                if self.current == vkey:
                    self.current = None
        elif kind == "key.added" and payload.get("purpose") == "checkpoint":
            self._add(LogKey(_verifier(payload["verifier_key"], seq), seq + 1), seq, current=True)

    def _add(self, key: LogKey, seq: int, *, current: bool) -> None:
        if key.verifier.name != self.origin:
            raise IntegrityError(
                f"entry {seq}: checkpoint key {key.vkey!r} is not named by the origin {self.origin!r}"
            )
        if key.verifier.kind != "ed25519":
            raise IntegrityError(f"entry {seq}: checkpoint key {key.vkey!r} is not an Ed25519 note key")
        if key.vkey in self.keys:
            raise IntegrityError(f"entry {seq}: key {key.vkey!r} was already used by this log")
        self.keys[key.vkey] = key
        if current:
            self.current = key.vkey

    def trusted(self, anchors: Sequence[Verifier]) -> set[str]:
        """The keys trusted given ``anchors``: the anchors and their rotation successors."""
        trusted = {str(a) for a in anchors if str(a) in self.keys}
        changed = True
        while changed:
            changed = False
            for vkey, key in self.keys.items():
                if vkey not in trusted and key.rotated_from in trusted:
                    trusted.add(vkey)
                    changed = True
        return trusted

    def signer_for(self, size: int, signed_by: Sequence[str]) -> LogKey:
        """The key among ``signed_by`` allowed to sign a checkpoint of ``size``.

        Raises ``SignatureError`` naming why each candidate is not allowed.
        """
        reasons = []
        for vkey in signed_by:
            key = self.keys.get(vkey)
            if key is None:
                reasons.append(f"{vkey} is not a key of this log")
            elif size < key.valid_from:
                reasons.append(f"{vkey} was only introduced for sizes >= {key.valid_from}")
            elif key.valid_until is not None and size > key.valid_until:
                reasons.append(f"{vkey} was {key.ended_by}; it cannot sign size {size}")
            else:
                return key
        raise SignatureError(
            f"checkpoint of size {size} is not signed by a key valid at that size: " + "; ".join(reasons)
        )

    def current_key(self) -> LogKey:
        if self.current is None:
            raise InputError(
                "the log has no current checkpoint key (it was revoked); add one with "
                "'mlledger key add --purpose checkpoint'"
            )
        return self.keys[self.current]


def _verifier(text: object, seq: int) -> Verifier:
    try:
        return Verifier.parse(str(text))
    except InputError as exc:
        raise IntegrityError(f"entry {seq}: {exc}") from None


def _b64(text: object, seq: int) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise IntegrityError(f"entry {seq}: old_key_signature is not base64") from None
