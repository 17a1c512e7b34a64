"""tlog-proof files (c2sp.org/tlog-proof@v1): an entry's inclusion proof with the signed checkpoint
it is proven against, verifiable offline with only the log's public key.

Format, byte for byte: ``c2sp.org/tlog-proof@v1\\n[extra <base64>\\n]index <n>\\n<base64 hash>\\n*\\n``
followed verbatim by the signed checkpoint note (``ledger.note``). Parsing is strict and canonical
as in ``ledger.note``; ``extra`` is opaque and not authenticated. The module is pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.errors import InputError
from ledger.note import _DECIMAL, _MAX_U64, Checkpoint, Note, Verifier, _b64, _text, _unb64, open_checkpoint

__all__ = ["PROOF_HEADER", "TlogProof", "format_proof", "parse_proof", "verify_entry_proof"]

PROOF_HEADER = "c2sp.org/tlog-proof@v1"


@dataclass(frozen=True)
class TlogProof:
    """A c2sp.org/tlog-proof@v1 file. ``extra`` is opaque and NOT authenticated."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not 0 <= self.index <= _MAX_U64:
            raise InputError(f"tlog-proof: index {self.index!r} is not in 0..2^64-1")
        if len(self.hashes) > 64 or any(len(h) != 32 for h in self.hashes):
            raise InputError("tlog-proof: expected at most 64 proof hashes of 32 bytes each")
        if self.extra is not None and not self.extra:
            raise InputError("tlog-proof: extra data, when present, must be non-empty")
        cp = Checkpoint.parse_body(Note.parse(self.checkpoint).body)
        if self.index >= cp.size:
            raise InputError(f"tlog-proof: index {self.index} is not below tree size {cp.size}")

    def to_bytes(self) -> bytes:
        head = [PROOF_HEADER] + ([f"extra {_b64(self.extra)}"] if self.extra else [])
        head += [f"index {self.index}", *(_b64(h) for h in self.hashes)]
        return ("\n".join(head) + "\n\n").encode() + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> TlogProof:
        split = data.find(b"\n\n")
        if split < 0:
            raise InputError("tlog-proof: no blank line before the checkpoint")
        lines = _text(data[:split], "tlog-proof").split("\n")
        if lines[0] != PROOF_HEADER:
            raise InputError(f"tlog-proof line 1: expected {PROOF_HEADER!r}, got {lines[0]!r}")
        pos, extra = 1, None
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = _unb64(lines[pos][6:], "tlog-proof line 2 (extra data)")
            pos += 1
        got = lines[pos] if pos < len(lines) else ""
        if not got.startswith("index ") or not _DECIMAL.fullmatch(got[6:]):
            raise InputError(
                f"tlog-proof line {pos + 1}: expected 'index <decimal without leading zeros>', "
                f"got {got!r}"
            )
        hashes = []
        for i in range(pos + 1, len(lines)):
            h = _unb64(lines[i], f"tlog-proof line {i + 1} (proof hash)")
            if len(h) != 32:
                raise InputError(f"tlog-proof line {i + 1} (proof hash): {len(h)} bytes, not 32")
            hashes.append(h)
        return cls(int(got[6:]), tuple(hashes), data[split + 2 :], extra)


def format_proof(
    index: int, proof: Sequence[bytes], checkpoint_note: bytes, *, extra: bytes | None = None
) -> bytes:
    """A tlog-proof@v1 file; checkpoint_note is embedded verbatim."""
    return TlogProof(index, tuple(proof), checkpoint_note, extra).to_bytes()


def parse_proof(data: bytes) -> tuple[int, list[bytes], bytes]:
    """(index, proof hashes, checkpoint note) of a tlog-proof@v1 file (see TlogProof.extra)."""
    p = TlogProof.parse(data)
    return p.index, list(p.hashes), p.checkpoint


def verify_entry_proof(proof: bytes, entry: bytes, log_key: Verifier) -> tuple[int, Checkpoint]:
    """Check a tlog-proof for an entry's stored bytes, offline: (seq, the checkpoint) or an error.

    1. the checkpoint is signed by the trusted log key, for its origin; 2. the entry is the one
    at the proof's index (its seq field); 3. its leaf hash is included in the checkpoint's tree.
    """
    from ledger import merkle
    from ledger.errors import IntegrityError

    index, hashes, note = parse_proof(proof)
    if entry.endswith(b"\n"):
        entry = entry[:-1]
    cp = open_checkpoint(note, log_key)
    if b',"seq":' + str(index).encode() + b',"subject":' not in entry:
        raise IntegrityError(f"the entry is not entry {index} (its seq field differs)")
    merkle.verify_inclusion(merkle.leaf_hash(entry), index, cp.size, hashes, cp.root)
    return index, cp
