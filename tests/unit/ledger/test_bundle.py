"""Audit bundles: export from a real ledger, tamper with the files, verify offline (FORMAT.md 8, 9).

Every bundle is exported from a SQLite ledger under ``tmp_path`` signed with ``TEST_SIGNER``;
each attack edits the exported files the way an attacker holding the bundle could, and the
test asserts the failure kind (FORMAT.md 9.4) and, where there is one, the seq.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger._cli_bundle import export, verify_bundle_cmd
from ledger.api import Ledger
from ledger.bundle import BundleResult, Manifest, verify_bundle
from ledger.cli import Context
from ledger.errors import InputError, IntegrityError
from ledger.events import Event
from ledger.export import export_bundle
from ledger.keyhistory import sign_rotation
from ledger.kinds import KeyAdded, KeyRevoked, KeyRotated
from ledger.note import Checkpoint, Signer, cosign, sign_checkpoint
from tests.conftest import ORIGIN, TEST_SIGNER
from tests.helpers import dataset_event, policy_event

NEXT_SIGNER = Signer.from_seed(ORIGIN, bytes(range(0x60, 0x80)))
IMPOSTOR = Signer.from_seed(ORIGIN, bytes(range(0x40, 0x60)))  # the right name, the wrong key
OTHER_ORIGIN = "example.com/another-log"
OTHER_SIGNER = Signer.from_seed(OTHER_ORIGIN, bytes(range(0x80, 0xA0)))
WITNESS_A = Signer.from_seed("witness.example.org/a", bytes(range(2, 34)), cosignature=True)
WITNESS_B = Signer.from_seed("witness.example.org/b", bytes(range(3, 35)), cosignature=True)
ROOT = Path(__file__).resolve().parents[3]


# -- building and tampering ------------------------------------------------------------


def events(start: int, n: int) -> list[Event]:
    return [dataset_event(i) if i % 3 == 0 else policy_event(i) for i in range(start, start + n)]


def signed_ledger(url: str, *, origin: str = ORIGIN, signer: Signer = TEST_SIGNER) -> Ledger:
    return Ledger.init(url, origin=origin, verifier_key=signer.verifier_key, signer=signer,
                       checkpoint_every=None)


def build(url: str, dest: Path, **kw: object) -> Path:
    """A ledger of 21 entries with checkpoints at 11 and 21, exported to ``dest``."""
    with signed_ledger(url, **kw) as led:  # type: ignore[arg-type]
        led.append_many(events(0, 10))
        led.checkpoint()
        led.append_many(events(10, 10))
        led.checkpoint()
        export_bundle(led, dest)
    return dest


@pytest.fixture
def bundle(sqlite_url: str, tmp_path: Path) -> Path:
    return build(sqlite_url, tmp_path / "bundle")


def verify(path: Path, **kw: object) -> BundleResult:
    kw.setdefault("trusted", [TEST_SIGNER.verifier])
    return verify_bundle(path, **kw)  # type: ignore[arg-type]


def failed(result: BundleResult, kind: str, seq: int | None = None) -> str:
    assert not result.ok and result.kind == kind, result
    if seq is not None:
        assert result.seq == seq, result
    assert result.message
    return result.message


def lines(b: Path) -> list[bytes]:
    return (b / "entries.jsonl").read_bytes().split(b"\n")[:-1]


def write_lines(b: Path, new: list[bytes]) -> None:
    """Replace entries.jsonl, and fix the manifest as a careful attacker would."""
    data = b"".join(line + b"\n" for line in new)
    (b / "entries.jsonl").write_bytes(data)
    m = Manifest.parse((b / "manifest.json").read_bytes())
    fixed = Manifest(m.origin, len(new), m.created, hashlib.sha256(data).hexdigest())
    (b / "manifest.json").write_bytes(fixed.to_bytes())


def rechain(entries: list[bytes], start: int) -> list[bytes]:
    """Re-link ``prev`` from ``start`` on, so the chain is consistent again."""
    out = list(entries)
    for i in range(max(start, 1), len(out)):
        prev = merkle.leaf_hash(out[i - 1]).hex().encode()
        at = out[i].rindex(b'"prev":"') + 8
        out[i] = out[i][:at] + prev + out[i][at + 64 :]
    return out


def sign_for(b: Path, signer: Signer, *, origin: str = ORIGIN) -> None:
    """Sign a checkpoint of all the lines (what a holder of ``signer`` can do)."""
    entries = lines(b)
    cp = Checkpoint(origin, len(entries), merkle.root_of([merkle.leaf_hash(e) for e in entries]))
    (b / "checkpoints" / f"{len(entries)}.checkpoint").write_bytes(sign_checkpoint(cp, signer))


def modify(line: bytes) -> bytes:
    """Change one character inside the payload."""
    at = line.index(b'"payload":{"') + 13
    return line[:at] + (b"X" if line[at : at + 1] != b"X" else b"Y") + line[at + 1 :]


def zip_dir(src: Path, dest: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(src).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return dest


# -- the happy path -----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dir", "zip"])
def test_an_exported_bundle_verifies_with_the_roots_the_ledger_signed(
        sqlite_url: str, tmp_path: Path, form: str) -> None:
    dest = tmp_path / ("b.zip" if form == "zip" else "b")
    build(sqlite_url, dest)
    result = verify(dest)
    with Ledger.open(sqlite_url) as led:
        root = led.root_at(21)
    assert result.ok, result
    assert (result.origin, result.size, result.root, result.checkpoints) == (ORIGIN, 21, root, (11, 21))
    assert result.signed_by == TEST_SIGNER.verifier_key and result.kind is None


def test_the_export_has_exactly_the_bundle_layout(bundle: Path) -> None:
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    vkey = f"keys/{TEST_SIGNER.key_id.hex()}.vkey"
    assert names == ["checkpoints/11.checkpoint", "checkpoints/21.checkpoint", "entries.jsonl", vkey,
                     "manifest.json"]
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    data = (bundle / "entries.jsonl").read_bytes()
    assert manifest.keys() == {"format", "origin", "size", "created", "entries_sha256"}
    assert (manifest["format"], manifest["origin"], manifest["size"]) == ("mlledger-bundle/v1", ORIGIN, 21)
    assert manifest["entries_sha256"] == hashlib.sha256(data).hexdigest()
    assert (bundle / "manifest.json").read_bytes() == Manifest.parse(
        (bundle / "manifest.json").read_bytes()).to_bytes()
    assert (bundle / vkey).read_text() == TEST_SIGNER.verifier_key + "\n"


def test_zip_export_is_the_same_tree_with_relative_names_in_a_fixed_order(
        sqlite_url: str, tmp_path: Path) -> None:
    build(sqlite_url, tmp_path / "b")
    with Ledger.open(sqlite_url) as led:
        export_bundle(led, tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        names = zf.namelist()
        assert names == ["entries.jsonl", "checkpoints/11.checkpoint", "checkpoints/21.checkpoint",
                         f"keys/{TEST_SIGNER.key_id.hex()}.vkey", "manifest.json"]
        for name in names[:-1]:
            assert zf.read(name) == (tmp_path / "b" / name).read_bytes()
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_export_of_an_older_checkpoint_holds_only_the_entries_it_covers(
        sqlite_url: str, tmp_path: Path) -> None:
    build(sqlite_url, tmp_path / "b")
    with Ledger.open(sqlite_url) as led:
        manifest = export_bundle(led, tmp_path / "old", size=11)
    assert manifest.size == 11 and len(lines(tmp_path / "old")) == 11
    assert sorted(p.name for p in (tmp_path / "old" / "checkpoints").iterdir()) == ["11.checkpoint"]
    assert verify(tmp_path / "old").ok


def test_export_refuses_a_size_without_a_checkpoint_and_an_existing_destination(
        bundle: Path, sqlite_url: str, tmp_path: Path) -> None:
    with Ledger.open(sqlite_url) as led:
        with pytest.raises(InputError, match="no checkpoint of size 15"):
            export_bundle(led, tmp_path / "x", size=15)
        with pytest.raises(InputError, match="already exists"):
            export_bundle(led, bundle)
    assert not (tmp_path / "x").exists()


def test_export_refuses_a_ledger_without_checkpoints(ledger: Ledger, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no usable signed checkpoint"):
        export_bundle(ledger, tmp_path / "b")


def test_export_refuses_entries_that_no_longer_match_their_checkpoint(
        bundle: Path, sqlite_url: str, tmp_path: Path) -> None:
    from tests.tamper import Tamperer

    tam = Tamperer(sqlite_url)
    try:
        tam.rewrite_recomputed(4)
    finally:
        tam.close()
    with Ledger.open(sqlite_url) as led, pytest.raises(IntegrityError, match="root of checkpoint 11"):
        export_bundle(led, tmp_path / "b2.zip")
    assert list(tmp_path.glob("*b2*")) == []


# -- one test per attack (FORMAT.md 9.4) -------------------------------------------------------


def test_modified_entry_is_caught_at_its_seq(bundle: Path) -> None:
    entries = lines(bundle)
    entries[5] = modify(entries[5])
    write_lines(bundle, entries)
    assert "entry 5 was modified" in failed(verify(bundle), "modified_entry", 5)


def test_modified_entry_that_no_longer_parses_is_caught_at_its_seq(bundle: Path) -> None:
    entries = lines(bundle)
    entries[7] = entries[7].replace(b'"v":1}', b'"v":2}')
    write_lines(bundle, entries)
    assert "unsupported format version 2" in failed(verify(bundle), "modified_entry", 7)


def test_modified_last_entry_is_caught_by_the_checkpoint_root(bundle: Path) -> None:
    entries = lines(bundle)
    entries[-1] = modify(entries[-1])
    write_lines(bundle, entries)
    assert "root of checkpoint 21" in failed(verify(bundle), "modified_entry")


def test_deleted_entry_is_caught_at_its_seq(bundle: Path) -> None:
    entries = lines(bundle)
    del entries[6]
    write_lines(bundle, entries)
    assert "entry 6 is missing" in failed(verify(bundle), "deleted_entry", 6)


def test_inserted_entry_is_caught_at_its_line(bundle: Path) -> None:
    entries = lines(bundle)
    entries.insert(8, entries[3])
    write_lines(bundle, entries)
    assert "line 8 repeats seq 3 (a copy of entry 3)" in failed(verify(bundle), "inserted_entry", 8)


def test_inserted_entry_at_the_end_is_not_covered_by_any_checkpoint(bundle: Path) -> None:
    entries = lines(bundle)
    forged = entries[-1].replace(b'"seq":20,', b'"seq":21,')
    write_lines(bundle, rechain([*entries, forged], 21))
    assert "entries 21..21 are not covered" in failed(verify(bundle), "inserted_entry", 21)


def test_reordered_entries_are_caught(bundle: Path) -> None:
    entries = lines(bundle)
    entries[12], entries[13] = entries[13], entries[12]
    write_lines(bundle, entries)
    assert "out of order" in failed(verify(bundle), "reordered_entries", 12)


def test_truncated_tail_against_checkpoint_is_caught(bundle: Path) -> None:
    write_lines(bundle, lines(bundle)[:18])
    assert "only 18 entries" in failed(verify(bundle), "truncated", 18)


def test_truncated_tail_with_its_checkpoint_removed_is_caught_by_the_manifest(bundle: Path) -> None:
    (bundle / "entries.jsonl").write_bytes(b"".join(e + b"\n" for e in lines(bundle)[:15]))
    (bundle / "checkpoints" / "21.checkpoint").unlink()
    assert "the manifest lists 21 entries" in failed(verify(bundle), "truncated", 15)


def test_truncated_against_remembered_state_is_caught(
        bundle: Path, sqlite_url: str, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert verify(bundle, state=state).ok
    with Ledger.open(sqlite_url) as led:
        export_bundle(led, tmp_path / "older", size=11)
    assert verify(tmp_path / "older").ok  # on its own, a genuine older bundle verifies (FORMAT.md 9.5)
    assert "21 were verified before" in failed(verify(tmp_path / "older", state=state), "truncated", 11)


def test_fork_between_checkpoints_is_caught(bundle: Path) -> None:
    other_root = hashlib.sha256(b"another history").digest()
    (bundle / "checkpoints" / "11.checkpoint").write_bytes(
        sign_checkpoint(Checkpoint(ORIGIN, 11, other_root), TEST_SIGNER))
    assert "two inconsistent histories" in failed(verify(bundle), "fork")


def test_fork_against_remembered_state_is_caught(tmp_path: Path) -> None:
    first = build(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "a")
    twin = tmp_path / "b"
    with signed_ledger(f"sqlite:///{tmp_path / 'b.db'}") as led:  # same origin and key, other history
        led.append_many(events(100, 25))
        led.checkpoint()
        export_bundle(led, twin)
    state = tmp_path / "state.json"
    assert verify(first, state=state).ok and verify(twin).ok
    assert "history changed" in failed(verify(twin, state=state), "fork")


def test_untrusted_key_is_refused(bundle: Path) -> None:
    message = failed(verify(bundle, trusted=[IMPOSTOR.verifier]), "untrusted_key")
    assert "no valid signature from a trusted key" in message


def test_untrusted_key_includes_a_bad_signature_by_the_trusted_key(bundle: Path) -> None:
    path = bundle / "checkpoints" / "21.checkpoint"
    text = path.read_bytes()
    sig = text.rsplit(b" ", 1)[1].strip()
    raw = bytearray(base64.b64decode(sig))
    raw[10] ^= 1
    path.write_bytes(text.replace(sig, base64.b64encode(bytes(raw))))
    assert "invalid signature" in failed(verify(bundle), "untrusted_key")


def test_revoked_key_cannot_sign_beyond_its_revocation(sqlite_url: str, tmp_path: Path) -> None:
    with signed_ledger(sqlite_url) as led:
        led.append_many(events(0, 5))
        led.checkpoint()  # size 6, before the revocation
        led.append(Event(KeyRevoked(verifier_key=TEST_SIGNER.verifier_key, reason="retired"),
                         actor="admin@example.com"))
        led.append_many(events(5, 3))
        export_bundle(led, tmp_path / "b", size=6)
        tail = [e.raw for e in led.iter(start=6)]
    b = tmp_path / "b"
    write_lines(b, lines(b) + tail)  # the entries up to the head, and a checkpoint the revoked key
    sign_for(b, TEST_SIGNER)  # signs for them: valid signature, but not authorised at size 10
    assert "revoked at seq 6" in failed(verify(b), "revoked_key")


def test_compromised_key_checkpoints_are_left_out_and_refused(sqlite_url: str, tmp_path: Path) -> None:
    with signed_ledger(sqlite_url) as led:
        led.append_many(events(0, 4))
        old = led.checkpoint()  # size 5, signed by the key that will be compromised
        led.append(Event(KeyAdded(verifier_key=NEXT_SIGNER.verifier_key, purpose="checkpoint"),
                         actor="admin@example.com"))
        led.append(Event(KeyRevoked(verifier_key=TEST_SIGNER.verifier_key, reason="compromised"),
                         actor="admin@example.com"))
    with Ledger.open(sqlite_url, signer=NEXT_SIGNER, checkpoint_every=None) as led:
        led.append_many(events(4, 2))
        led.checkpoint()
        export_bundle(led, tmp_path / "b")
    b = tmp_path / "b"
    trusted = [TEST_SIGNER.verifier, NEXT_SIGNER.verifier]
    assert sorted(p.name for p in (b / "checkpoints").iterdir()) == ["9.checkpoint"]
    assert verify(b, trusted=trusted).ok
    (b / "checkpoints" / "5.checkpoint").write_bytes(old.note)
    assert "revoked as compromised" in failed(verify(b, trusted=trusted), "revoked_key", 6)


def test_rotated_key_keeps_verifying_when_only_the_original_key_is_trusted(
        sqlite_url: str, tmp_path: Path) -> None:
    with signed_ledger(sqlite_url) as led:
        led.append_many(events(0, 5))
        led.checkpoint()
        led.append(Event(KeyRotated(old_key=TEST_SIGNER.verifier_key, new_key=NEXT_SIGNER.verifier_key,
                                    old_key_signature=sign_rotation(ORIGIN, TEST_SIGNER,
                                                                    NEXT_SIGNER.verifier_key)),
                         actor="admin@example.com"))
    with Ledger.open(sqlite_url, signer=NEXT_SIGNER, checkpoint_every=None) as led:
        led.append_many(events(5, 5))
        led.checkpoint()
        export_bundle(led, tmp_path / "b")
    result = verify(tmp_path / "b")
    assert result.ok, result
    assert result.checkpoints == (6, 12) and result.signed_by == NEXT_SIGNER.verifier_key
    assert len(list((tmp_path / "b" / "keys").iterdir())) == 2


def test_rotated_key_cannot_sign_sizes_before_the_rotation(sqlite_url: str, tmp_path: Path) -> None:
    test_rotated_key_keeps_verifying_when_only_the_original_key_is_trusted(sqlite_url, tmp_path)
    b = tmp_path / "b"
    entries = lines(b)[:6]
    cp = Checkpoint(ORIGIN, 6, merkle.root_of([merkle.leaf_hash(e) for e in entries]))
    (b / "checkpoints" / "6.checkpoint").write_bytes(sign_checkpoint(cp, NEXT_SIGNER))
    assert "only introduced for sizes >= 7" in failed(verify(b), "untrusted_key")


def _replay(sqlite_url: str, tmp_path: Path, how: str) -> Path:
    ours = build(sqlite_url, tmp_path / "ours")
    theirs = build(f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "theirs", origin=OTHER_ORIGIN,
                   signer=OTHER_SIGNER)
    if how == "their bundle":
        return theirs
    if how == "their checkpoint":
        shutil.copy(theirs / "checkpoints" / "21.checkpoint", ours / "checkpoints" / "21.checkpoint")
        return ours
    # their entries, under our origin, with a checkpoint our key signed over them
    m = Manifest.parse((theirs / "manifest.json").read_bytes())
    (theirs / "manifest.json").write_bytes(Manifest(ORIGIN, m.size, m.created, m.entries_sha256).to_bytes())
    for cp in (theirs / "checkpoints").iterdir():
        cp.unlink()
    sign_for(theirs, TEST_SIGNER)
    return theirs


@pytest.mark.parametrize(("how", "says"), [
    ("their bundle", "the bundle is of log 'example.com/another-log'"),
    ("their checkpoint", "is a checkpoint of log 'example.com/another-log'"),
    ("their entries", "entry 0 is the genesis of log 'example.com/another-log'"),
])
def test_cross_log_replay_is_refused(sqlite_url: str, tmp_path: Path, how: str, says: str) -> None:
    assert says in failed(verify(_replay(sqlite_url, tmp_path, how)), "cross_log")


@pytest.mark.parametrize(("field", "value", "says"), [
    ("entries_sha256", "0" * 64, "is not the SHA-256 of entries.jsonl"),
    ("size", 20, "the manifest lists 20 entries"),
    ("format", "mlledger-bundle/v2", "is not 'mlledger-bundle/v1'"),
])
def test_manifest_hash_mismatch_is_caught(bundle: Path, field: str, value: object, says: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    manifest[field] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert says in failed(verify(bundle), "manifest_mismatch")


def _not_bundles(tmp_path: Path, bundle: Path) -> dict[str, Path]:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a bundle\n")
    random_zip = tmp_path / "random.zip"
    with zipfile.ZipFile(random_zip, "w") as zf:
        zf.writestr("hello.txt", os.urandom(64))
    no_manifest = tmp_path / "no-manifest"
    shutil.copytree(bundle, no_manifest)
    (no_manifest / "manifest.json").unlink()
    bad_json = tmp_path / "bad-json"
    shutil.copytree(bundle, bad_json)
    (bad_json / "manifest.json").write_text('{"format": "mlledger-bundle/v1", "size": 21,')
    dup_member = tmp_path / "dup-member"
    shutil.copytree(bundle, dup_member)
    (dup_member / "manifest.json").write_text(
        (dup_member / "manifest.json").read_text()[:-2] + ',"size":21}')
    no_lf = tmp_path / "no-final-lf"
    shutil.copytree(bundle, no_lf)
    (no_lf / "entries.jsonl").write_bytes((no_lf / "entries.jsonl").read_bytes()[:-1])
    return {"a text file": text, "a random zip": random_zip, "no manifest": no_manifest,
            "bad manifest JSON": bad_json, "duplicate manifest member": dup_member,
            "no final LF": no_lf}


@pytest.mark.parametrize(("case", "says"), [
    ("a text file", "neither a bundle directory nor a zip archive"),
    ("a random zip", "missing manifest.json, entries.jsonl, checkpoints/<size>.checkpoint"),
    ("no manifest", "missing manifest.json"),
    ("bad manifest JSON", "manifest.json is not valid JSON"),
    ("duplicate manifest member", "duplicate member 'size'"),
    ("no final LF", "does not end with LF"),
])
def test_not_a_bundle_is_refused(bundle: Path, tmp_path: Path, case: str, says: str) -> None:
    assert says in failed(verify(_not_bundles(tmp_path, bundle)[case]), "not_a_bundle")


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "checkpoints/../../evil", "a\\b.txt",
                                  "C:/evil"])
def test_zip_slip_member_names_are_refused(bundle: Path, tmp_path: Path, name: str) -> None:
    archive = zip_dir(bundle, tmp_path / "slip.zip", {name: b"x"})
    assert "absolute or escaping path refused" in failed(verify(archive), "not_a_bundle")
    assert not (tmp_path.parent / "evil.txt").exists()


def test_zip_with_a_symlink_member_is_refused(bundle: Path, tmp_path: Path) -> None:
    archive = zip_dir(bundle, tmp_path / "link.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("keys/link.vkey")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    assert "symbolic link" in failed(verify(archive), "not_a_bundle")


def test_directory_with_a_symlinked_checkpoint_is_refused(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.checkpoint"
    (bundle / "checkpoints" / "21.checkpoint").rename(target)
    (bundle / "checkpoints" / "21.checkpoint").symlink_to(target)
    assert "symbolic link" in failed(verify(bundle), "not_a_bundle")


def test_tampering_inside_a_zip_is_caught_like_in_a_directory(bundle: Path, tmp_path: Path) -> None:
    entries = lines(bundle)
    del entries[4]
    write_lines(bundle, entries)
    failed(verify(zip_dir(bundle, tmp_path / "b.zip")), "deleted_entry", 4)


# -- witnesses -----------------------------------------------------------------------------


@pytest.fixture
def cosigned(sqlite_url: str, tmp_path: Path) -> Path:
    """A bundle whose covering checkpoint witness A cosigned (witness B did not)."""
    with signed_ledger(sqlite_url) as led:
        led.append_many(events(0, 6))
        cp = led.checkpoint()
        assert led.attach_cosignature(cp.size, cosign(cp.note, WITNESS_A, 1_790_000_000), WITNESS_A.verifier)
        export_bundle(led, tmp_path / "b")
    return tmp_path / "b"


def test_witness_quorum_met(cosigned: Path) -> None:
    result = verify(cosigned, witnesses=[WITNESS_A.verifier, WITNESS_B.verifier], quorum=1)
    assert result.ok and result.witnesses == ("witness.example.org/a",)


def test_witness_quorum_not_met(cosigned: Path) -> None:
    message = failed(verify(cosigned, witnesses=[WITNESS_A.verifier, WITNESS_B.verifier]), "quorum_not_met")
    assert "1 of the 2 witness cosignatures required" in message
    assert "witness.example.org/b did not cosign" in message


def test_witness_quorum_counts_no_forged_cosignature(cosigned: Path) -> None:
    path = cosigned / "checkpoints" / "7.checkpoint"
    forged = cosign(Checkpoint(ORIGIN, 7, b"\x00" * 32), WITNESS_B, 1_790_000_000)  # over another tree
    path.write_bytes(path.read_bytes() + forged.encode())
    message = failed(verify(cosigned, witnesses=[WITNESS_A.verifier, WITNESS_B.verifier]), "quorum_not_met")
    assert "witness.example.org/b's cosignature is invalid" in message


def test_a_witness_revoked_in_the_log_does_not_count(sqlite_url: str, tmp_path: Path) -> None:
    with signed_ledger(sqlite_url) as led:
        led.append(Event(KeyRevoked(verifier_key=WITNESS_A.verifier_key, reason="compromised"),
                         actor="admin@example.com"))
        cp = led.checkpoint()
        led.attach_cosignature(cp.size, cosign(cp.note, WITNESS_A, 1_790_000_000), WITNESS_A.verifier)
        export_bundle(led, tmp_path / "b")
    message = failed(verify(tmp_path / "b", witnesses=[WITNESS_A.verifier]), "quorum_not_met")
    assert "revoked at entry 1" in message


@pytest.mark.parametrize(("kw", "says"), [
    ({"quorum": 1}, "needs witness keys"),
    ({"witnesses": [WITNESS_A.verifier], "quorum": 2}, "quorum 2 is not between 1 and the 1"),
    ({"witnesses": [TEST_SIGNER.verifier]}, "is a log (0x01) key"),
    ({"trusted": [WITNESS_A.verifier]}, "is a witness (0x04) key"),
    ({"trusted": []}, "at least one trusted log key"),
])
def test_bad_verifier_arguments_are_input_errors(bundle: Path, kw: dict[str, object], says: str) -> None:
    with pytest.raises(InputError, match=says.replace("(", r"\(").replace(")", r"\)")):
        verify(bundle, **kw)


# -- remembered state -----------------------------------------------------------------------


def test_state_lets_a_grown_log_pass_and_remembers_it(sqlite_url: str, tmp_path: Path) -> None:
    build(sqlite_url, tmp_path / "b")
    with Ledger.open(sqlite_url) as led:
        export_bundle(led, tmp_path / "older", size=11)
    state = tmp_path / "state.json"
    assert verify(tmp_path / "older", state=state).ok
    first = json.loads(state.read_bytes())
    assert first["logs"][ORIGIN][TEST_SIGNER.verifier_key]["size"] == 11
    result = verify(tmp_path / "b", state=state)
    assert result.ok, result
    assert json.loads(state.read_bytes())["logs"][ORIGIN][TEST_SIGNER.verifier_key] == {
        "size": 21, "root": result.root.hex() if result.root else None}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".state")] == []


def test_state_is_not_written_when_verification_fails(bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    write_lines(bundle, lines(bundle)[:18])
    failed(verify(bundle, state=state), "truncated")
    assert not state.exists()


def test_a_state_file_that_is_not_one_is_an_input_error(bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"logs": []}')
    with pytest.raises(InputError, match="not an mlledger bundle state file"):
        verify(bundle, state=state)


# -- deep mode and content checks ---------------------------------------------------------------


def test_deep_mode_catches_a_duplicate_key_inside_a_payload(bundle: Path) -> None:
    entries = lines(bundle)
    assert b'"name":"p20"' not in entries[-1] and b'"name":"' in entries[-1]
    at = entries[-1].index(b'"name":"')
    entries[-1] = entries[-1][:at] + b'"name":"evil",' + entries[-1][at:]
    write_lines(bundle, entries)
    sign_for(bundle, TEST_SIGNER)  # a log that signs what it should never have written
    assert verify(bundle).ok  # the payload is opaque to the integrity walk (FORMAT.md 9.2 B4)
    assert "duplicate member 'name'" in failed(verify(bundle, deep=True), "invalid_entry", 20)


def test_deep_mode_passes_an_honest_bundle(bundle: Path) -> None:
    assert verify(bundle, deep=True).ok


# -- property: any single change to the entries fails -------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_change_to_one_line_fails_verification(bundle: Path, data: st.DataObject) -> None:
    entries = lines(bundle)
    i = data.draw(st.integers(0, len(entries) - 1), label="line")
    at = data.draw(st.integers(0, len(entries[i]) - 1), label="byte")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != entries[i][at] and b != 0x0A), label="value")
    entries[i] = entries[i][:at] + bytes([byte]) + entries[i][at + 1 :]
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d) / "b"
        shutil.copytree(bundle, copy)
        write_lines(copy, entries)
        result = verify(copy)
    assert not result.ok and result.kind in {"modified_entry", "inserted_entry", "deleted_entry",
                                             "reordered_entries", "cross_log", "invalid_entry"}, result


# -- purity ---------------------------------------------------------------------------------------


def test_the_verifier_imports_no_orjson_sqlalchemy_or_pydantic() -> None:
    code = ("import sys, ledger.bundle; heavy = {'orjson', 'sqlalchemy', 'pydantic'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- command line --------------------------------------------------------------------------------


@click.group()
@click.option("--ledger")
@click.pass_context
def cli(ctx: click.Context, ledger: str | None) -> None:
    ctx.obj = Context(ledger, False)


cli.add_command(export)
cli.add_command(verify_bundle_cmd)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A ledger directory made by 'mlledger init' conventions: db plus keys/log.pem."""
    from ledger import keys

    for name in ("MLLEDGER_URL", "MLLEDGER_HOME", "MLLEDGER_KEY_PASSPHRASE", "CI"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    keys.save_signer(TEST_SIGNER, home / "keys", "log")
    with Ledger.init(str(home), origin=ORIGIN, verifier_key=TEST_SIGNER.verifier_key) as led:
        led.append_many(events(0, 8))
    yield home


def test_cli_export_signs_a_fresh_checkpoint_and_verify_bundle_passes(home: Path, tmp_path: Path) -> None:
    out = run("--ledger", home, "export", "-o", tmp_path / "b.zip", "--format", "json")
    assert out.exit_code == 0, out.output
    exported = json.loads(out.stdout)
    assert exported["size"] == 9 + 1 and exported["origin"] == ORIGIN  # the export's own access.read is in it
    ok = run("verify-bundle", tmp_path / "b.zip", "--trust", home / "keys" / "log.vkey", "--format", "json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["root"] == exported["root"]
    text = run("verify-bundle", tmp_path / "b.zip", "--trust", home / "keys" / "log.vkey")
    assert text.exit_code == 0 and text.stdout.startswith(f"ok: 10 entries of {ORIGIN} verify")


def test_cli_export_without_the_log_key_exports_the_latest_checkpoint(home: Path, tmp_path: Path) -> None:
    with Ledger.open(str(home), signer=TEST_SIGNER, checkpoint_every=None) as led:
        led.checkpoint()
        led.append_many(events(8, 2))
    (home / "keys" / "log.pem").unlink()
    out = run("--ledger", home, "export", "-o", tmp_path / "b")
    assert out.exit_code == 0, out.output
    assert "latest checkpoint covers 9; exporting 9" in out.stderr
    assert len(lines(tmp_path / "b")) == 9


def test_cli_verify_bundle_failure_is_exit_1_with_the_kind(home: Path, tmp_path: Path) -> None:
    assert run("--ledger", home, "export", "-o", tmp_path / "b").exit_code == 0
    entries = lines(tmp_path / "b")
    del entries[3]
    write_lines(tmp_path / "b", entries)
    out = run("verify-bundle", tmp_path / "b", "--trust", home / "keys" / "log.vkey")
    assert out.exit_code == 1
    assert out.stderr.startswith("FAILED (deleted_entry) at seq 3: entry 3 is missing")
    js = run("verify-bundle", tmp_path / "b", "--trust", home / "keys" / "log.vkey", "--format", "json")
    assert js.exit_code == 1 and json.loads(js.stdout)["kind"] == "deleted_entry"


@pytest.mark.parametrize("args", [
    lambda h, t: ["verify-bundle", t / "missing.zip", "--trust", h / "keys" / "log.vkey"],
    lambda h, t: ["verify-bundle", t / "b"],
    lambda h, t: ["verify-bundle", t / "b", "--trust", h / "keys" / "log.pem"],
    lambda h, t: ["verify-bundle", t / "b", "--trust", h / "keys" / "log.vkey", "--quorum", "1"],
    lambda h, t: ["--ledger", h, "export", "-o", t / "b"],
    lambda h, t: ["--ledger", h, "export", "-o", t / "c", "--size", "4"],
])
def test_cli_usage_and_input_errors_are_exit_2(
        home: Path, tmp_path: Path, args: Callable[[Path, Path], list[object]]) -> None:
    assert run("--ledger", home, "export", "-o", tmp_path / "b").exit_code == 0
    out = run(*args(home, tmp_path))  # type: ignore[arg-type]
    assert out.exit_code == 2, out.output
    assert "PRIVATE KEY" not in out.output


def test_cli_state_remembers_between_runs(home: Path, tmp_path: Path) -> None:
    vkey, state = home / "keys" / "log.vkey", tmp_path / "seen.json"
    assert run("--ledger", home, "export", "-o", tmp_path / "b1").exit_code == 0
    with Ledger.open(str(home)) as led:
        led.append_many(events(8, 3))
    assert run("--ledger", home, "export", "-o", tmp_path / "b2").exit_code == 0
    assert run("verify-bundle", tmp_path / "b2", "--trust", vkey, "--state", state).exit_code == 0
    again = run("verify-bundle", tmp_path / "b1", "--trust", vkey, "--state", state)
    assert again.exit_code == 1 and "FAILED (truncated)" in again.stderr


# -- test vector (tests/vectors/bundle) ----------------------------------------------------------

VECTORS = ROOT / "tests" / "vectors" / "bundle"


@pytest.mark.parametrize(("name", "form"), [
    ("format-2.8", "format-2.8"),
    ("valid-rotated-cosigned", "valid-rotated-cosigned"),
    ("valid-rotated-cosigned", "valid-rotated-cosigned.zip"),
])
def test_the_committed_bundle_vectors_verify_with_their_expected_roots(name: str, form: str) -> None:
    from ledger.note import Verifier

    want = json.loads((VECTORS / f"{name}.json").read_text())
    result = verify_bundle(VECTORS / form, trusted=[Verifier.parse(want["log_vkey"])],
                           witnesses=[Verifier.parse(want["witness_vkey"])], deep=True)
    assert result.ok, result
    assert (result.origin, result.size, result.root.hex() if result.root else None) == (
        want["origin"], want["size"], want["root"])
    assert list(result.checkpoints) == want["checkpoints"] and result.signed_by == want["signed_by"]
    assert list(result.witnesses) == want["witnesses"]
    entries = (VECTORS / name / "entries.jsonl").read_bytes().split(b"\n")[:-1]
    assert merkle.root_of([merkle.leaf_hash(e) for e in entries]).hex() == want["root"]


def test_the_format_example_bundle_fails_under_another_key() -> None:
    assert verify_bundle(VECTORS / "format-2.8", trusted=[IMPOSTOR.verifier]).kind == "untrusted_key"
