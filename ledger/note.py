"""Signed notes, checkpoints and witness cosignatures (C2SP formats); tlog-proof files are
``ledger.tlog_proof``.

Formats, byte for byte (c2sp.org/signed-note, tlog-checkpoint, tlog-cosignature):

* key id:      ``SHA-256(name || 0x0A || type || 32-byte Ed25519 public key)[:4]``; type 0x01 is
  a note signature, 0x04 a timestamped witness cosignature (``cosignature/v1``).
* vkey:        ``<name>+<key id as 8 lowercase hex>+<base64(type || public key)>``.
* signed note: ``<text>`` + ``\\n`` + one or more lines ``U+2014 U+0020 <key name> U+0020
  base64(key id || signature) \\n``. The text is non-empty and ends in ``\\n``; it is split from
  the signatures at the *last* blank line, so it may itself contain blank lines. A note
  signature is Ed25519 over the text (up to and including its final newline).
* checkpoint:  text ``<origin>\\n<tree size>\\n<base64 32-byte root hash>\\n`` then optional
  non-empty extension lines, kept verbatim. The log's key name is the origin.
* cosignature: signature bytes ``u64be(timestamp) || Ed25519(m)`` where
  ``m = "cosignature/v1\\ntime <timestamp>\\n" || checkpoint text``; timestamp <= 2^63-1.

Invariants:

* Parsing is strict and canonical (UTF-8, no control characters but ``\\n``, canonical padded
  base64, decimals without sign or leading zeros, 32-byte hashes), so every value has exactly
  one encoding and ``Note.parse(b).to_bytes() == b``.
* A key's type byte is bound to its use: 0x01 keys only verify note signatures and 0x04 keys
  only cosignatures; signatures from unknown keys are ignored, a failing signature from a
  known key rejects the note, and a note needs at least one valid signature from a known key.
* A checkpoint is opened only if its origin, the log key's name and the expected origin agree.
* A cosignature quorum counts distinct witness public keys.
* Malformed text raises InputError; untrusted or invalid signatures raise SignatureError.
* The module is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import InputError, SignatureError

__all__ = [
    "MAX_SIGNATURES",
    "Checkpoint",
    "KeyKind",
    "Note",
    "NoteSignature",
    "Signer",
    "Verifier",
    "add_signatures",
    "cosign",
    "cosignature_message",
    "cosignature_time",
    "key_id",
    "open_checkpoint",
    "sign_checkpoint",
    "sign_note",
    "verify_cosignatures",
    "verify_note",
    "vkey_for",
]

KeyKind = Literal["ed25519", "cosignature"]
MAX_SIGNATURES = 100
_TYPE: dict[KeyKind, int] = {"ed25519": 0x01, "cosignature": 0x04}
_KIND: dict[int, KeyKind] = {0x01: "ed25519", 0x04: "cosignature"}
_DASH = "\u2014 "
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_MAX_U64 = 2**64 - 1
_MAX_TIME = 2**63 - 1


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what}: invalid base64 {text!r}") from None
    if _b64(raw) != text:
        raise InputError(f"{what}: non-canonical base64 {text!r}")
    return raw


def _text(data: bytes, what: str) -> str:
    """Decode UTF-8 with no ASCII control character other than newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{what}: invalid UTF-8 at byte {exc.start} (line {line})") from None
    bad = _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise InputError(f"{what}: control character {bad.group()!r} on line {line}")
    return text


def _body_text(body: bytes, what: str) -> str:
    if not body.endswith(b"\n"):
        raise InputError(f"{what}: text must be non-empty and end with a newline")
    return _text(body, what)


def _check_name(name: str, what: str) -> None:
    if not name or "+" in name or any(c.isspace() or c < " " for c in name):
        raise InputError(f"{what} {name!r}: must be non-empty, without spaces, '+' or controls")


def key_id(name: str, public_key: bytes, sig_type: int) -> bytes:
    """SHA-256(name || 0x0A || sig_type || public_key)[:4] (signed-note key id)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def vkey_for(name: str, public_key: bytes, *, cosignature: bool = False) -> str:
    """The vkey text for an Ed25519 key: type 0x01 (note) or 0x04 (cosignature)."""
    return str(Verifier.of(name, public_key, "cosignature" if cosignature else "ed25519"))


@dataclass(frozen=True)
class Verifier:
    """A trusted public key, as named in a vkey; ``kind`` is fixed by the vkey type byte."""

    name: str
    key_id: bytes
    public_key: bytes
    kind: KeyKind = "ed25519"

    def __post_init__(self) -> None:
        _check_name(self.name, "key name")
        if self.kind not in _TYPE:
            raise InputError(f"key {self.name}: unknown kind {self.kind!r}")
        if len(self.public_key) != 32:
            raise InputError(f"key {self.name}: public key is {len(self.public_key)} bytes, not 32")
        want = key_id(self.name, self.public_key, _TYPE[self.kind])
        if self.key_id != want:
            raise InputError(
                f"key {self.name}: key id {self.key_id.hex()} does not match the key "
                f"(expected {want.hex()})"
            )

    @classmethod
    def of(cls, name: str, public_key: bytes, kind: KeyKind = "ed25519") -> Verifier:
        _check_name(name, "key name")
        return cls(name, key_id(name, public_key, _TYPE.get(kind, 0)), public_key, kind)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        # Never quote the input: a private key passed by mistake must not reach a log.
        parts = vkey.split("+", 2)
        if len(parts) != 3 or any(c.isspace() for c in vkey) or len(vkey) > 600:
            raise InputError(
                "not a vkey (verifier key): expected <name>+<8 hex key id>+<base64 key> on one line"
            )
        name, hex_id, b64 = parts
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise InputError(f"vkey {name!r}: the key id is not 8 lowercase hex digits")
        raw = _unb64(b64, f"vkey {name!r}")
        if len(raw) != 33:
            raise InputError(f"vkey {name!r}: key is {len(raw)} bytes, expected 33 (type + key)")
        kind = _KIND.get(raw[0])
        if kind is None:
            raise InputError(
                f"vkey {name!r}: unsupported key type 0x{raw[0]:02x} "
                "(expected 0x01 Ed25519 or 0x04 Ed25519 cosignature)"
            )
        return cls(name, bytes.fromhex(hex_id), raw[1:], kind)

    def __str__(self) -> str:
        key = _b64(bytes([_TYPE[self.kind]]) + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{key}"

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Raw Ed25519 check of ``sig`` over ``msg``; callers apply domain separation."""
        return self._ed25519(msg, sig)

    def _ed25519(self, msg: bytes, sig: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(sig, msg)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, eq=False)
class Signer:
    """A named Ed25519 private key; its repr and API never reveal the private bytes.

    ``sign`` is the raw primitive; use sign_note / sign_checkpoint / cosign, which apply the
    domain separation of the key's kind.
    """

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)
    kind: KeyKind = "ed25519"

    def __post_init__(self) -> None:
        _check_name(self.name, "key name")
        if self.kind not in _TYPE:
            raise InputError(f"key {self.name}: unknown kind {self.kind!r}")

    @classmethod
    def from_seed(cls, name: str, seed: bytes, *, cosignature: bool = False) -> Signer:
        if len(seed) != 32:
            raise InputError(f"key {name}: Ed25519 seed is {len(seed)} bytes, not 32")
        key = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(name, key, "cosignature" if cosignature else "ed25519")

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def verifier(self) -> Verifier:
        return Verifier.of(self.name, self.public_key, self.kind)

    @property
    def key_id(self) -> bytes:
        return self.verifier.key_id

    @property
    def verifier_key(self) -> str:
        return str(self.verifier)

    def sign(self, msg: bytes) -> bytes:
        return self.private_key.sign(msg)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id and the signature bytes after the id."""

    name: str
    key_id: bytes
    sig: bytes

    def __post_init__(self) -> None:
        _check_name(self.name, "signature key name")
        if len(self.key_id) != 4 or not self.sig:
            raise InputError(f"signature by {self.name}: need a 4-byte key id and a signature")

    @classmethod
    def parse_line(cls, line: str, where: str = "signature line") -> NoteSignature:
        if not line.startswith(_DASH):
            raise InputError(f"{where}: expected '\u2014 <key name> <base64 signature>'")
        name, sep, b64 = line[len(_DASH) :].partition(" ")
        if not sep or not b64:
            raise InputError(f"{where}: no base64 signature after the key name")
        _check_name(name, f"{where}: key name")
        raw = _unb64(b64, f"{where}: signature")
        if len(raw) < 5:
            raise InputError(f"{where}: signature is {len(raw)} bytes, need key id + signature")
        return cls(name, raw[:4], raw[4:])

    def line(self) -> str:
        return f"{_DASH}{self.name} {_b64(self.key_id + self.sig)}\n"


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) signed note."""

    body: bytes
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _body_text(self.body, "note")
        if not self.signatures:
            raise InputError("note: no signature lines")
        if len(self.signatures) > MAX_SIGNATURES:
            raise InputError(
                f"note: {len(self.signatures)} signature lines, at most {MAX_SIGNATURES} accepted"
            )

    @classmethod
    def parse(cls, text: bytes) -> Note:
        s = _text(text, "note")
        split = s.rfind("\n\n")
        if split < 0:
            raise InputError("note: no blank line between the text and the signature lines")
        body, block = s[: split + 1], s[split + 2 :]
        first = body.count("\n") + 2
        if not block.endswith("\n"):
            n = first + block.count("\n")
            raise InputError(f"note line {n}: missing signature line or final newline")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise InputError(
                f"note: {len(lines)} signature lines, at most {MAX_SIGNATURES} accepted"
            )
        sigs = (
            NoteSignature.parse_line(ln, f"note line {first + i}") for i, ln in enumerate(lines)
        )
        return cls(body.encode(), tuple(sigs))

    def to_bytes(self) -> bytes:
        return self.body + b"\n" + "".join(s.line() for s in self.signatures).encode()


def cosignature_message(timestamp: int, body: bytes) -> bytes:
    """The message an Ed25519 cosigner signs (tlog-cosignature, "cosignature/v1")."""
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def cosignature_time(sig: NoteSignature) -> int:
    """The timestamp inside an Ed25519 cosignature (NOT verified by this call)."""
    if len(sig.sig) != 8 + 64:
        raise InputError(f"signature by {sig.name}: {len(sig.sig)} bytes, not a cosignature (72)")
    return int.from_bytes(sig.sig[:8], "big")


def _check(v: Verifier, body: bytes, sig: bytes) -> int | None:
    """Verify one signature under v's kind; its timestamp (0 for notes) or None if invalid."""
    if v.kind == "ed25519":
        return 0 if len(sig) == 64 and v._ed25519(body, sig) else None
    if len(sig) != 72 or int.from_bytes(sig[:8], "big") > _MAX_TIME:
        return None
    ts = int.from_bytes(sig[:8], "big")
    return ts if v._ed25519(cosignature_message(ts, body), sig[8:]) else None


def _verified(note: Note, verifiers: Sequence[Verifier]) -> list[tuple[Verifier, int]]:
    # 1. Index the trusted keys by (name, key id); two different keys there is ambiguous.
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        if known.setdefault((v.name, v.key_id), v) != v:
            raise InputError(f"ambiguous trusted keys: two keys named {v.name}+{v.key_id.hex()}")
    good: dict[tuple[str, bytes], tuple[Verifier, int]] = {}
    for s in note.signatures:
        # 2. Ignore lines whose (name, key id) is not a trusted key.
        key = known.get((s.name, s.key_id))
        if key is None:
            continue
        # 3. A known key's signature must verify, else the whole note is rejected.
        ts = _check(key, note.body, s.sig)
        if ts is None:
            raise SignatureError(f"invalid signature for known key {s.name}+{s.key_id.hex()}")
        # 4. A key that signs twice counts once (its first line).
        good.setdefault((s.name, s.key_id), (key, ts))
    return list(good.values())


def verify_note(note: bytes, verifiers: Sequence[Verifier]) -> tuple[Note, list[Verifier]]:
    """Parse and verify a note; return it with the trusted keys whose signatures verified."""
    n = Note.parse(note)
    good = _verified(n, verifiers)
    if not good:
        names = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in n.signatures)
        raise SignatureError(f"note has no valid signature from a trusted key (signed by {names})")
    return n, [v for v, _ in good]


def sign_note(body: bytes, signer: Signer) -> bytes:
    """A new note: body signed with a note (0x01) key."""
    _body_text(body, "note")
    if signer.kind != "ed25519":
        raise InputError(f"key {signer.name} is a cosignature (0x04) key, not a note key")
    sig = NoteSignature(signer.name, signer.key_id, signer.sign(body))
    return Note(body, (sig,)).to_bytes()


def add_signatures(note: bytes, lines: Sequence[str]) -> bytes:
    """Append signature lines (e.g. cosignatures) to a note; lines already present are kept once."""
    n = Note.parse(note)
    sigs = list(n.signatures)
    for i, line in enumerate(lines, 1):
        text = line[:-1] if line.endswith("\n") else line
        if "\n" in text:
            raise InputError(f"added signature {i}: must be a single line")
        s = NoteSignature.parse_line(text, f"added signature {i}")
        if s not in sigs:
            sigs.append(s)
    return Note(n.body, tuple(sigs)).to_bytes()


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint note text: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise InputError("checkpoint line 1 (origin): must be non-empty, one line, no controls")
        if isinstance(self.size, bool) or not 0 <= self.size <= _MAX_U64:
            raise InputError(f"checkpoint line 2 (tree size): {self.size!r} is not in 0..2^64-1")
        if len(self.root) != 32:
            raise InputError(f"checkpoint line 3 (root hash): {len(self.root)} bytes, expected 32")
        for i, ext in enumerate(self.extensions, 4):
            if not ext or "\n" in ext or _CONTROL.search(ext):
                raise InputError(f"checkpoint line {i} (extension): must be non-empty, one line")

    def body(self) -> bytes:
        lines = (self.origin, str(self.size), _b64(self.root), *self.extensions)
        return "".join(line + "\n" for line in lines).encode()

    @classmethod
    def parse_body(cls, body: bytes) -> Checkpoint:
        lines = _body_text(body, "checkpoint")[:-1].split("\n")
        if len(lines) < 3:
            raise InputError(f"checkpoint: {len(lines)} lines, expected origin, size and root hash")
        origin, size, root, *ext = lines
        if not _DECIMAL.fullmatch(size):
            raise InputError(
                f"checkpoint line 2 (tree size): expected decimal digits without sign or "
                f"leading zeros, got {size!r}"
            )
        return cls(origin, int(size), _unb64(root, "checkpoint line 3 (root hash)"), tuple(ext))


def sign_checkpoint(cp: Checkpoint, signer: Signer) -> bytes:
    """The signed checkpoint note; the log key must be named after the origin."""
    if signer.name != cp.origin:
        raise InputError(f"log key name {signer.name!r} differs from origin {cp.origin!r}")
    return sign_note(cp.body(), signer)


def open_checkpoint(note: bytes, log_key: Verifier, *, origin: str | None = None) -> Checkpoint:
    """Verify a checkpoint note signed by log_key and return its checkpoint."""
    # 1. The log key must be a note (0x01) key, never a cosignature key.
    if log_key.kind != "ed25519":
        raise SignatureError(f"log key {log_key.name} is a {log_key.kind} key, not a note key")
    # 2. The expected origin must be the log key's name.
    expected = log_key.name if origin is None else origin
    if expected != log_key.name:
        raise SignatureError(f"expected origin {expected!r} but the log key is {log_key.name!r}")
    # 3. Parse the note and the checkpoint text (syntax only; nothing is trusted yet).
    n = Note.parse(note)
    cp = Checkpoint.parse_body(n.body)
    # 4. Refuse another log's checkpoint (cross-log replay) before looking at signatures.
    if cp.origin != expected:
        raise SignatureError(f"checkpoint origin {cp.origin!r} is not expected origin {expected!r}")
    # 5. The log's signature must be present and valid.
    if not _verified(n, [log_key]):
        raise SignatureError(f"checkpoint {cp.origin!r} has no signature by its log key")
    return cp


def _checkpoint_body(checkpoint: Checkpoint | bytes) -> bytes:
    if isinstance(checkpoint, Checkpoint):
        return checkpoint.body()
    body = Note.parse(checkpoint).body if b"\n\n" in checkpoint else checkpoint
    Checkpoint.parse_body(body)
    return body


def cosign(checkpoint: Checkpoint | bytes, witness: Signer, timestamp: int) -> str:
    """A witness cosignature line ("\u2014 name base64\\n") over a checkpoint, or its note/text.

    The caller must already have verified the log's signature and consistency.
    """
    if witness.kind != "cosignature":
        raise InputError(f"key {witness.name} is a note (0x01) key, not a cosignature key")
    if isinstance(timestamp, bool) or not 0 <= timestamp <= _MAX_TIME:
        raise InputError(f"cosignature timestamp {timestamp!r} is not in 0..2^63-1")
    body = _checkpoint_body(checkpoint)
    sig = timestamp.to_bytes(8, "big") + witness.sign(cosignature_message(timestamp, body))
    return NoteSignature(witness.name, witness.key_id, sig).line()


def verify_cosignatures(
    note: bytes, witnesses: Sequence[Verifier], quorum: int, *, not_after: int | None = None
) -> list[tuple[Verifier, int]]:
    """The (witness, timestamp) pairs that validly cosigned; at least ``quorum`` of them.

    This does not check the log's own signature: use open_checkpoint for that.
    """
    # 1. Every witness key must be a cosignature (0x04) key.
    by_key: dict[bytes, Verifier] = {}
    for w in witnesses:
        if w.kind != "cosignature":
            raise SignatureError(f"witness key {w.name} is a {w.kind} key, not a cosignature key")
        # 2. One public key under two names would be counted twice: refuse it.
        if by_key.setdefault(w.public_key, w) != w:
            raise InputError(f"witnesses {by_key[w.public_key].name} and {w.name} share a key")
    # 3. The quorum must be reachable.
    if not 1 <= quorum <= len(by_key):
        raise InputError(f"quorum {quorum} is not in 1..{len(by_key)} (distinct witnesses)")
    # 4. The note must carry a checkpoint.
    n = Note.parse(note)
    Checkpoint.parse_body(n.body)
    # 5. Verify each line from a known witness; a bad one rejects the note.
    good = _verified(n, list(by_key.values()))
    # 6. Optionally refuse cosignatures dated after not_after.
    for w, ts in good:
        if not_after is not None and ts > not_after:
            raise SignatureError(f"cosignature by {w.name} is dated {ts}, after {not_after}")
    # 7. Count distinct witnesses against the quorum.
    if len(good) < quorum:
        raise SignatureError(f"cosignature quorum not met: {len(good)} valid of {quorum} required")
    return good
