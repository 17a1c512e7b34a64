"""Generate the ledger format vectors in ``tests/vectors/ledger/`` (docs/FORMAT.md, Appendix A).

A six-entry ledger is built **without a database**, with fixed timestamps, from the reference
encoder (``ledger.canonical.prefix`` / ``entry_bytes`` / ``format_ts``) and the payload models of
``ledger.kinds``. Everything else is computed from it: leaf hashes, the root of every size, every
inclusion and consistency proof, checkpoints signed by the key valid at their size (Ed25519 is
deterministic, so the notes are too), a witness cosignature at a fixed time, a proof file, and
the key history. Entries 0-2 are the worked example of FORMAT.md 2.8, so the vectors also
reproduce 2.8, 4.6, 6.7, 7.4 and 8.2; ``format_examples`` adds the rotation message of 3.5.

The ledger:

====  =====================  ================================================================
seq   kind                   notes
====  =====================  ================================================================
0     ledger.created         origin ``example.com/mlledger-test``, key of seed ``00 01 .. 1f``
1     identity.registered    alice (FORMAT.md 2.8)
2     policy.published       p0, same ``ts`` as entry 1 (FORMAT.md 2.8)
3     dataset.registered     floats in column stats (FORMAT.md 2.1 float forms)
4     key.rotated            to the key of seed ``01 02 .. 20``, signed by the old key
5     identity.registered    bob, non-ASCII and escaped characters in ``display_name``
====  =====================  ================================================================

Run ``python tests/vectors/make_ledger_vectors.py`` from the repository root to rewrite the
files; ``tests/unit/ledger/test_vectors.py`` checks that ``build()`` reproduces them exactly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Final

if __name__ == "__main__":  # run as a script: make ``ledger`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ledger import merkle
from ledger.canonical import GENESIS_PREV, entry_bytes, format_ts, parse_ts, prefix
from ledger.canonical import encode as canonical_encode
from ledger.events import Event
from ledger.keyhistory import KeyHistory, rotation_message, sign_rotation
from ledger.kinds import (
    ColumnSummary,
    DatasetRegistered,
    IdentityRegistered,
    KeyRotated,
    LedgerCreated,
    PolicyPublished,
)
from ledger.note import (
    Checkpoint,
    Signer,
    add_signatures,
    cosign,
    cosignature_message,
    sign_checkpoint,
)
from ledger.tlog_proof import format_proof

__all__ = ["OUT_DIR", "build", "main"]

OUT_DIR: Final = Path(__file__).resolve().parent / "ledger"

ORIGIN: Final = "example.com/mlledger-test"
SOFTWARE: Final = "mlledger 0.1.0"
#: The genesis checkpoint key (FORMAT.md 5.5) and the key it rotates to at seq 4.
LOG_KEY_0: Final = Signer.from_seed(ORIGIN, bytes(range(32)))
LOG_KEY_1: Final = Signer.from_seed(ORIGIN, bytes(range(1, 33)))
#: The witness of FORMAT.md 5.5 and the cosignature time of FORMAT.md 6.7.
WITNESS: Final = Signer.from_seed("example.com/mlledger-witness", bytes(range(32, 64)), cosignature=True)
COSIGNATURE_TIME: Final = 1700000000
#: The new key of the rotation example in FORMAT.md 3.5 (not used by the ledger itself).
ROTATION_EXAMPLE_KEY: Final = Signer.from_seed(ORIGIN, bytes(range(0x60, 0x80)))

#: Checkpoint sizes to sign, the proof file to write (index, size), and the cosigned size.
CHECKPOINT_SIZES: Final = (3, 6)
COSIGNED_SIZE: Final = 3
PROOF_FILE: Final = (1, 3)

_POLICY_BODY: Final = "name: p0\nrules:\n  - four_fifths: {}\n"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _events() -> list[tuple[str, Event]]:
    """(ts, event) for every entry, in seq order."""
    dataset_sha = hashlib.sha256(b"applicants-2026-01.csv").hexdigest()
    bob_key = _b64(Signer.from_seed("bob", bytes(range(64, 96))).public_key)
    return [
        ("2026-01-15T09:30:00.000000Z", Event(
            LedgerCreated(origin=ORIGIN, verifier_key=LOG_KEY_0.verifier_key, software=SOFTWARE),
            actor="system:init")),
        ("2026-01-15T09:30:01.250000Z", Event(
            IdentityRegistered(name="alice@example.com", roles=["validator"],
                               public_key="6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw="),
            actor="admin@example.com", subject="identity:alice@example.com")),
        ("2026-01-15T09:30:01.250000Z", Event(
            PolicyPublished(policy_hash=hashlib.sha256(_POLICY_BODY.encode()).hexdigest(),
                            stage="production", name="p0", body=_POLICY_BODY),
            actor="alice@example.com", subject="policy:p0")),
        ("2026-01-15T09:31:00.500000Z", Event(
            DatasetRegistered(
                name="applicants-2026-01", sha256=dataset_sha, format="csv", size_bytes=1048576,
                rows=12000, role="train", source="file:///data/applicants-2026-01.csv",
                columns=[
                    ColumnSummary(name="age", dtype="int64", nullable=False,
                                  stats={"min": 18, "max": 90, "mean": 41.5, "std": 0.1 + 0.2}),
                    ColumnSummary(name="income", dtype="float64", nullable=True,
                                  stats={"min": -0.0, "max": 1e16, "mean": 1234567890123456.8,
                                         "missing_rate": 1e-07, "tiny": 5e-324, "total": 1e15,
                                         "rate": 9.999e-05, "one": 1.0}),
                    ColumnSummary(name="sex", dtype="category", nullable=False,
                                  stats={"categories": ["f", "m"]}),
                    ColumnSummary(name="y", dtype="int64", nullable=False),
                ],
                sensitive_features=["sex"], target="y"),
            actor="steward@example.com", subject=f"dataset:sha256:{dataset_sha}")),
        ("2026-01-15T09:32:00.000000Z", Event(
            KeyRotated(old_key=LOG_KEY_0.verifier_key, new_key=LOG_KEY_1.verifier_key,
                       old_key_signature=sign_rotation(ORIGIN, LOG_KEY_0, LOG_KEY_1.verifier_key)),
            actor="system:key-rotation")),
        ("2026-01-15T09:33:00.000001Z", Event(
            IdentityRegistered(name="bob@example.com", roles=["model-developer", "auditor"],
                               public_key=bob_key, display_name='Bøb "the builder" \\ Ünïcødé 😀'),
            actor="admin@example.com", subject="identity:bob@example.com")),
    ]


def _entries() -> list[bytes]:
    """The canonical bytes of every entry, chained, without a database."""
    out: list[bytes] = []
    prev = GENESIS_PREV
    for seq, (ts, event) in enumerate(_events()):
        ts = format_ts(parse_ts(ts))  # the one canonical form (FORMAT.md 2.3)
        payload = canonical_encode(event.payload.model_dump(mode="json"), where="payload")
        data = entry_bytes(prefix(event.kind, event.actor, event.subject, payload), seq, prev, ts)
        out.append(data)
        prev = merkle.leaf_hash(data).hex()
    return out


def _signer_for(size: int) -> Signer:
    """The log key that may sign a checkpoint of ``size`` (the rotation is at seq 4)."""
    return LOG_KEY_0 if size <= 4 else LOG_KEY_1


def _vectors(entries: list[bytes], jsonl: bytes) -> dict[str, Any]:
    leaves = [merkle.leaf_hash(e) for e in entries]
    n = len(entries)
    decoded = [json.loads(e) for e in entries]
    history = KeyHistory.from_entries(
        (d["seq"], d["kind"], d["payload"]) for d in decoded if d["seq"] == 0 or d["kind"].startswith("key."))

    checkpoints = []
    notes: dict[int, bytes] = {}
    for size in CHECKPOINT_SIZES:
        signer = _signer_for(size)
        assert history.signer_for(size, [signer.verifier_key]).vkey == signer.verifier_key
        note = sign_checkpoint(Checkpoint(ORIGIN, size, merkle.root_of(leaves[:size])), signer)
        notes[size] = note
        checkpoints.append({"size": size, "root": merkle.root_of(leaves[:size]).hex(),
                            "signed_by": signer.verifier_key, "note": note.decode()})

    body = Checkpoint(ORIGIN, COSIGNED_SIZE, merkle.root_of(leaves[:COSIGNED_SIZE])).body()
    line = cosign(notes[COSIGNED_SIZE], WITNESS, COSIGNATURE_TIME)
    cosigned = add_signatures(notes[COSIGNED_SIZE], [line])
    index, size = PROOF_FILE
    proof_file = format_proof(index, merkle.inclusion_proof(index, leaves[:size]), cosigned)

    rotation = decoded[4]["payload"]
    return {
        "description": (
            "mlledger ledger format v1 vectors (docs/FORMAT.md). entries.jsonl holds the entries; "
            "hashes are lowercase hex; proofs list hashes in RFC 9162 order; notes are UTF-8 text. "
            "Generated by tests/vectors/make_ledger_vectors.py; do not edit by hand."
        ),
        "origin": ORIGIN,
        "size": n,
        "entries_jsonl_sha256": hashlib.sha256(jsonl).hexdigest(),
        "keys": {
            "log": [
                {"seed_hex": bytes(range(32)).hex(), "vkey": LOG_KEY_0.verifier_key,
                 "public_key_hex": LOG_KEY_0.public_key.hex(), "key_id_hex": LOG_KEY_0.key_id.hex(),
                 "valid_from_size": 1, "valid_until_size": 4, "ended": "rotated at seq 4"},
                {"seed_hex": bytes(range(1, 33)).hex(), "vkey": LOG_KEY_1.verifier_key,
                 "public_key_hex": LOG_KEY_1.public_key.hex(), "key_id_hex": LOG_KEY_1.key_id.hex(),
                 "valid_from_size": 5, "valid_until_size": None, "ended": None},
            ],
            "witness": {"seed_hex": bytes(range(32, 64)).hex(), "name": WITNESS.name,
                        "vkey": WITNESS.verifier_key, "public_key_hex": WITNESS.public_key.hex(),
                        "key_id_hex": WITNESS.key_id.hex()},
        },
        "key_for_size": [{"size": s, "vkey": _signer_for(s).verifier_key} for s in range(1, n + 1)],
        "entries": [
            {"seq": i, "kind": d["kind"], "subject": d["subject"], "ts": d["ts"],
             "ts_us": parse_ts(d["ts"]), "length": len(e), "leaf_hash": leaf.hex()}
            for i, (e, d, leaf) in enumerate(zip(entries, decoded, leaves, strict=True))
        ],
        "roots": [{"size": s, "root": merkle.root_of(leaves[:s]).hex()} for s in range(1, n + 1)],
        "inclusion_proofs": [
            {"index": i, "size": s, "proof": [h.hex() for h in merkle.inclusion_proof(i, leaves[:s])]}
            for s in range(1, n + 1) for i in range(s)
        ],
        "consistency_proofs": [
            {"old_size": m, "new_size": s,
             "proof": [h.hex() for h in merkle.consistency_proof(m, leaves[:s])]}
            for s in range(1, n + 1) for m in range(1, s + 1)
        ],
        "checkpoints": checkpoints,
        "cosignature": {
            "size": COSIGNED_SIZE, "witness_vkey": WITNESS.verifier_key, "time": COSIGNATURE_TIME,
            "message": cosignature_message(COSIGNATURE_TIME, body).decode(),
            "line": line, "cosigned_note": cosigned.decode(),
        },
        "proof_file": {"index": index, "size": size, "file": proof_file.decode()},
        "rotation": {
            "seq": 4, "old_key": rotation["old_key"], "new_key": rotation["new_key"],
            "message": rotation_message(ORIGIN, rotation["old_key"], rotation["new_key"]).decode(),
            "old_key_signature": rotation["old_key_signature"],
        },
        "format_examples": {
            "3.5_rotation": {
                "old_key": LOG_KEY_0.verifier_key, "new_key": ROTATION_EXAMPLE_KEY.verifier_key,
                "new_key_seed_hex": bytes(range(0x60, 0x80)).hex(),
                "message": rotation_message(ORIGIN, LOG_KEY_0.verifier_key,
                                            ROTATION_EXAMPLE_KEY.verifier_key).decode(),
                "old_key_signature": sign_rotation(ORIGIN, LOG_KEY_0, ROTATION_EXAMPLE_KEY.verifier_key),
            },
            "8.2_entries_jsonl_sha256_size_3": hashlib.sha256(
                b"".join(e + b"\n" for e in entries[:3])).hexdigest(),
        },
    }


def build() -> dict[str, bytes]:
    """The files of ``tests/vectors/ledger/``, by name, byte for byte."""
    entries = _entries()
    jsonl = b"".join(e + b"\n" for e in entries)
    vectors = _vectors(entries, jsonl)
    text = json.dumps(vectors, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    return {"entries.jsonl": jsonl, "vectors.json": text.encode("utf-8")}


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (OUT_DIR / name).write_bytes(data)
        print(f"wrote {OUT_DIR / name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
