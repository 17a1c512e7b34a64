"""``mlledger checkpoint|key|prove|verify-proof`` and the witness round trip (ledger/_cli_log.py).

Every test drives ``ledger.cli.root`` through click's ``CliRunner`` against a real SQLite
ledger made by ``mlledger init`` under ``tmp_path``. Exit codes (DESIGN.md section 9): 0 ok,
1 verification failed, 2 usage or input error; errors are one ``error: ...`` line on stderr.
"""

from __future__ import annotations

import base64
import json
import os
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ledger import keys, merkle
from ledger.api import Ledger
from ledger.cli import root
from ledger.errors import SignatureError
from ledger.note import Verifier, open_checkpoint, verify_cosignatures
from ledger.tlog_proof import parse_proof
from tests.helpers import dataset_event, policy_event

ORIGIN = "example.com/t"
OTHER_ORIGIN = "example.com/other"
PASSPHRASE = "correct horse battery staple"
PUBKEY_B64 = base64.b64encode(bytes(range(32))).decode()
ENV_VARS = ("MLLEDGER_URL", "MLLEDGER_HOME", "MLLEDGER_KEY_PASSPHRASE", "MLLEDGER_ACTOR", "CI")


# -- helpers ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ambient ledger, passphrase or actor; the default ./.mlledger lands in tmp_path."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def cli(*args: str, input: bytes | str | None = None) -> Result:
    return CliRunner().invoke(root, list(args), input=input)


def on(ledger: str, *args: str, input: bytes | str | None = None) -> Result:
    """Run a command against the ledger at ``ledger``."""
    return cli("--ledger", ledger, *args, input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def error_line(result: Result) -> str:
    """The single ``error: ...`` line on stderr (no traceback, nothing else)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def failed(result: Result, code: int) -> str:
    """The command exited with ``code`` (not a crash) and printed one error line."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    return error_line(result)


def identity(name: str) -> dict[str, Any]:
    return {"kind": "identity.registered", "actor": "admin@example.com", "subject": f"identity:{name}",
            "payload": {"name": name, "roles": ["validator"], "public_key": PUBKEY_B64}}


def append(ledger: str, *names: str) -> Result:
    """Append one identity per name, in one ``mlledger append --file`` command."""
    path = Path(ledger).parent / "events.jsonl"
    path.write_text("".join(json.dumps(identity(n)) + "\n" for n in names))
    return ok(on(ledger, "append", "--file", str(path)))


def append_unsigned(ledger: str, n: int = 1) -> None:
    """Append ``n`` entries through the API without a signer: no checkpoint covers them."""
    with closing(Ledger.open(ledger, checkpoint_every=None)) as led:
        led.append_many([policy_event(100 + i) for i in range(n)])


def key_dir(ledger: str) -> Path:
    return Path(ledger) / "keys"


def log_vkey(ledger: str) -> Verifier:
    return keys.load_verifier(key_dir(ledger) / "log.vkey")


def head(ledger: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(ok(on(ledger, "head", "--format", "json")).stdout)
    return out


def checkpoint_rows(ledger: str) -> list[dict[str, Any]]:
    result = ok(on(ledger, "checkpoint", "list", "--format", "json"))
    return [json.loads(x) for x in result.stdout.splitlines()]


def key_rows(ledger: str) -> list[dict[str, Any]]:
    result = ok(on(ledger, "key", "list", "--format", "json"))
    return [json.loads(x) for x in result.stdout.splitlines()]


def size_of(ledger: str) -> int:
    with closing(Ledger.open(ledger, checkpoint_every=None)) as led:
        return led.head().size


def root_at(ledger: str, size: int) -> bytes:
    with closing(Ledger.open(ledger, checkpoint_every=None)) as led:
        return led.root_at(size)


def init(path: Path, origin: str = ORIGIN) -> str:
    d = str(path)
    ok(on(d, "init", "--origin", origin))
    return d


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    """A fresh ledger directory: its genesis entry and no checkpoint yet."""
    return init(tmp_path / "l")


@pytest.fixture
def populated(ledger: str) -> str:
    """Six entries (genesis + five identities), covered by the checkpoint append signed at size 6."""
    append(ledger, "alice", "bob", "carol", "dave", "erin")
    return ledger


def prove(ledger: str, seq: int, tmp_path: Path) -> tuple[Path, Path]:
    """``prove SEQ -o FILE --entry-out FILE``; returns (proof file, entry file)."""
    proof, entry = tmp_path / f"{seq}.tlog-proof", tmp_path / f"{seq}.entry"
    ok(on(ledger, "prove", str(seq), "-o", str(proof), "--entry-out", str(entry)))
    return proof, entry


def verify_proof(proof: Path, entry: Path, trust: Path) -> Result:
    return cli("verify-proof", str(proof), "--entry", str(entry), "--trust", str(trust))


def witness_init(tmp_path: Path, name: str = "witness.example.com/w1") -> Path:
    directory = tmp_path / name.rsplit("/", 1)[-1]
    ok(cli("witness", "init", "--name", name, "--dir", str(directory)))
    return directory


def cosign(ledger: str, witness: Path, old: int, tmp_path: Path) -> Path:
    """Request a cosignature of the latest checkpoint from ``witness``; returns the line's file."""
    req = tmp_path / f"req-{witness.name}-{old}"
    ok(on(ledger, "checkpoint", "witness-request", "--old", str(old), "-o", str(req)))
    result = ok(cli("witness", "add-checkpoint", str(req), "--log-key", str(key_dir(ledger) / "log.vkey"),
                    "--key", str(witness / "witness.pem"), "--state", str(witness / "state.json")))
    line = tmp_path / f"cosig-{witness.name}-{old}"
    line.write_text(result.stdout)
    return line


# -- checkpoint --------------------------------------------------------------------


def test_checkpoint_signs_a_note_that_opens_with_the_log_vkey(ledger: str) -> None:
    result = ok(on(ledger, "checkpoint"))
    cp = open_checkpoint(result.stdout.encode(), log_vkey(ledger))
    assert cp.origin == ORIGIN
    assert cp.size == 1


def test_checkpoint_size_and_root_equal_head(ledger: str) -> None:
    append_unsigned(ledger, 4)
    cp = open_checkpoint(ok(on(ledger, "checkpoint")).stdout.encode(), log_vkey(ledger))
    h = head(ledger)
    assert (cp.size, cp.root.hex()) == (h["size"], h["root"]) == (5, root_at(ledger, 5).hex())


def test_checkpoint_format_json_gives_id_size_root_and_the_note(ledger: str) -> None:
    append_unsigned(ledger, 2)
    out = json.loads(ok(on(ledger, "checkpoint", "--format", "json")).stdout)
    assert set(out) == {"id", "size", "root", "note"}
    h = head(ledger)
    assert (out["size"], out["root"]) == (h["size"], h["root"])
    cp = open_checkpoint(out["note"].encode(), log_vkey(ledger))
    assert (cp.size, cp.root.hex()) == (out["size"], out["root"])


def test_checkpoint_of_an_unchanged_log_returns_the_same_checkpoint(ledger: str) -> None:
    first = ok(on(ledger, "checkpoint")).stdout
    assert ok(on(ledger, "checkpoint")).stdout == first
    assert len(checkpoint_rows(ledger)) == 1


def test_checkpoint_list_format_json_lists_every_checkpoint_oldest_first(ledger: str) -> None:
    ok(on(ledger, "checkpoint"))
    append_unsigned(ledger, 2)
    ok(on(ledger, "checkpoint"))
    rows = checkpoint_rows(ledger)
    assert [r["size"] for r in rows] == [1, 3]
    assert rows[0]["id"] < rows[1]["id"]
    for r in rows:
        assert set(r) == {"id", "size", "root", "witnesses"}
        assert r["root"] == root_at(ledger, r["size"]).hex()
        assert r["witnesses"] == []


def test_checkpoint_list_text_shows_one_line_per_checkpoint(ledger: str) -> None:
    ok(on(ledger, "checkpoint"))
    append_unsigned(ledger)
    ok(on(ledger, "checkpoint"))
    lines = ok(on(ledger, "checkpoint", "list")).stdout.splitlines()
    assert len(lines) == 2
    assert "size 2" in lines[1]
    assert root_at(ledger, 2).hex() in lines[1]
    assert "witnesses 0" in lines[1]


def test_checkpoint_show_prints_the_latest_note(ledger: str) -> None:
    ok(on(ledger, "checkpoint"))
    append_unsigned(ledger)
    latest = ok(on(ledger, "checkpoint")).stdout
    shown = ok(on(ledger, "checkpoint", "show")).stdout
    assert shown == latest
    assert open_checkpoint(shown.encode(), log_vkey(ledger)).size == 2


def test_checkpoint_show_size_prints_that_checkpoint(ledger: str) -> None:
    first = ok(on(ledger, "checkpoint")).stdout
    append_unsigned(ledger)
    ok(on(ledger, "checkpoint"))
    assert ok(on(ledger, "checkpoint", "show", "1")).stdout == first


def test_checkpoint_show_of_a_size_never_signed_exits_2(ledger: str) -> None:
    ok(on(ledger, "checkpoint"))
    msg = failed(on(ledger, "checkpoint", "show", "999"), 2)
    assert "no such checkpoint" in msg


def test_append_signs_a_checkpoint_at_the_end(ledger: str) -> None:
    ok(on(ledger, "checkpoint"))
    before = checkpoint_rows(ledger)
    append(ledger, "alice", "bob")
    after = checkpoint_rows(ledger)
    assert len(after) == len(before) + 1
    assert after[:-1] == before
    assert after[-1]["size"] == head(ledger)["size"] == 3
    note = ok(on(ledger, "checkpoint", "show")).stdout.encode()
    assert open_checkpoint(note, log_vkey(ledger)).root.hex() == head(ledger)["root"]


def test_append_with_the_key_locked_appends_and_says_no_checkpoint_was_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLEDGER_KEY_PASSPHRASE", PASSPHRASE)
    d = init(tmp_path / "l")
    monkeypatch.delenv("MLLEDGER_KEY_PASSPHRASE")

    result = ok(on(d, "append", json.dumps(identity("alice"))))
    assert "appended seq 1" in result.stdout
    assert "no checkpoint signed" in result.stderr
    assert size_of(d) == 2
    assert checkpoint_rows(d) == []


def test_append_with_the_passphrase_set_signs_with_the_encrypted_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLEDGER_KEY_PASSPHRASE", PASSPHRASE)
    d = init(tmp_path / "l")
    result = ok(on(d, "append", json.dumps(identity("alice"))))
    assert "no checkpoint" not in result.stderr
    assert [r["size"] for r in checkpoint_rows(d)] == [2]


def test_append_after_the_log_key_was_revoked_reports_the_committed_entry(ledger: str) -> None:
    """The entry is committed, so append must report it (exit 0, the receipt) and only note on
    stderr that no checkpoint was signed, as it does for a locked key. Exiting 2 after the commit
    invites a retry that appends the event twice.
    """
    ok(on(ledger, "key", "revoke", str(key_dir(ledger) / "log.vkey"), "--reason", "compromised"))
    before = size_of(ledger)
    result = on(ledger, "append", json.dumps(identity("alice")))
    assert size_of(ledger) == before + 1
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    assert f"appended seq {before}" in result.stdout
    assert "no checkpoint" in result.stderr.lower()


# -- prove and verify-proof -----------------------------------------------------------


def test_prove_and_verify_proof_round_trip_exits_0(populated: str, tmp_path: Path) -> None:
    proof, entry = prove(populated, 3, tmp_path)
    result = ok(verify_proof(proof, entry, key_dir(populated) / "log.vkey"))
    assert result.stdout.strip() == f"ok: entry 3 is in {ORIGIN} at size 6 (root {head(populated)['root']})"


def test_prove_writes_the_stored_entry_bytes_and_a_proof_against_the_latest_checkpoint(
    populated: str, tmp_path: Path
) -> None:
    proof, entry = prove(populated, 2, tmp_path)
    with closing(Ledger.open(populated, checkpoint_every=None)) as led:
        assert entry.read_bytes() == led.get(2).raw
    index, hashes, note = parse_proof(proof.read_bytes())
    cp = open_checkpoint(note, log_vkey(populated))
    assert (index, cp.size) == (2, 6)
    merkle.verify_inclusion(merkle.leaf_hash(entry.read_bytes()), 2, 6, hashes, cp.root)


def test_verify_proof_format_json_reports_seq_size_root_and_origin(populated: str, tmp_path: Path) -> None:
    proof, entry = prove(populated, 1, tmp_path)
    result = ok(cli("verify-proof", str(proof), "--entry", str(entry),
                    "--trust", str(key_dir(populated) / "log.vkey"), "--format", "json"))
    assert json.loads(result.stdout) == {"ok": True, "seq": 1, "size": 6, "root": head(populated)["root"],
                                         "origin": ORIGIN}


def test_verify_proof_accepts_the_entry_with_a_trailing_newline(populated: str, tmp_path: Path) -> None:
    proof, entry = prove(populated, 4, tmp_path)
    entry.write_bytes(entry.read_bytes() + b"\n")
    ok(verify_proof(proof, entry, key_dir(populated) / "log.vkey"))


def test_verify_proof_exits_1_when_the_entry_has_one_byte_changed(populated: str, tmp_path: Path) -> None:
    proof, entry = prove(populated, 3, tmp_path)
    data = entry.read_bytes()
    at = data.index(b'"name":"carol"') + len(b'"name":"')
    entry.write_bytes(data[:at] + b"k" + data[at + 1 :])  # carol -> karol
    failed(verify_proof(proof, entry, key_dir(populated) / "log.vkey"), 1)


def test_verify_proof_exits_1_when_a_proof_hash_is_altered(populated: str, tmp_path: Path) -> None:
    proof, entry = prove(populated, 3, tmp_path)
    lines = proof.read_bytes().split(b"\n")
    assert lines[1] == b"index 3"
    h = bytearray(base64.b64decode(lines[2]))
    h[0] ^= 1
    lines[2] = base64.b64encode(bytes(h))  # still a canonical 32-byte hash, but the wrong one
    proof.write_bytes(b"\n".join(lines))
    msg = failed(verify_proof(proof, entry, key_dir(populated) / "log.vkey"), 1)
    assert "root" in msg


def test_verify_proof_exits_1_under_another_logs_vkey_naming_the_origin(
    populated: str, tmp_path: Path
) -> None:
    other = init(tmp_path / "other", OTHER_ORIGIN)
    proof, entry = prove(populated, 3, tmp_path)
    msg = failed(verify_proof(proof, entry, key_dir(other) / "log.vkey"), 1)
    assert "origin" in msg
    assert ORIGIN in msg


def test_verify_proof_exits_1_under_another_key_of_the_same_origin_naming_the_signature(
    populated: str, tmp_path: Path
) -> None:
    impostor = init(tmp_path / "impostor", ORIGIN)
    proof, entry = prove(populated, 3, tmp_path)
    msg = failed(verify_proof(proof, entry, key_dir(impostor) / "log.vkey"), 1)
    assert "signature" in msg


def test_verify_proof_exits_1_for_another_seqs_entry(populated: str, tmp_path: Path) -> None:
    proof, _ = prove(populated, 3, tmp_path)
    _, entry_4 = prove(populated, 4, tmp_path)
    msg = failed(verify_proof(proof, entry_4, key_dir(populated) / "log.vkey"), 1)
    assert "entry 3" in msg


def test_verify_proof_of_a_file_that_is_not_a_proof_exits_2_naming_the_line(
    populated: str, tmp_path: Path
) -> None:
    _, entry = prove(populated, 3, tmp_path)
    not_a_proof = tmp_path / "checkpoint.note"
    not_a_proof.write_text(ok(on(populated, "checkpoint", "show")).stdout)
    msg = failed(verify_proof(not_a_proof, entry, key_dir(populated) / "log.vkey"), 2)
    assert "line 1" in msg
    assert "c2sp.org/tlog-proof@v1" in msg


def test_verify_proof_of_an_entry_file_given_as_the_proof_exits_2(populated: str, tmp_path: Path) -> None:
    _, entry = prove(populated, 3, tmp_path)
    msg = failed(verify_proof(entry, entry, key_dir(populated) / "log.vkey"), 2)
    assert "tlog-proof" in msg


def test_prove_before_any_checkpoint_exits_2_saying_to_run_checkpoint(ledger: str) -> None:
    msg = failed(on(ledger, "prove", "0"), 2)
    assert "mlledger checkpoint" in msg


def test_prove_of_a_seq_no_checkpoint_covers_yet_exits_2_saying_to_run_checkpoint(ledger: str) -> None:
    ok(on(ledger, "checkpoint"))
    append_unsigned(ledger)
    msg = failed(on(ledger, "prove", "1"), 2)
    assert "seq 1" in msg
    assert "mlledger checkpoint" in msg
    ok(on(ledger, "checkpoint"))
    ok(on(ledger, "prove", "1"))


def test_prove_consistency_output_verifies_against_the_ledger_roots(populated: str) -> None:
    result = ok(on(populated, "prove", "--consistency", "2", "5"))
    proof = [base64.b64decode(x, validate=True) for x in result.stdout.splitlines()]
    assert len(proof) == len(merkle.consistency_ranges(2, 5))
    merkle.verify_consistency(2, 5, root_at(populated, 2), root_at(populated, 5), proof)


def test_prove_consistency_format_json_carries_the_roots(populated: str) -> None:
    out = json.loads(ok(on(populated, "prove", "--consistency", "2", "5", "--format", "json")).stdout)
    assert (out["old"], out["new"]) == (2, 5)
    assert out["old_root"] == root_at(populated, 2).hex()
    assert out["new_root"] == root_at(populated, 5).hex()
    proof = [base64.b64decode(x) for x in out["proof"]]
    merkle.verify_consistency(2, 5, bytes.fromhex(out["old_root"]), bytes.fromhex(out["new_root"]), proof)


def test_prove_consistency_with_old_larger_than_new_exits_2(populated: str) -> None:
    msg = failed(on(populated, "prove", "--consistency", "5", "2"), 2)
    assert "old <= new" in msg


# -- key rotate --------------------------------------------------------------------


def rotate(ledger: str) -> int:
    """``key rotate``; returns the seq of the key.rotated entry."""
    out = ok(on(ledger, "key", "rotate")).stdout
    assert out.startswith("rotated at seq ")
    return int(out.split()[3].rstrip(":"))


def test_key_rotate_ends_the_old_key_and_makes_a_new_current_key(populated: str) -> None:
    old = log_vkey(populated)
    seq = rotate(populated)
    new = log_vkey(populated)
    assert new != old
    assert new.name == ORIGIN
    rows = {r["vkey"]: r for r in key_rows(populated)}
    assert set(rows) == {str(old), str(new)}
    assert rows[str(old)]["ended"] == f"rotated at seq {seq}"
    assert rows[str(old)]["current"] is False
    assert (rows[str(old)]["valid_from_size"], rows[str(old)]["valid_until_size"]) == (1, seq)
    assert rows[str(new)]["current"] is True
    assert (rows[str(new)]["valid_from_size"], rows[str(new)]["valid_until_size"]) == (seq + 1, None)
    text = ok(on(populated, "key", "list")).stdout
    assert f"rotated at seq {seq}" in text
    assert f"{new}  sizes {seq + 1}..  current" in text


def test_key_rotate_keeps_the_old_private_key_in_retired(populated: str) -> None:
    old_pem = (key_dir(populated) / "log.pem").read_bytes()
    old = log_vkey(populated)
    rotate(populated)
    retired = key_dir(populated) / "retired"
    stem = f"log-{old.key_id.hex()}"
    assert sorted(p.name for p in retired.iterdir()) == [f"{stem}.pem", f"{stem}.vkey"]
    assert (retired / f"{stem}.pem").read_bytes() == old_pem
    assert keys.load_verifier(retired / f"{stem}.vkey") == old
    assert (key_dir(populated) / "log.pem").read_bytes() != old_pem
    assert not list(key_dir(populated).glob("log.next*"))


def test_checkpoint_after_rotation_is_signed_by_the_new_key_only(populated: str) -> None:
    old = log_vkey(populated)
    rotate(populated)
    new = log_vkey(populated)
    append_unsigned(populated)
    note = ok(on(populated, "checkpoint")).stdout.encode()
    cp = open_checkpoint(note, new)
    assert (cp.size, cp.root.hex()) == (head(populated)["size"], head(populated)["root"])
    with pytest.raises(SignatureError):
        open_checkpoint(note, old)


def test_key_rotate_signs_the_old_keys_last_checkpoint_and_the_new_keys_first(populated: str) -> None:
    old = log_vkey(populated)
    seq = rotate(populated)
    new = log_vkey(populated)
    notes = {r["size"]: ok(on(populated, "checkpoint", "show", str(r["size"]))).stdout.encode()
             for r in checkpoint_rows(populated)}
    assert open_checkpoint(notes[seq], old).size == seq
    assert open_checkpoint(notes[seq + 1], new).size == seq + 1


def test_verify_exits_0_after_rotation(populated: str) -> None:
    rotate(populated)
    append(populated, "frank")
    result = ok(on(populated, "verify"))
    assert result.stdout.startswith(f"ok: {size_of(populated)} entries verify")
    ok(on(populated, "verify", "--deep"))


def test_a_second_rotation_also_works(populated: str) -> None:
    first = log_vkey(populated)
    seq1 = rotate(populated)
    second = log_vkey(populated)
    seq2 = rotate(populated)
    third = log_vkey(populated)
    assert len({str(first), str(second), str(third)}) == 3
    rows = {r["vkey"]: r for r in key_rows(populated)}
    assert rows[str(first)]["ended"] == f"rotated at seq {seq1}"
    assert rows[str(second)]["ended"] == f"rotated at seq {seq2}"
    assert [v for v, r in rows.items() if r["current"]] == [str(third)]
    retired = sorted(p.name for p in (key_dir(populated) / "retired").glob("*.pem"))
    assert retired == sorted(f"log-{k.key_id.hex()}.pem" for k in (first, second))
    append_unsigned(populated)
    note = ok(on(populated, "checkpoint")).stdout.encode()
    assert open_checkpoint(note, third).size == size_of(populated)
    for old in (first, second):
        with pytest.raises(SignatureError):
            open_checkpoint(note, old)
    ok(on(populated, "verify"))


# -- key revoke / key add ------------------------------------------------------------


def test_checkpoint_after_revoking_the_log_key_exits_2_naming_no_current_key(populated: str) -> None:
    vkey = log_vkey(populated)
    out = ok(on(populated, "key", "revoke", str(key_dir(populated) / "log.vkey"), "--reason", "compromised"))
    assert f"revoked {vkey}" in out.stdout
    before = checkpoint_rows(populated)
    msg = failed(on(populated, "checkpoint"), 2)
    assert "no current checkpoint key" in msg
    assert checkpoint_rows(populated) == before
    rows = {r["vkey"]: r for r in key_rows(populated)}
    assert rows[str(vkey)]["ended"].startswith("revoked at seq ")
    assert "compromised" in rows[str(vkey)]["ended"]
    assert not any(r["current"] for r in rows.values())


def test_key_add_then_installing_the_new_key_allows_checkpoints_again(populated: str, tmp_path: Path) -> None:
    kd = key_dir(populated)
    revoked = log_vkey(populated)
    ok(on(populated, "key", "revoke", str(kd / "log.vkey"), "--reason", "compromised"))
    signer = keys.generate(ORIGIN)
    pem, _ = keys.save_signer(signer, tmp_path / "new", "log")
    out = ok(on(populated, "key", "add", str(pem.with_suffix(".vkey")), "--purpose", "checkpoint"))
    assert f"added checkpoint key {signer.verifier_key}" in out.stdout
    rows = {r["vkey"]: r for r in key_rows(populated)}
    assert rows[signer.verifier_key]["current"] is True

    # the revoked key is still installed: it may not sign
    msg = failed(on(populated, "checkpoint"), 2)
    assert "not the log's current checkpoint key" in msg

    os.replace(pem, kd / "log.pem")
    os.replace(pem.with_suffix(".vkey"), kd / "log.vkey")
    note = ok(on(populated, "checkpoint")).stdout.encode()
    cp = open_checkpoint(note, signer.verifier)
    assert (cp.size, cp.root.hex()) == (head(populated)["size"], head(populated)["root"])
    with pytest.raises(SignatureError):
        open_checkpoint(note, revoked)
    ok(on(populated, "verify"))


def test_key_rotate_after_revocation_exits_2_and_leaves_the_keys(populated: str) -> None:
    ok(on(populated, "key", "revoke", str(key_dir(populated) / "log.vkey"), "--reason", "retired"))
    before = sorted(p.name for p in key_dir(populated).rglob("*"))
    size = size_of(populated)
    msg = failed(on(populated, "key", "rotate"), 2)
    assert "no current checkpoint key" in msg
    assert sorted(p.name for p in key_dir(populated).rglob("*")) == before
    assert size_of(populated) == size


# -- witness round trip ----------------------------------------------------------------


def test_witness_cosignature_is_attached_and_listed(populated: str, tmp_path: Path) -> None:
    witness = witness_init(tmp_path)
    wkey = keys.load_verifier(witness / "witness.vkey")
    line = cosign(populated, witness, 0, tmp_path)
    assert line.read_text().startswith(f"\u2014 {wkey.name} ")

    out = ok(on(populated, "checkpoint", "attach", str(line), "--witness", str(witness / "witness.vkey")))
    assert out.stdout.strip() == f"attached 1 cosignature(s) from {wkey.name} to checkpoint 6"
    rows = checkpoint_rows(populated)
    assert rows[-1]["size"] == 6
    assert rows[-1]["witnesses"] == [str(wkey)]

    shown = ok(on(populated, "checkpoint", "show")).stdout.encode()
    assert shown.endswith(line.read_bytes())
    assert open_checkpoint(shown, log_vkey(populated)).size == 6
    assert [w for w, _ in verify_cosignatures(shown, [wkey], 1)] == [wkey]


def test_attaching_the_same_cosignature_twice_stores_it_once(populated: str, tmp_path: Path) -> None:
    witness = witness_init(tmp_path)
    line = cosign(populated, witness, 0, tmp_path)
    ok(on(populated, "checkpoint", "attach", str(line), "--witness", str(witness / "witness.vkey")))
    out = ok(on(populated, "checkpoint", "attach", str(line), "--witness", str(witness / "witness.vkey")))
    assert "attached 0 cosignature(s)" in out.stdout
    assert len(checkpoint_rows(populated)[-1]["witnesses"]) == 1


def test_attaching_a_cosignature_from_another_witness_than_named_exits_1(
    populated: str, tmp_path: Path
) -> None:
    named = witness_init(tmp_path, "witness.example.com/w1")
    other = witness_init(tmp_path, "witness.example.com/w2")
    line = cosign(populated, other, 0, tmp_path)
    result = on(populated, "checkpoint", "attach", str(line), "--witness", str(named / "witness.vkey"))
    msg = failed(result, 1)
    assert "cosignature" in msg
    assert checkpoint_rows(populated)[-1]["witnesses"] == []


def test_witness_cosigns_again_after_the_log_grows(populated: str, tmp_path: Path) -> None:
    witness = witness_init(tmp_path)
    wvkey = str(witness / "witness.vkey")
    first = cosign(populated, witness, 0, tmp_path)
    ok(on(populated, "checkpoint", "attach", str(first), "--witness", wvkey))
    previous = checkpoint_rows(populated)[-1]["size"]

    append(populated, "frank", "grace", "heidi")
    grown = checkpoint_rows(populated)[-1]["size"]
    assert grown == previous + 3
    line = cosign(populated, witness, previous, tmp_path)
    out = ok(on(populated, "checkpoint", "attach", str(line), "--witness", wvkey))
    assert f"to checkpoint {grown}" in out.stdout
    wkey = str(keys.load_verifier(witness / "witness.vkey"))
    by_size = {r["size"]: r["witnesses"] for r in checkpoint_rows(populated)}
    assert by_size[previous] == [wkey]
    assert by_size[grown] == [wkey]
    state = json.loads(ok(cli("witness", "show", "--state", str(witness / "state.json"),
                              "--format", "json")).stdout)
    assert [(r["size"], r["root_hex"]) for r in state["logs"]] == [(grown, head(populated)["root"])]


def test_witness_request_from_a_stale_old_size_is_refused_by_the_witness(
    populated: str, tmp_path: Path
) -> None:
    witness = witness_init(tmp_path)
    cosign(populated, witness, 0, tmp_path)
    append(populated, "frank")
    req = tmp_path / "stale"
    ok(on(populated, "checkpoint", "witness-request", "--old", "0", "-o", str(req)))
    msg = failed(cli("witness", "add-checkpoint", str(req), "--log-key", str(key_dir(populated) / "log.vkey"),
                     "--key", str(witness / "witness.pem"), "--state", str(witness / "state.json")), 1)
    assert "old 6" in msg


def test_witness_request_with_old_beyond_the_checkpoint_exits_2(populated: str, tmp_path: Path) -> None:
    msg = failed(on(populated, "checkpoint", "witness-request", "--old", "7", "-o", str(tmp_path / "r")), 2)
    assert "--old 7" in msg


def test_checkpoint_attach_of_an_empty_file_exits_2(populated: str, tmp_path: Path) -> None:
    witness = witness_init(tmp_path)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = on(populated, "checkpoint", "attach", str(empty), "--witness", str(witness / "witness.vkey"))
    msg = failed(result, 2)
    assert "no cosignature line" in msg


def test_dataset_events_are_provable_too(ledger: str, tmp_path: Path) -> None:
    with closing(Ledger.open(ledger, checkpoint_every=None)) as led:
        led.append(dataset_event(0))
    ok(on(ledger, "checkpoint"))
    proof, entry = prove(ledger, 1, tmp_path)
    assert b'"mean":41.5' in entry.read_bytes()
    ok(verify_proof(proof, entry, key_dir(ledger) / "log.vkey"))
