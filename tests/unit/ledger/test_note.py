"""Tests for ledger.note: published C2SP / Go vectors, our own vectors, bad inputs, properties."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InputError, MlledgerError, SignatureError
from ledger.note import (
    MAX_SIGNATURES,
    Checkpoint,
    Note,
    NoteSignature,
    Signer,
    Verifier,
    add_signatures,
    cosign,
    cosignature_message,
    cosignature_time,
    key_id,
    open_checkpoint,
    sign_checkpoint,
    sign_note,
    verify_cosignatures,
    verify_note,
    vkey_for,
)
from ledger.tlog_proof import TlogProof, format_proof, parse_proof

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "note"


def raises(exc: type[Exception], message: str) -> AbstractContextManager[Any]:
    """pytest.raises whose message must contain ``message`` literally."""
    return pytest.raises(exc, match=re.escape(message))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert data["source"]
    return data


GO = load("go-sumdb-note.json")
FORMATS = load("transparency-dev-formats.json")
C2SP = load("c2sp-specs.json")
OURS = load("mlledger.json")


def signer_from_skey(skey: str, *, cosignature: bool = False) -> Signer:
    """Decode a Go x/mod/sumdb/note 'PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>'."""
    private, key, name, _, b64 = skey.split("+", 4)
    raw = base64.b64decode(b64)
    assert (private, key, raw[0], len(raw)) == ("PRIVATE", "KEY", 1, 33)
    return Signer.from_seed(name, raw[1:], cosignature=cosignature)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


LOG = Signer.from_seed(OURS["log"]["name"], bytes.fromhex(OURS["log"]["seed_hex"]))
WITNESS = Signer.from_seed(
    OURS["witness"]["name"], bytes.fromhex(OURS["witness"]["seed_hex"]), cosignature=True
)
WITNESS2 = Signer.from_seed("example.com/witness-2", bytes(range(64, 96)), cosignature=True)
CP = Checkpoint(OURS["checkpoint"]["origin"], 8, bytes.fromhex(OURS["checkpoint"]["root_hex"]))
NOTE = OURS["note"].encode()
TS = OURS["cosignature_timestamp"]


def other_log(origin: str = "example.com/other-log") -> Signer:
    return Signer.from_seed(origin, bytes(range(96, 128)))


# --- golang.org/x/mod sumdb/note vectors ---------------------------------------------------


def test_go_signer_key_matches_published_vkey() -> None:
    signer = signer_from_skey(GO["peter"]["skey"])
    assert signer.verifier_key == GO["peter"]["vkey"]
    assert signer.key_id.hex() == "c74f20a3"
    v = Verifier.parse(GO["peter"]["vkey"])
    assert (v.name, v.kind, str(v)) == ("PeterNeumann", "ed25519", GO["peter"]["vkey"])
    assert vkey_for(v.name, v.public_key) == GO["peter"]["vkey"]


def test_go_sign_reproduces_published_note() -> None:
    assert sign_note(GO["text"].encode(), signer_from_skey(GO["peter"]["skey"])) == GO[
        "signed_note"
    ].encode("utf-8")


def test_go_open_one_known_one_unknown() -> None:
    peter, enoch = Verifier.parse(GO["peter"]["vkey"]), Verifier.parse(GO["enoch"]["vkey"])
    msg = (GO["text"] + "\n" + GO["peter_sig_line"] + GO["enoch_sig_line"]).encode()
    note, signers = verify_note(msg, [peter])
    assert note.body == GO["text"].encode() and signers == [peter]
    assert verify_note(msg, [peter, enoch])[1] == [peter, enoch]
    assert verify_note(msg, [peter, enoch, enoch])[1] == [peter, enoch]
    assert note.to_bytes() == msg


def test_go_open_without_known_keys_fails() -> None:
    msg = (GO["text"] + "\n" + GO["peter_sig_line"] + GO["enoch_sig_line"]).encode()
    with raises(SignatureError, "no valid signature from a trusted key"):
        verify_note(msg, [])


def test_go_open_invalid_signature() -> None:
    line = GO["peter_sig_line"].encode()
    msg = GO["text"].encode() + b"\n" + line[:60] + b"ABCD" + line[60:]
    with raises(SignatureError, "invalid signature for known key PeterNeumann+c74f20a3"):
        verify_note(msg, [Verifier.parse(GO["peter"]["vkey"])])


def test_go_open_repeated_and_unknown_signatures() -> None:
    enoch = GO["enoch_sig_line"].encode()
    sigs = GO["peter_sig_line"].encode() * 2 + enoch * 2 + enoch[:60] + b"ABCD" + enoch[60:]
    _, signers = verify_note(
        GO["text"].encode() + b"\n" + sigs, [Verifier.parse(GO["peter"]["vkey"])]
    )
    assert [v.name for v in signers] == ["PeterNeumann"]


def test_go_open_too_many_signatures() -> None:
    msg = (GO["text"] + "\n" + GO["peter_sig_line"] * 101).encode()
    with raises(InputError, "101 signature lines, at most 100"):
        verify_note(msg, [Verifier.parse(GO["peter"]["vkey"])])


_T, _S = GO["text"].encode(), GO["peter_sig_line"].encode()
_BAD = _S[:-1].replace(b"PeterNeumann", b"Bad Name")  # note_test.go: "— Bad Name x08go/..."


@pytest.mark.parametrize(
    ("msg", "error"),
    [
        (_T, "no blank line"),
        (_T + b"\n", "note line 4: missing signature line"),
        (_T + b"\n" + _S[:-1], "missing signature line or final newline"),
        (b"\x01" + _T + b"\n" + _S, "control character '\\x01' on line 1"),
        (b"\xff" + _T + b"\n" + _S, "invalid UTF-8 at byte 0"),
        (_T + b"\n" + _BAD, "missing signature line or final newline"),
        (_T + b"\n" + _BAD + b"\n", "note line 4: signature: invalid base64 'Name x08go/"),
        (_T + b"\n" + _S + b"Unexpected line.\n", "note line 5: expected '\u2014 <key name>"),
    ],
)
def test_go_malformed_notes(msg: bytes, error: str) -> None:
    with raises(InputError, error):
        verify_note(msg, [Verifier.parse(GO["peter"]["vkey"])])


@pytest.mark.parametrize("vkey", sorted(GO["bad_vkeys"]))
def test_go_bad_vkeys(vkey: str) -> None:
    with raises(InputError, "vkey 'PeterNeumann'"):
        Verifier.parse(vkey)


def test_go_vkey_manglings_rejected() -> None:
    vkey = GO["peter"]["vkey"]
    for i in range(len(vkey) + 1):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(InputError):
                    Verifier.parse(vkey[i:j])
    for i in range(len(vkey)):
        with pytest.raises(InputError):
            Verifier.parse(vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :])


# --- transparency-dev/formats vectors --------------------------------------------------------


def test_formats_sumdb_checkpoint_verifies_but_origin_is_not_key_name() -> None:
    vec = FORMATS["sumdb_checkpoint"]
    key = Verifier.parse(vec["vkey"])
    note, _ = verify_note(vec["note"].encode(), [key])
    cp = Checkpoint.parse_body(note.body)
    assert (cp.origin, cp.size, cp.body()) == (vec["origin"], vec["size"], note.body)
    # sum.golang.org predates "key name SHOULD be the origin"; mlledger requires it.
    with raises(SignatureError, "'go.sum database tree' is not expected origin"):
        open_checkpoint(vec["note"].encode(), key)


@pytest.mark.parametrize(("skey", "vkey"), FORMATS["key_pairs"]["pairs"])
def test_formats_key_pairs(skey: str, vkey: str) -> None:
    assert signer_from_skey(skey).verifier_key == vkey
    assert str(Verifier.parse(vkey)) == vkey


def test_formats_cosignature_vkeys() -> None:
    vec = FORMATS["cosignature_vkeys"]
    witness = Verifier.parse(vec["cosignature_type"])
    assert (witness.kind, str(witness)) == ("cosignature", vec["cosignature_type"])
    plain = Verifier.parse(vec["ed25519_type"])
    assert plain.kind == "ed25519"
    # formats converts 0x01 vkeys to cosigners; mlledger refuses a key typed for another use.
    with raises(SignatureError, "witness key TEST is a ed25519 key"):
        verify_cosignatures(NOTE, [plain], 1)
    for bad in vec["invalid"]:
        with raises(InputError, "vkey"):
            Verifier.parse(bad)


def test_formats_cosignature_timestamps() -> None:
    vec = FORMATS["cosignature_timestamps"]
    raw = base64.b64decode(vec["works"]["sig_b64"])
    assert cosignature_time(NoteSignature("w", raw[:4], raw[4:])) == vec["works"]["time"]
    raw = base64.b64decode(vec["wrong_type"]["sig_b64"])
    with raises(InputError, "not a cosignature"):
        cosignature_time(NoteSignature("w", raw[:4], raw[4:]))


def _big_checkpoint_note() -> bytes:
    return sign_checkpoint(Checkpoint(LOG.name, 1000, hashlib.sha256(b"1000").digest()), LOG)


@pytest.mark.parametrize("case", FORMATS["tlog_proof"]["marshal"])
def test_formats_proof_marshal(case: dict[str, Any]) -> None:
    hashes = [hashlib.sha256(h.encode()).digest() for h in case["hashes"]]
    extra = case["extra"].encode() if case["extra"] else None
    note = _big_checkpoint_note()
    data = format_proof(case["index"], hashes, note, extra=extra)
    assert data == case["want_prefix"].encode() + note
    assert parse_proof(data) == (case["index"], hashes, note)
    assert TlogProof.parse(data).extra == extra


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("missing header", "line 1: expected 'c2sp.org/tlog-proof@v1', got 'wrong-header'"),
        ("invalid extra data encoding", "line 2 (extra data): invalid base64"),
        ("missing index", "line 2: expected 'index <decimal"),
        ("invalid index - not a number", "got 'index notanumber'"),
        ("invalid index - negative", "got 'index -5'"),
        ("invalid hash base64", "line 3 (proof hash): invalid base64"),
        ("incorrect hash length", "line 3 (proof hash): 64 bytes, not 32"),
    ],
)
def test_formats_proof_unmarshal_errors(name: str, error: str) -> None:
    with raises(InputError, error):
        parse_proof(FORMATS["tlog_proof"]["unmarshal_errors"][name].encode())


# --- C2SP spec examples ------------------------------------------------------------------------


def test_c2sp_signed_note_example() -> None:
    vec = C2SP["signed_note_example"]
    note = Note.parse(vec["note"].encode())
    assert note.body == vec["body"].encode() and b"\n\n" in note.body
    assert [s.name for s in note.signatures] == [vec["key_name"]]
    assert len(note.signatures[0].sig) == 64 and note.to_bytes() == vec["note"].encode()
    with raises(SignatureError, "quasimodo.example/salvatore"):
        verify_note(vec["note"].encode(), [LOG.verifier])


def test_c2sp_cosigned_checkpoint_example() -> None:
    vec, msg = C2SP["cosigned_checkpoint_example"], C2SP["cosignature_message_example"]
    note = Note.parse(vec["note"].encode())
    cp = Checkpoint.parse_body(note.body)
    assert (cp.origin, cp.size, b64(cp.root)) == (vec["origin"], vec["size"], vec["root_b64"])
    log_sig, witness_sig = note.signatures
    assert (log_sig.name, len(log_sig.sig)) == (vec["origin"], 64)
    assert witness_sig.name == vec["witness_name"]
    assert cosignature_time(witness_sig) == msg["timestamp"]
    assert cosignature_message(msg["timestamp"], note.body) == msg["message"].encode()
    assert note.to_bytes() == vec["note"].encode()


def test_c2sp_tlog_proof_example() -> None:
    vec = C2SP["tlog_proof_example"]
    cp = Checkpoint.parse_body(vec["checkpoint_body"].encode())
    log = other_log(cp.origin)
    note = sign_checkpoint(cp, log)  # the spec elides its signatures; sign the same text
    data = vec["header"].encode() + note
    index, hashes, checkpoint = parse_proof(data)
    assert (index, len(hashes), checkpoint) == (vec["index"], vec["proof_hashes"], note)
    proof = TlogProof.parse(data)
    assert proof.extra is not None and proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert proof.to_bytes() == data
    assert open_checkpoint(checkpoint, log.verifier) == cp


# --- mlledger's own deterministic vectors ----------------------------------------------------


def test_ours_keys() -> None:
    assert LOG.verifier_key == OURS["log"]["vkey"] and LOG.key_id.hex() == OURS["log"]["key_id_hex"]
    assert WITNESS.verifier_key == OURS["witness"]["vkey"]
    assert key_id(WITNESS.name, WITNESS.public_key, 4).hex() == OURS["witness"]["key_id_hex"]
    assert Verifier.parse(OURS["witness"]["vkey"]) == WITNESS.verifier
    assert vkey_for(WITNESS.name, WITNESS.public_key, cosignature=True) == OURS["witness"]["vkey"]


def test_ours_checkpoint_note() -> None:
    assert CP.body() == OURS["checkpoint"]["body"].encode()
    assert sign_checkpoint(CP, LOG) == NOTE
    assert open_checkpoint(NOTE, Verifier.parse(OURS["log"]["vkey"]), origin=CP.origin) == CP


def test_ours_cosignature() -> None:
    assert cosignature_message(TS, CP.body()) == OURS["cosignature_message"].encode()
    line = cosign(NOTE, WITNESS, TS)
    assert (
        line
        == OURS["cosignature_line"]
        == cosign(CP, WITNESS, TS)
        == cosign(CP.body(), WITNESS, TS)
    )
    cosigned = add_signatures(NOTE, [line])
    assert cosigned == OURS["cosigned_note"].encode() == add_signatures(cosigned, [line])
    assert verify_cosignatures(cosigned, [WITNESS.verifier, WITNESS2.verifier], 1) == [
        (WITNESS.verifier, TS)
    ]
    assert open_checkpoint(cosigned, LOG.verifier) == CP


def test_ours_extension_lines_preserved() -> None:
    vec = OURS["extension_checkpoint"]
    cp = Checkpoint(CP.origin, CP.size, CP.root, tuple(vec["extensions"]))
    assert sign_checkpoint(cp, LOG) == vec["note"].encode()
    assert open_checkpoint(vec["note"].encode(), LOG.verifier) == cp


def test_ours_proof_file() -> None:
    vec = OURS["proof"]
    hashes = [bytes.fromhex(h) for h in vec["hashes_hex"]]
    cosigned = OURS["cosigned_note"].encode()
    assert format_proof(5, hashes, cosigned) == vec["file"].encode()
    extra = base64.b64decode(vec["extra_b64"])
    assert format_proof(5, hashes, cosigned, extra=extra) == vec["file_with_extra"].encode()
    assert parse_proof(vec["file_with_extra"].encode()) == (5, hashes, cosigned)


def test_signer_never_shows_private_key() -> None:
    seed = bytes.fromhex(OURS["log"]["seed_hex"])
    text = repr(LOG) + str(LOG)
    assert seed.hex() not in text and b64(seed) not in text and "private" not in text.lower()


# --- bad inputs --------------------------------------------------------------------------------


def test_missing_blank_line() -> None:
    with raises(InputError, "no blank line between the text and the signature"):
        Note.parse(NOTE.replace(b"=\n\n", b"=\n"))


def test_bad_base64_signature() -> None:
    with raises(InputError, "note line 5: signature: invalid base64 'abc!'"):
        Note.parse(CP.body() + b"\n\xe2\x80\x94 " + LOG.name.encode() + b" abc!\n")


def test_non_canonical_base64_signature() -> None:
    line = OURS["note"].split("\n")[4]
    assert line.endswith("k=")
    with raises(InputError, "non-canonical base64"):
        Note.parse(NOTE.replace(b"k=\n", b"l=\n"))


def test_unknown_key_only_fails() -> None:
    with raises(SignatureError, "no valid signature from a trusted key (signed by"):
        verify_note(NOTE, [other_log().verifier])


def test_bad_signature_from_known_key() -> None:
    forged = CP.body() + b"\n" + NoteSignature(LOG.name, LOG.key_id, bytes(64)).line().encode()
    with raises(SignatureError, "invalid signature for known key example.com/mlledger"):
        verify_note(forged, [LOG.verifier])


def test_wrong_origin_cross_log_replay() -> None:
    other = other_log()
    replayed = sign_checkpoint(Checkpoint(other.name, 8, CP.root), other)
    with raises(
        SignatureError,
        "origin 'example.com/other-log' is not expected origin 'example.com/mlledger-test'",
    ):
        open_checkpoint(replayed, LOG.verifier)


def test_expected_origin_differs_from_log_key() -> None:
    with raises(SignatureError, "expected origin 'example.com/x' but the log key is"):
        open_checkpoint(NOTE, LOG.verifier, origin="example.com/x")


def test_unsupported_vkey_type_byte() -> None:
    raw = base64.b64decode(OURS["log"]["vkey"].split("+", 2)[2])
    key = b64(bytes([2]) + raw[1:])
    vkey = f"{LOG.name}+{key_id(LOG.name, LOG.public_key, 2).hex()}+{key}"
    with raises(InputError, "unsupported key type 0x02"):
        Verifier.parse(vkey)


def test_vkey_type_byte_swapped_breaks_key_id() -> None:
    name, hex_id, key = OURS["log"]["vkey"].split("+", 2)
    swapped = b64(b"\x04" + base64.b64decode(key)[1:])
    with raises(InputError, f"key id {hex_id} does not match the key"):
        Verifier.parse(f"{name}+{hex_id}+{swapped}")


def test_cosignature_key_cannot_open_checkpoint() -> None:
    as_witness = Verifier.of(LOG.name, LOG.public_key, "cosignature")
    with raises(SignatureError, "is a cosignature key, not a note key"):
        open_checkpoint(NOTE, as_witness)


def test_note_key_cannot_cosign_and_witness_key_cannot_sign_notes() -> None:
    with raises(InputError, "is a note (0x01) key, not a cosignature key"):
        cosign(CP, LOG, TS)
    with raises(InputError, "is a cosignature (0x04) key, not a note key"):
        sign_note(CP.body(), WITNESS)


def test_plain_signature_by_witness_key_is_not_a_cosignature() -> None:
    plain = Signer.from_seed(WITNESS.name, bytes.fromhex(OURS["witness"]["seed_hex"]))
    note = add_signatures(NOTE, [sign_note(CP.body(), plain).decode().split("\n")[-2]])
    with raises(SignatureError, "quorum not met: 0 valid of 1 required"):
        verify_cosignatures(note, [WITNESS.verifier], 1)


def test_size_with_leading_zero() -> None:
    with raises(
        InputError,
        "line 2 (tree size): expected decimal digits without sign or leading zeros, got '08'",
    ):
        Checkpoint.parse_body(CP.body().replace(b"\n8\n", b"\n08\n"))


def test_negative_size() -> None:
    with raises(InputError, "without sign or leading zeros, got '-8'"):
        Checkpoint.parse_body(CP.body().replace(b"\n8\n", b"\n-8\n"))


@pytest.mark.parametrize("size", ["8a", "+8", " 8", "0x8", "\u0668", ""])
def test_non_decimal_size(size: str) -> None:
    with raises(InputError, "line 2 (tree size): expected decimal digits"):
        Checkpoint.parse_body(CP.body().replace(b"\n8\n", f"\n{size}\n".encode()))


def test_size_above_u64() -> None:
    with raises(InputError, "line 2 (tree size): 18446744073709551616 is not"):
        Checkpoint.parse_body(CP.body().replace(b"\n8\n", b"\n18446744073709551616\n"))


def test_root_not_32_bytes() -> None:
    body = CP.body().replace(b64(CP.root).encode(), b64(CP.root[:31]).encode())
    with raises(InputError, "line 3 (root hash): 31 bytes, expected 32"):
        Checkpoint.parse_body(body)


def test_empty_extension_line() -> None:
    with raises(InputError, "checkpoint line 4 (extension): must be non-empty"):
        Checkpoint.parse_body(CP.body() + b"\nx\n")


def test_too_few_checkpoint_lines() -> None:
    with raises(InputError, "checkpoint: 2 lines, expected origin, size and root"):
        Checkpoint.parse_body(b"example.com/log\n8\n")


def test_too_many_signature_lines() -> None:
    line = NOTE.split(b"\n\n")[1]
    with raises(InputError, f"{MAX_SIGNATURES + 1} signature lines, at most 100"):
        Note.parse(CP.body() + b"\n" + line * (MAX_SIGNATURES + 1))
    assert Note.parse(CP.body() + b"\n" + line * MAX_SIGNATURES)


def test_bit_flip_in_body() -> None:
    flipped = NOTE.replace(b"\n8\n", b"\n9\n")  # 0x38 ^ 0x01
    with raises(SignatureError, "invalid signature for known key"):
        open_checkpoint(flipped, LOG.verifier)


def test_bit_flip_in_signature() -> None:
    note = Note.parse(NOTE)
    sig = note.signatures[0]
    bad = NoteSignature(sig.name, sig.key_id, bytes([sig.sig[0] ^ 1]) + sig.sig[1:])
    with raises(SignatureError, "invalid signature for known key"):
        open_checkpoint(Note(note.body, (bad,)).to_bytes(), LOG.verifier)


def test_cosignature_with_wrong_timestamp() -> None:
    sig = Note.parse(OURS["cosigned_note"].encode()).signatures[1]
    moved = (cosignature_time(sig) + 1).to_bytes(8, "big") + sig.sig[8:]
    note = add_signatures(NOTE, [NoteSignature(sig.name, sig.key_id, moved).line()])
    with raises(SignatureError, "invalid signature for known key example.com/mlledger-w"):
        verify_cosignatures(note, [WITNESS.verifier], 1)


def test_cosignature_from_the_future() -> None:
    with raises(SignatureError, f"dated {TS}, after {TS - 1}"):
        verify_cosignatures(OURS["cosigned_note"].encode(), [WITNESS.verifier], 1, not_after=TS - 1)


def test_quorum_not_met() -> None:
    note = add_signatures(OURS["cosigned_note"].encode(), [cosign(CP, WITNESS, TS + 5)])
    with raises(SignatureError, "quorum not met: 1 valid of 2 required"):
        verify_cosignatures(note, [WITNESS.verifier, WITNESS2.verifier], 2)
    note = add_signatures(note, [cosign(CP, WITNESS2, TS)])
    assert len(verify_cosignatures(note, [WITNESS.verifier, WITNESS2.verifier], 2)) == 2


def test_quorum_out_of_range() -> None:
    with raises(InputError, "quorum 2 is not in 1..1"):
        verify_cosignatures(OURS["cosigned_note"].encode(), [WITNESS.verifier], 2)


def test_one_key_under_two_witness_names() -> None:
    alias = Verifier.of("example.com/alias", WITNESS.public_key, "cosignature")
    with raises(InputError, "share a key"):
        verify_cosignatures(OURS["cosigned_note"].encode(), [WITNESS.verifier, alias], 2)


def test_control_character_in_note() -> None:
    with raises(InputError, "control character '\\t' on line 2"):
        Note.parse(NOTE.replace(b"\n8\n", b"\n8\t\n"))


def test_bad_key_names() -> None:
    for name in ["", "a b", "a+b", "a\u00a0b"]:
        with raises(InputError, "must be non-empty, without spaces"):
            Signer.from_seed(name, bytes(32))


def test_log_key_must_be_named_after_origin() -> None:
    with raises(InputError, "log key name 'example.com/other-log' differs from origin"):
        sign_checkpoint(CP, other_log())


def test_add_signatures_rejects_multiple_lines() -> None:
    with raises(InputError, "added signature 1: must be a single line"):
        add_signatures(NOTE, [OURS["cosignature_line"] * 2])


def test_proof_index_beyond_tree_size() -> None:
    with raises(InputError, "index 8 is not below tree size 8"):
        format_proof(8, [], NOTE)


def test_proof_without_checkpoint_separator() -> None:
    with raises(InputError, "no blank line before the checkpoint"):
        parse_proof(b"c2sp.org/tlog-proof@v1\nindex 0\n")


# --- properties ----------------------------------------------------------------------------------

ORIGINS = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="+"),
    min_size=1,
    max_size=30,
).filter(lambda s: not any(c.isspace() for c in s))
SIZES = st.integers(min_value=0, max_value=2**64 - 1)
ROOTS = st.binary(min_size=32, max_size=32)
EXTENSIONS = st.lists(
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1), max_size=2
)


@settings(max_examples=100, deadline=None)
@given(ORIGINS, SIZES, ROOTS, EXTENSIONS, st.integers(min_value=0, max_value=2**63 - 1))
def test_sign_then_verify_roundtrip(
    origin: str, size: int, root: bytes, ext: list[str], ts: int
) -> None:
    log = Signer.from_seed(origin, bytes(range(32)))
    cp = Checkpoint(origin, size, root, tuple(ext))
    note = add_signatures(sign_checkpoint(cp, log), [cosign(cp, WITNESS, ts)])
    assert Note.parse(note).to_bytes() == note
    assert Checkpoint.parse_body(cp.body()) == cp
    assert open_checkpoint(note, Verifier.parse(log.verifier_key), origin=origin) == cp
    assert verify_cosignatures(note, [WITNESS.verifier], 1) == [(WITNESS.verifier, ts)]


@settings(max_examples=300, deadline=None)
@given(ORIGINS, SIZES, ROOTS, st.data())
def test_any_byte_flip_fails(origin: str, size: int, root: bytes, data: st.DataObject) -> None:
    log = Signer.from_seed(origin, bytes(range(32)))
    note = bytearray(sign_checkpoint(Checkpoint(origin, size, root), log))
    pos = data.draw(st.integers(min_value=0, max_value=len(note) - 1))
    note[pos] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(MlledgerError):
        open_checkpoint(bytes(note), log.verifier)
