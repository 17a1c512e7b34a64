"""The ledger format vectors in ``tests/vectors/ledger/`` (docs/FORMAT.md, Appendix A).

The committed files are checked against the reference code (canonical bytes, chain
verification, Merkle proofs, checkpoints, key history), against the worked examples
printed in FORMAT.md, and against their generator, which must reproduce them byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ledger import merkle
from ledger.canonical import parse_ts
from ledger.errors import IntegrityError, ProofError, SignatureError
from ledger.keyhistory import KeyHistory, rotation_message
from ledger.note import (
    Checkpoint,
    Signer,
    Verifier,
    open_checkpoint,
    verify_cosignatures,
)
from ledger.tlog_proof import parse_proof
from ledger.verify import ChainVerifier

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
LEDGER_VECTORS = VECTORS / "ledger"
GENERATOR = VECTORS / "make_ledger_vectors.py"

#: Copied from docs/FORMAT.md, to pin the vectors to the published worked examples.
FORMAT_LEAVES = [  # 2.8
    "8b52615627774225dcc7452863002162c4c51a66741a65e74c7e9410c69eac9b",
    "1c87f0a026cb4248a2e1bc5d29bd10bc8962a0209a36a979095a03dc1cd47c5f",
    "6aa18c220845b2617bbe41471fe0157b676226e7c8d2f0fcb3c3df433c976d61",
]
FORMAT_LENGTHS = [382, 361, 375]  # 2.8
FORMAT_ROOT_2 = "3eb62ca89237e55ff3399bd65d42d175f5279879c07a5f2ff492d516d0ae0168"  # 4.6
FORMAT_ROOT_3 = "389c80ad75b5a233069841a165b0bf2626262c9f102148218c3074588783b0ac"  # 4.6
FORMAT_LOG_VKEY = "example.com/mlledger-test+b748c60c+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"  # 5.5
FORMAT_WITNESS_VKEY = (  # 5.5
    "example.com/mlledger-witness+d308f84c+BCmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X")
FORMAT_LOG_LINE = ("\u2014 example.com/mlledger-test t0jGDMycIvd0K0OQlXpXrg6PnEU06W8hzRSmsQmkjJXhS88vul2r"
                   "+8jcrvTamwfqaJPDjKc0/jzGcUXUJ7WdokLgMQY=\n")  # 6.7
FORMAT_COSIGNATURE_LINE = ("\u2014 example.com/mlledger-witness 0wj4TAAAAABlU/EALLo73PtlShGPSs3XpuIRHOVMBPMB"
                           "aPj0ccfy4Voo6PootVeKjgE1uXLLyyC+Sei8qkIGZTit1viiFIh1wjEyAA==\n")  # 6.7
FORMAT_CHECKPOINT_3 = ("example.com/mlledger-test\n3\nOJyArXW1ojMGmEGhZbC/JiYmLJ8QIUghjDB0WIeDsKw=\n\n"
                       + FORMAT_LOG_LINE)  # 6.7
FORMAT_PROOF_FILE = ("c2sp.org/tlog-proof@v1\nindex 1\ni1JhVid3QiXcx0UoYwAhYsTFGmZ0GmXnTH6UEMaerJs=\n"
                     "aqGMIghFsmF7vkFHH+AVe2diJufI0vD8s8PfQzyXbWE=\n\n"
                     + FORMAT_CHECKPOINT_3 + FORMAT_COSIGNATURE_LINE)  # 7.4
FORMAT_ROTATION_NEW_KEY = (  # 3.5
    "example.com/mlledger-test+9a9db9f1+ARdFU7RW3d/GkI7KscEB/mqyHiuqBhd5W31DpjSCmT/V")
FORMAT_ROTATION_SIGNATURE = (  # 3.5
    "qAoRVaDrBQR6LxviH8MpbObvlGOk/CT97Zlc6itQYjVJPj9LMpSBYazr+z1lUwoJmvjlUHAtfhLsMhEmAcenCA==")
FORMAT_ENTRIES_SHA256_3 = "ad95b7ef8fa4de263563838b64713d9819e04ee296415521d78747108f29192d"  # 8.2


@cache
def vectors() -> dict[str, Any]:
    value: dict[str, Any] = json.loads((LEDGER_VECTORS / "vectors.json").read_text(encoding="utf-8"))
    return value


@cache
def jsonl() -> bytes:
    return (LEDGER_VECTORS / "entries.jsonl").read_bytes()


def entries() -> list[bytes]:
    data = jsonl()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def leaves() -> list[bytes]:
    return [bytes.fromhex(e["leaf_hash"]) for e in vectors()["entries"]]


def root(size: int) -> bytes:
    (row,) = [r for r in vectors()["roots"] if r["size"] == size]
    return bytes.fromhex(row["root"])


def rows(lines: list[bytes]) -> list[tuple[int, bytes, int, str, str | None, bytes]]:
    """The ``(seq, leaf_hash, ts_us, kind, subject, entry)`` rows ChainVerifier checks."""
    out = []
    for seq, line in enumerate(lines):
        obj = json.loads(line)
        out.append((seq, merkle.leaf_hash(line), parse_ts(obj["ts"]), obj["kind"], obj["subject"], line))
    return out


def key_history() -> KeyHistory:
    decoded = [json.loads(e) for e in entries()]
    return KeyHistory.from_entries(
        (d["seq"], d["kind"], d["payload"]) for d in decoded if d["seq"] == 0 or d["kind"].startswith("key."))


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_ledger_vectors", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the files --------------------------------------------------------------------


def test_entries_jsonl_is_one_lf_terminated_line_per_entry() -> None:
    data = jsonl()
    assert data.endswith(b"\n")
    assert b"\r" not in data
    assert b"\n\n" not in data
    assert not data.startswith(b"\xef\xbb\xbf")
    assert len(entries()) == vectors()["size"] == len(vectors()["entries"]) == 6
    assert hashlib.sha256(data).hexdigest() == vectors()["entries_jsonl_sha256"]


def test_every_line_hashes_to_its_leaf_hash() -> None:
    for line, meta in zip(entries(), vectors()["entries"], strict=True):
        assert len(line) == meta["length"]
        assert hashlib.sha256(b"\x00" + line).hexdigest() == meta["leaf_hash"]
        assert merkle.leaf_hash(line).hex() == meta["leaf_hash"]


def test_entry_metadata_agrees_with_the_entry_bytes() -> None:
    for seq, (line, meta) in enumerate(zip(entries(), vectors()["entries"], strict=True)):
        obj = json.loads(line)
        assert meta["seq"] == obj["seq"] == seq
        assert (meta["kind"], meta["subject"], meta["ts"]) == (obj["kind"], obj["subject"], obj["ts"])
        assert meta["ts_us"] == parse_ts(obj["ts"])


def test_the_entries_are_the_intended_ledger() -> None:
    kinds = [json.loads(e)["kind"] for e in entries()]
    assert kinds == ["ledger.created", "identity.registered", "policy.published", "dataset.registered",
                     "key.rotated", "identity.registered"]
    genesis = json.loads(entries()[0])["payload"]
    assert genesis["origin"] == vectors()["origin"] == "example.com/mlledger-test"
    assert genesis["verifier_key"] == Signer.from_seed(genesis["origin"], bytes(range(32))).verifier_key


def test_the_dataset_entry_carries_floats_in_their_canonical_form() -> None:
    line = entries()[3]
    for text in (b'"std":0.30000000000000004', b'"max":1e+16', b'"min":-0.0', b'"missing_rate":1e-07',
                 b'"one":1.0', b'"rate":9.999e-05', b'"tiny":5e-324', b'"total":1000000000000000.0',
                 b'"mean":1234567890123456.8'):
        assert text in line


# -- chain and tree ---------------------------------------------------------------


def test_chain_verifier_accepts_the_entries_and_yields_the_recorded_root() -> None:
    checker = ChainVerifier()
    assert checker.feed(rows(entries()))
    result = checker.result()
    assert result.ok, result.reason
    assert result.size == 6
    assert result.root == root(6)
    assert result.last_ts == vectors()["entries"][-1]["ts"]


@pytest.mark.parametrize("size", range(1, 7))
def test_chain_verifier_over_each_prefix_yields_that_sizes_root(size: int) -> None:
    checker = ChainVerifier()
    assert checker.feed(rows(entries()[:size]))
    assert checker.result().root == root(size)


def test_chain_verifier_rejects_the_entries_with_one_byte_changed() -> None:
    lines = entries()
    lines[2] = lines[2].replace(b"four_fifths", b"five_fifths")
    fed = rows(lines)
    fed[2] = (*fed[2][:1], leaves()[2], *fed[2][2:])  # the recorded leaf hash, not the new one
    checker = ChainVerifier()
    assert not checker.feed(fed)
    assert checker.result().bad_seq == 2


def test_prev_links_each_entry_to_the_previous_leaf_hash() -> None:
    prevs = [json.loads(e)["prev"] for e in entries()]
    assert prevs == ["0" * 64] + [leaf.hex() for leaf in leaves()[:-1]]


def test_every_root_is_the_merkle_tree_hash_of_its_prefix() -> None:
    assert [r["size"] for r in vectors()["roots"]] == list(range(1, 7))
    for size in range(1, 7):
        assert merkle.root_of(leaves()[:size]) == root(size)


def test_there_is_an_inclusion_proof_for_every_index_and_size() -> None:
    got = sorted((p["index"], p["size"]) for p in vectors()["inclusion_proofs"])
    assert got == sorted((i, s) for s in range(1, 7) for i in range(s))


def test_every_inclusion_proof_verifies_and_equals_the_reference_generator() -> None:
    for p in vectors()["inclusion_proofs"]:
        index, size = p["index"], p["size"]
        proof = [bytes.fromhex(h) for h in p["proof"]]
        merkle.verify_inclusion(leaves()[index], index, size, proof, root(size))
        assert proof == merkle.inclusion_proof(index, leaves()[:size])


def test_every_inclusion_proof_fails_for_another_leaf() -> None:
    for p in vectors()["inclusion_proofs"]:
        index, size = p["index"], p["size"]
        if size == 1:
            continue
        other = leaves()[(index + 1) % size]
        with pytest.raises(ProofError):
            merkle.verify_inclusion(other, index, size, [bytes.fromhex(h) for h in p["proof"]], root(size))


def test_there_is_a_consistency_proof_for_every_pair_of_sizes() -> None:
    got = sorted((p["old_size"], p["new_size"]) for p in vectors()["consistency_proofs"])
    assert got == sorted((m, n) for n in range(1, 7) for m in range(1, n + 1))


def test_every_consistency_proof_verifies_and_equals_the_reference_generator() -> None:
    for p in vectors()["consistency_proofs"]:
        m, n = p["old_size"], p["new_size"]
        proof = [bytes.fromhex(h) for h in p["proof"]]
        merkle.verify_consistency(m, n, root(m), root(n), proof)
        assert proof == merkle.consistency_proof(m, leaves()[:n])


def test_every_consistency_proof_fails_against_another_old_root() -> None:
    for p in vectors()["consistency_proofs"]:
        m, n = p["old_size"], p["new_size"]
        if m == n or m == 1:
            continue
        with pytest.raises(ProofError):
            merkle.verify_consistency(m, n, root(m - 1), root(n), [bytes.fromhex(h) for h in p["proof"]])


# -- keys, checkpoints, cosignature, proof file -----------------------------------


def test_the_vkeys_are_those_of_their_seeds() -> None:
    origin = vectors()["origin"]
    for k in vectors()["keys"]["log"]:
        signer = Signer.from_seed(origin, bytes.fromhex(k["seed_hex"]))
        assert signer.verifier_key == k["vkey"]
        assert signer.public_key.hex() == k["public_key_hex"]
        assert signer.key_id.hex() == k["key_id_hex"]
    w = vectors()["keys"]["witness"]
    witness = Signer.from_seed(w["name"], bytes.fromhex(w["seed_hex"]), cosignature=True)
    assert (witness.verifier_key, witness.public_key.hex(), witness.key_id.hex()) == (
        w["vkey"], w["public_key_hex"], w["key_id_hex"])


def test_each_checkpoint_opens_with_the_key_that_signed_it() -> None:
    cps = vectors()["checkpoints"]
    assert [c["size"] for c in cps] == [3, 6]
    for c in cps:
        cp = open_checkpoint(c["note"].encode(), Verifier.parse(c["signed_by"]))
        want = (vectors()["origin"], c["size"], root(c["size"]), ())
        assert (cp.origin, cp.size, cp.root, cp.extensions) == want
        assert cp.root.hex() == c["root"]


def test_each_checkpoint_is_refused_under_the_other_log_key() -> None:
    log_keys = [k["vkey"] for k in vectors()["keys"]["log"]]
    for c in vectors()["checkpoints"]:
        (other,) = [k for k in log_keys if k != c["signed_by"]]
        with pytest.raises(SignatureError):
            open_checkpoint(c["note"].encode(), Verifier.parse(other))


def test_each_checkpoint_is_signed_by_the_key_the_history_allows_at_its_size() -> None:
    history = key_history()
    for c in vectors()["checkpoints"]:
        assert history.signer_for(c["size"], [c["signed_by"]]).vkey == c["signed_by"]


def test_key_history_says_which_key_signs_which_size() -> None:
    history = key_history()
    log_keys = [k["vkey"] for k in vectors()["keys"]["log"]]
    assert [r["size"] for r in vectors()["key_for_size"]] == list(range(1, 7))
    for row in vectors()["key_for_size"]:
        assert history.signer_for(row["size"], log_keys).vkey == row["vkey"]
        for other in log_keys:
            if other != row["vkey"]:
                with pytest.raises(SignatureError):
                    history.signer_for(row["size"], [other])


def test_key_history_records_the_validity_of_each_key() -> None:
    history = key_history()
    assert history.origin == vectors()["origin"]
    assert history.current == vectors()["keys"]["log"][-1]["vkey"]
    for k in vectors()["keys"]["log"]:
        key = history.keys[k["vkey"]]
        assert (key.valid_from, key.valid_until, key.ended_by) == (
            k["valid_from_size"], k["valid_until_size"], k["ended"])


def test_the_rotated_key_is_trusted_through_the_old_one() -> None:
    first, second = (k["vkey"] for k in vectors()["keys"]["log"])
    assert key_history().trusted([Verifier.parse(first)]) == {first, second}
    assert key_history().trusted([Verifier.parse(second)]) == {second}


def test_the_rotation_signature_verifies_under_the_old_key_over_the_message() -> None:
    rot = vectors()["rotation"]
    payload = json.loads(entries()[rot["seq"]])["payload"]
    assert (payload["old_key"], payload["new_key"], payload["old_key_signature"]) == (
        rot["old_key"], rot["new_key"], rot["old_key_signature"])
    message = rotation_message(vectors()["origin"], rot["old_key"], rot["new_key"])
    assert message.decode() == rot["message"]
    assert Verifier.parse(rot["old_key"]).verify(message, base64.b64decode(rot["old_key_signature"]))
    assert not Verifier.parse(rot["new_key"]).verify(message, base64.b64decode(rot["old_key_signature"]))


def test_a_rotation_with_a_bad_signature_breaks_the_key_history() -> None:
    decoded = [json.loads(e) for e in entries()]
    rotation = decoded[4]["payload"]
    other_signature = vectors()["format_examples"]["3.5_rotation"]["old_key_signature"]
    forged = dict(rotation, old_key_signature=other_signature)
    with pytest.raises(IntegrityError, match="not signed by the old key"):
        KeyHistory.from_entries([(0, "ledger.created", decoded[0]["payload"]), (4, "key.rotated", forged)])


def test_the_cosignature_verifies_under_the_witness_key() -> None:
    co = vectors()["cosignature"]
    witness = Verifier.parse(co["witness_vkey"])
    (c3,) = [c for c in vectors()["checkpoints"] if c["size"] == co["size"]]
    assert co["cosigned_note"] == c3["note"] + co["line"]
    assert verify_cosignatures(co["cosigned_note"].encode(), [witness], 1) == [(witness, co["time"])]
    body = Checkpoint(vectors()["origin"], co["size"], root(co["size"])).body()
    assert co["message"].encode() == b"cosignature/v1\ntime %d\n" % co["time"] + body
    # the log's signature still opens with witnesses' lines present
    open_checkpoint(co["cosigned_note"].encode(), Verifier.parse(c3["signed_by"]))


def test_the_proof_file_verifies_the_entry_it_names() -> None:
    pf = vectors()["proof_file"]
    index, hashes, note = parse_proof(pf["file"].encode())
    assert (index, len(hashes)) == (pf["index"], len(merkle.inclusion_ranges(pf["index"], pf["size"])))
    cp = open_checkpoint(note, Verifier.parse(vectors()["keys"]["log"][0]["vkey"]))
    assert cp.size == pf["size"]
    merkle.verify_inclusion(merkle.leaf_hash(entries()[index]), index, cp.size, hashes, cp.root)
    assert note.decode() == vectors()["cosignature"]["cosigned_note"]


# -- docs/FORMAT.md worked examples --------------------------------------------------


def test_vectors_reproduce_format_2_8_entries_and_leaves() -> None:
    assert [len(e) for e in entries()[:3]] == FORMAT_LENGTHS
    assert [leaf.hex() for leaf in leaves()[:3]] == FORMAT_LEAVES


def test_vectors_reproduce_format_4_6_roots_and_proofs() -> None:
    assert root(1).hex() == FORMAT_LEAVES[0]
    assert root(2).hex() == FORMAT_ROOT_2
    assert root(3).hex() == FORMAT_ROOT_3
    proofs = {(p["index"], p["size"]): p["proof"] for p in vectors()["inclusion_proofs"]}
    assert proofs[(0, 3)] == [FORMAT_LEAVES[1], FORMAT_LEAVES[2]]
    assert proofs[(1, 3)] == [FORMAT_LEAVES[0], FORMAT_LEAVES[2]]
    assert proofs[(2, 3)] == [FORMAT_ROOT_2]
    cons = {(p["old_size"], p["new_size"]): p["proof"] for p in vectors()["consistency_proofs"]}
    assert cons[(1, 3)] == [FORMAT_LEAVES[1], FORMAT_LEAVES[2]]
    assert cons[(2, 3)] == [FORMAT_LEAVES[2]]


def test_vectors_reproduce_format_5_5_keys() -> None:
    assert vectors()["keys"]["log"][0]["vkey"] == FORMAT_LOG_VKEY
    assert vectors()["keys"]["witness"]["vkey"] == FORMAT_WITNESS_VKEY


def test_vectors_reproduce_format_6_7_checkpoint_and_cosignature() -> None:
    (c3,) = [c for c in vectors()["checkpoints"] if c["size"] == 3]
    assert c3["note"] == FORMAT_CHECKPOINT_3
    assert vectors()["cosignature"]["time"] == 1700000000
    assert vectors()["cosignature"]["line"] == FORMAT_COSIGNATURE_LINE


def test_vectors_reproduce_format_7_4_proof_file() -> None:
    assert vectors()["proof_file"]["file"] == FORMAT_PROOF_FILE


def test_vectors_reproduce_format_3_5_rotation_example() -> None:
    ex = vectors()["format_examples"]["3.5_rotation"]
    assert ex["old_key"] == FORMAT_LOG_VKEY
    assert ex["new_key"] == FORMAT_ROTATION_NEW_KEY
    assert ex["message"] == (f"mlledger/key-rotation/v1\nexample.com/mlledger-test\n{FORMAT_LOG_VKEY}\n"
                             f"{FORMAT_ROTATION_NEW_KEY}\n")
    assert ex["old_key_signature"] == FORMAT_ROTATION_SIGNATURE


def test_vectors_reproduce_format_8_2_entries_hash_of_the_three_entry_ledger() -> None:
    first3 = b"".join(e + b"\n" for e in entries()[:3])
    assert len(first3) == 1121
    assert hashlib.sha256(first3).hexdigest() == FORMAT_ENTRIES_SHA256_3
    assert vectors()["format_examples"]["8.2_entries_jsonl_sha256_size_3"] == FORMAT_ENTRIES_SHA256_3


# -- the generator ------------------------------------------------------------------


def test_the_generator_reproduces_the_committed_files_byte_for_byte() -> None:
    built = load_generator().build()
    assert sorted(built) == ["entries.jsonl", "vectors.json"]
    for name, data in built.items():
        assert data == (LEDGER_VECTORS / name).read_bytes(), f"{name} differs: rerun the generator"


def test_the_generator_is_deterministic() -> None:
    gen = load_generator()
    assert gen.build() == gen.build()
