"""The ``mlledger`` root CLI: init, append, log, show, head, verify (DESIGN.md sections 2, 3, 9).

Every test drives ``ledger.cli.root`` through click's ``CliRunner`` against a real
SQLite ledger under ``tmp_path``. Exit codes: 0 ok, 1 verification failed, 2 usage
or input error. Errors are one ``error: ...`` line on stderr unless ``--debug``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ledger.api import Ledger
from ledger.canonical import MAX_PAYLOAD_BYTES
from ledger.cli import root
from ledger.errors import InputError
from ledger.note import Signer
from tests.helpers import dataset_event, policy_event

ORIGIN = "example.com/t"
#: A valid verifier key for ``key.added`` payloads (deterministic, never a real secret).
OTHER_VKEY = Signer.from_seed("example.com/witness", bytes(range(32, 64)), cosignature=True).verifier_key
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


def identity(name: str = "alice", *, actor: str = "admin@example.com") -> dict[str, Any]:
    return {
        "kind": "identity.registered",
        "actor": actor,
        "subject": f"identity:{name}",
        "payload": {"name": name, "roles": ["validator"], "public_key": PUBKEY_B64},
    }


def key_added() -> dict[str, Any]:
    return {"kind": "key.added", "actor": "admin@example.com", "subject": None,
            "payload": {"verifier_key": OTHER_VKEY, "purpose": "witness"}}


def dataset(i: int = 0) -> dict[str, Any]:
    return dataset_event(i).to_json()


def policy(i: int = 0) -> dict[str, Any]:
    return policy_event(i).to_json()


def line(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


def write_jsonl(path: Path, lines: Sequence[str | bytes]) -> str:
    path.write_bytes(b"".join((x.encode() if isinstance(x, str) else x) + b"\n" for x in lines))
    return str(path)


def size_of(ledger: str) -> int:
    with closing(Ledger.open(ledger)) as led:
        return led.head().size


def raw_entries(ledger: str) -> list[bytes]:
    with closing(Ledger.open(ledger)) as led:
        return [e.raw for e in led.iter()]


def error_line(result: Result) -> str:
    """The single ``error: ...`` line on stderr (no traceback, nothing else)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def assert_refused(ledger: str, result: Result, before: list[bytes], *needles: str) -> str:
    """Exit 2, one error line naming every needle, nothing written, and the ledger verifies."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit), result.exception
    msg = error_line(result)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    assert result.stdout == ""
    assert raw_entries(ledger) == before
    assert on(ledger, "verify").exit_code == 0
    return msg


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    """A fresh ledger directory holding only its genesis entry."""
    d = str(tmp_path / "l")
    result = on(d, "init", "--origin", ORIGIN)
    assert result.exit_code == 0, result.stderr
    return d


@pytest.fixture
def populated(ledger: str) -> str:
    """seq 0 genesis, 1 identity alice, 2 policy p0, 3 identity bob, 4 dataset, 5 policy p1.

    Appended one command at a time, so every entry has its own timestamp.
    """
    for event in (identity("alice"), policy(0), identity("bob"), dataset(0), policy(1)):
        result = on(ledger, "append", line(event))
        assert result.exit_code == 0, result.stderr
    return ledger


def seqs(result: Result) -> list[int]:
    assert result.exit_code == 0, result.stderr
    return [json.loads(x)["seq"] for x in result.stdout.splitlines()]


def entry_ts(ledger: str, seq: int) -> str:
    result = on(ledger, "show", str(seq), "--format", "json")
    assert result.exit_code == 0, result.stderr
    return str(json.loads(result.stdout)["entry"]["ts"])


# -- init ------------------------------------------------------------------------


def test_init_creates_a_ledger_holding_its_genesis_entry(tmp_path: Path) -> None:
    d = str(tmp_path / "l")
    result = on(d, "init", "--origin", ORIGIN)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "l" / "ledger.db").is_file()
    with closing(Ledger.open(d)) as led:
        assert led.head().size == 1
        genesis = led.get(0)
        assert genesis.kind == "ledger.created"
        assert genesis.payload["origin"] == ORIGIN
    assert on(d, "verify").exit_code == 0


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_init_prints_the_verifier_key_and_no_private_key_material(tmp_path: Path, fmt: str) -> None:
    d = str(tmp_path / "l")
    result = on(d, "init", "--origin", ORIGIN, "--format", fmt)
    assert result.exit_code == 0, result.stderr
    vkey = (tmp_path / "l" / "keys" / "log.vkey").read_text().strip()
    assert vkey.startswith(ORIGIN + "+")
    assert vkey in result.stdout
    with closing(Ledger.open(d)) as led:
        assert led.get(0).payload["verifier_key"] == vkey
    pem = (tmp_path / "l" / "keys" / "log.pem").read_text()
    body = [x for x in pem.splitlines() if x and not x.startswith("-----")]
    everything = result.stdout + result.stderr
    assert "PRIVATE" not in everything
    assert "-----BEGIN" not in everything
    for chunk in body:
        assert chunk not in everything
    if fmt == "json":
        out = json.loads(result.stdout)
        assert out["verifier_key"] == vkey
        assert out["origin"] == ORIGIN


def test_init_warns_on_stderr_that_the_key_is_unencrypted_without_passphrase(tmp_path: Path) -> None:
    result = on(str(tmp_path / "l"), "init", "--origin", ORIGIN)
    assert result.exit_code == 0
    assert "warning" in result.stderr.lower()
    assert "not encrypted" in result.stderr
    assert "MLLEDGER_KEY_PASSPHRASE" in result.stderr
    assert "warning" not in result.stdout.lower()
    pem = (tmp_path / "l" / "keys" / "log.pem").read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")


def test_init_writes_the_private_key_with_mode_0600(tmp_path: Path) -> None:
    assert on(str(tmp_path / "l"), "init", "--origin", ORIGIN).exit_code == 0
    mode = stat.S_IMODE(os.stat(tmp_path / "l" / "keys" / "log.pem").st_mode)
    assert mode == 0o600


def test_init_twice_fails_with_exit_2_and_keeps_the_key(tmp_path: Path) -> None:
    d = str(tmp_path / "l")
    assert on(d, "init", "--origin", ORIGIN).exit_code == 0
    keys = tmp_path / "l" / "keys"
    pem, vkey = (keys / "log.pem").read_bytes(), (keys / "log.vkey").read_bytes()
    before = raw_entries(d)

    result = on(d, "init", "--origin", "example.com/other")
    assert result.exit_code == 2
    msg = error_line(result)
    assert "already exists" in msg
    assert (keys / "log.pem").read_bytes() == pem
    assert (keys / "log.vkey").read_bytes() == vkey
    assert raw_entries(d) == before
    assert on(d, "verify").exit_code == 0


def test_init_with_passphrase_encrypts_the_key_and_does_not_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLEDGER_KEY_PASSPHRASE", "correct horse battery staple")
    result = on(str(tmp_path / "l"), "init", "--origin", ORIGIN)
    assert result.exit_code == 0, result.stderr
    pem = (tmp_path / "l" / "keys" / "log.pem").read_text()
    assert pem.splitlines()[0] == "-----BEGIN ENCRYPTED PRIVATE KEY-----"
    assert "ENCRYPTED" in pem.splitlines()[0]
    assert "warning" not in result.stderr.lower()
    assert stat.S_IMODE(os.stat(tmp_path / "l" / "keys" / "log.pem").st_mode) == 0o600


# -- append: good input ----------------------------------------------------------


def test_append_one_event_given_as_argument(ledger: str) -> None:
    result = on(ledger, "append", line(identity("alice")))
    assert result.exit_code == 0, result.stderr
    assert "appended seq 1 identity.registered" in result.stdout
    with closing(Ledger.open(ledger)) as led:
        e = led.get(1)
        assert e.kind == "identity.registered"
        assert e.actor == "admin@example.com"
        assert e.subject == "identity:alice"
        assert e.payload["name"] == "alice"
        assert led.head().size == 2


def test_append_without_actor_uses_the_actor_option(ledger: str) -> None:
    event = identity("alice")
    del event["actor"]
    result = on(ledger, "append", "--actor", "carol@example.com", line(event))
    assert result.exit_code == 0, result.stderr
    with closing(Ledger.open(ledger)) as led:
        assert led.get(1).actor == "carol@example.com"


def test_append_json_lines_from_a_file(ledger: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl",
                       [line(identity("alice")), "", line(policy(0)), "  ", line(dataset(0))])
    result = on(ledger, "append", "--file", path)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        x for x in result.stdout.splitlines() if x.startswith("appended seq ")
    ]
    with closing(Ledger.open(ledger)) as led:
        assert [e.kind for e in led.iter(start=1)] == [
            "identity.registered", "policy.published", "dataset.registered"]


def test_append_json_lines_from_stdin_dash(ledger: str) -> None:
    data = (line(identity("alice")) + "\n" + line(key_added()) + "\n").encode()
    result = on(ledger, "append", "-f", "-", input=data)
    assert result.exit_code == 0, result.stderr
    with closing(Ledger.open(ledger)) as led:
        assert [e.kind for e in led.iter(start=1)] == ["identity.registered", "key.added"]


def test_append_format_json_prints_one_receipt_per_event(ledger: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", [line(identity("alice")), line(policy(0))])
    result = on(ledger, "append", "-f", path, "--format", "json")
    assert result.exit_code == 0, result.stderr
    receipts = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["seq"] for r in receipts] == [1, 2]
    with closing(Ledger.open(ledger)) as led:
        for r in receipts:
            assert set(r) == {"seq", "leaf_hash", "ts"}
            e = led.get(r["seq"])
            assert r["leaf_hash"] == e.leaf_hash.hex()
            assert r["leaf_hash"] == hashlib.sha256(b"\x00" + e.raw).hexdigest()
            assert r["ts"] == e.ts


def test_append_seq_numbers_are_contiguous_across_commands(ledger: str, tmp_path: Path) -> None:
    got: list[int] = []
    got += seqs(on(ledger, "append", line(identity("alice")), "--format", "json"))
    path = write_jsonl(tmp_path / "e.jsonl", [line(policy(i)) for i in range(3)])
    got += seqs(on(ledger, "append", "-f", path, "--format", "json"))
    got += seqs(on(ledger, "append", "-f", "-", "--format", "json", input=line(dataset(0))))
    assert got == [1, 2, 3, 4, 5]
    with closing(Ledger.open(ledger)) as led:
        entries = list(led.iter())
    assert [e.seq for e in entries] == list(range(6))
    assert [e.data["seq"] for e in entries] == list(range(6))
    for prev, cur in itertools.pairwise(entries):
        assert cur.data["prev"] == prev.leaf_hash.hex()


def test_verify_exits_0_after_appends(ledger: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", [line(identity("alice")), line(dataset(0))])
    assert on(ledger, "append", "-f", path).exit_code == 0
    result = on(ledger, "verify")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ok: 3 entries verify")
    out = on(ledger, "verify", "--format", "json")
    assert out.exit_code == 0
    data = json.loads(out.stdout)
    assert data["ok"] is True
    assert data["size"] == 3
    assert data["bad_seq"] is None


def test_append_accepts_a_valid_surrogate_pair_escape(ledger: str) -> None:
    event = identity("alice")
    event["subject"] = "identity:alice \\ud83d\\ude00"
    text = json.dumps(event).replace("\\\\ud83d\\\\ude00", "\\ud83d\\ude00")
    result = on(ledger, "append", text)
    assert result.exit_code == 0, result.stderr
    with closing(Ledger.open(ledger)) as led:
        e = led.get(1)
    assert e.subject == "identity:alice \U0001f600"
    assert "\U0001f600".encode() in e.raw


# -- append: bad input is refused, nothing is written ----------------------------


def test_append_malformed_json_is_refused_naming_file_and_line(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    path = write_jsonl(tmp_path / "e.jsonl", [line(identity("alice")), '{"kind": "key.added",'])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:2")
    assert "malformed JSON" in msg


def test_append_malformed_json_argument_is_refused(ledger: str) -> None:
    before = raw_entries(ledger)
    msg = assert_refused(ledger, on(ledger, "append", "{not json"), before, "argument")
    assert "malformed JSON" in msg


def test_append_unknown_kind_is_refused_naming_the_kind(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    event = {"kind": "model.teleported", "actor": "a@example.com", "payload": {}}
    path = write_jsonl(tmp_path / "e.jsonl", [line(event)])
    assert_refused(ledger, on(ledger, "append", "-f", path), before,
                   f"{path}:1", "kind", "model.teleported")


def test_append_payload_missing_field_is_refused_naming_the_field(
    ledger: str, tmp_path: Path
) -> None:
    before = raw_entries(ledger)
    event = identity("alice")
    del event["payload"]["public_key"]
    path = write_jsonl(tmp_path / "e.jsonl", [line(policy(0)), line(event)])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before,
                         f"{path}:2", "payload.public_key")
    assert "required" in msg.lower()


def test_append_payload_extra_field_is_refused_naming_the_field(
    ledger: str, tmp_path: Path
) -> None:
    before = raw_entries(ledger)
    event = key_added()
    event["payload"]["colour"] = "blue"
    path = write_jsonl(tmp_path / "e.jsonl", [line(event)])
    assert_refused(ledger, on(ledger, "append", "-f", path), before,
                   f"{path}:1", "payload.colour")


def test_append_payload_wrong_type_string_for_int_is_refused(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    event = dataset(0)
    event["payload"]["rows"] = str(event["payload"]["rows"])
    path = write_jsonl(tmp_path / "e.jsonl", [line(event)])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before,
                         f"{path}:1", "payload.rows")
    assert "integer" in msg.lower()


def test_append_payload_wrong_type_int_for_string_list_is_refused(
    ledger: str, tmp_path: Path
) -> None:
    before = raw_entries(ledger)
    event = identity("alice")
    event["payload"]["roles"] = "validator"
    path = write_jsonl(tmp_path / "e.jsonl", [line(event)])
    assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:1", "payload.roles")


def test_append_nan_literal_is_refused_as_malformed_json(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    text = line(dataset(0)).replace('"mean": 41.5', '"mean": NaN')
    assert "NaN" in text
    path = write_jsonl(tmp_path / "e.jsonl", [text])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:1")
    assert "malformed JSON" in msg


def test_append_infinity_literal_is_refused_as_malformed_json(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    text = line(dataset(0)).replace('"mean": 41.5', '"mean": Infinity')
    path = write_jsonl(tmp_path / "e.jsonl", [text])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:1")
    assert "malformed JSON" in msg


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_append_number_overflowing_to_infinity_is_refused(
    ledger: str, tmp_path: Path, number: str
) -> None:
    before = raw_entries(ledger)
    text = line(dataset(0)).replace('"mean": 41.5', f'"mean": {number}')
    assert number in text
    path = write_jsonl(tmp_path / "e.jsonl", [text])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:1")
    assert "infinit" in msg.lower() or "finite" in msg.lower()


def test_append_integer_beyond_2_53_is_refused_naming_file_line_and_field(
    ledger: str, tmp_path: Path
) -> None:
    before = raw_entries(ledger)
    event = dataset(0)
    event["payload"]["size_bytes"] = 2**60
    path = write_jsonl(tmp_path / "e.jsonl", [line(identity("alice")), line(event)])
    assert_refused(ledger, on(ledger, "append", "-f", path), before,
                   f"{path}:2", "payload.size_bytes")


def test_append_non_utf8_byte_in_file_is_refused_naming_the_line(
    ledger: str, tmp_path: Path
) -> None:
    before = raw_entries(ledger)
    bad = line(identity("alice")).encode().replace(b"admin@", b"adm\xffn@")
    path = write_jsonl(tmp_path / "e.jsonl", [line(policy(0)), bad])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:2")
    assert "UTF-8" in msg


def test_append_non_utf8_byte_in_argument_is_refused(ledger: str) -> None:
    # A non-UTF-8 byte on the command line reaches Python as a surrogate escape.
    before = raw_entries(ledger)
    arg = line(identity("alice")).replace("admin@", "adm\udcffn@")
    msg = assert_refused(ledger, on(ledger, "append", arg), before, "argument")
    assert "UTF-8" in msg


def test_append_lone_surrogate_escape_is_refused(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    text = line(identity("alice")).replace('"identity:alice"', '"identity:\\ud800"')
    assert "\\ud800" in text
    path = write_jsonl(tmp_path / "e.jsonl", [text])
    assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:1")


def test_append_oversize_payload_is_refused_mentioning_the_limit(
    ledger: str, tmp_path: Path
) -> None:
    before = raw_entries(ledger)
    body = "x" * 1_100_000
    event = {"kind": "policy.published", "actor": "a@example.com", "subject": "policy:big",
             "payload": {"policy_hash": hashlib.sha256(body.encode()).hexdigest(),
                         "stage": "production", "name": "big", "body": body}}
    path = write_jsonl(tmp_path / "e.jsonl", [line(event)])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:1")
    assert str(MAX_PAYLOAD_BYTES) in msg or "1 MiB" in msg
    assert "limit" in msg


def test_append_bad_line_3_writes_nothing_from_lines_1_and_2(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    bad = identity("bob")
    bad["payload"]["roles"] = ["wizard"]
    path = write_jsonl(tmp_path / "e.jsonl", [line(identity("alice")), line(policy(0)), line(bad)])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:3",
                         "payload.roles")
    assert f"{path}:1" not in msg
    assert f"{path}:2" not in msg


def test_append_oversize_event_on_line_3_writes_nothing_and_names_line_3(
    ledger: str, tmp_path: Path
) -> None:
    before = raw_entries(ledger)
    body = "y" * 1_100_000
    big = {"kind": "policy.published", "actor": "a@example.com", "subject": "policy:big",
           "payload": {"policy_hash": hashlib.sha256(body.encode()).hexdigest(),
                       "stage": "production", "name": "big", "body": body}}
    path = write_jsonl(tmp_path / "e.jsonl", [line(identity("alice")), line(policy(0)), line(big)])
    msg = assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:3")
    assert "limit" in msg


def test_append_empty_file_is_refused(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    msg = assert_refused(ledger, on(ledger, "append", "-f", str(path)), before, str(path))
    assert "no events" in msg


def test_append_blank_lines_only_file_is_refused(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"\n  \n\t\n")
    assert_refused(ledger, on(ledger, "append", "-f", str(path)), before, str(path), "no events")


def test_append_empty_stdin_is_refused(ledger: str) -> None:
    before = raw_entries(ledger)
    assert_refused(ledger, on(ledger, "append", "-f", "-", input=b""), before, "stdin", "no events")


def test_append_both_event_argument_and_file_is_refused(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    path = write_jsonl(tmp_path / "e.jsonl", [line(policy(0))])
    msg = assert_refused(ledger, on(ledger, "append", line(identity("alice")), "--file", path),
                         before)
    assert "not both" in msg


def test_append_neither_event_argument_nor_file_is_refused(ledger: str) -> None:
    before = raw_entries(ledger)
    assert_refused(ledger, on(ledger, "append"), before, "--file")


def test_append_missing_file_is_refused_naming_the_file(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    path = str(tmp_path / "nope.jsonl")
    assert_refused(ledger, on(ledger, "append", "-f", path), before, path)


def test_append_two_events_in_the_argument_is_refused(ledger: str) -> None:
    before = raw_entries(ledger)
    arg = line(identity("alice")) + "\n" + line(policy(0))
    assert_refused(ledger, on(ledger, "append", arg), before, "argument", "--file")


def test_append_event_with_envelope_field_seq_is_refused(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    event = identity("alice")
    event["seq"] = 7
    path = write_jsonl(tmp_path / "e.jsonl", [line(event)])
    assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:1", "seq")


def test_append_actor_with_control_character_is_refused(ledger: str, tmp_path: Path) -> None:
    before = raw_entries(ledger)
    event = identity("alice", actor="admin\u0007@example.com")
    path = write_jsonl(tmp_path / "e.jsonl", [line(event)])
    assert_refused(ledger, on(ledger, "append", "-f", path), before, f"{path}:1", "actor")


# -- tampered ledgers -----------------------------------------------------------


@pytest.fixture
def tampered(ledger: str, tmp_path: Path) -> str:
    """seq 0..2, with one byte of entry 1's stored bytes changed behind the triggers' back."""
    assert on(ledger, "append", line(identity("alice", actor="alice@example.com"))).exit_code == 0
    assert on(ledger, "append", line(policy(0))).exit_code == 0
    assert on(ledger, "verify").exit_code == 0
    with closing(sqlite3.connect(tmp_path / "l" / "ledger.db")) as conn:
        conn.execute("DROP TRIGGER entries_no_update")
        (old,) = conn.execute("SELECT entry FROM entries WHERE seq = 1").fetchone()
        old = bytes(old)
        new = old.replace(b'"actor":"alice@', b'"actor":"alicf@', 1)
        assert len(new) == len(old)
        assert sum(a != b for a, b in zip(old, new, strict=True)) == 1
        conn.execute("UPDATE entries SET entry = ? WHERE seq = 1", (new,))
        conn.commit()
    return ledger


def test_verify_on_tampered_ledger_exits_1_naming_the_seq(tampered: str) -> None:
    result = on(tampered, "verify")
    assert result.exit_code == 1
    assert "seq 1" in result.stderr
    assert "ok:" not in result.stdout
    assert "Traceback" not in result.stderr


def test_verify_format_json_on_tampered_ledger_gives_ok_false_and_bad_seq(tampered: str) -> None:
    result = on(tampered, "verify", "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["bad_seq"] == 1
    assert data["reason"]


def test_append_to_tampered_ledger_exits_1_naming_seq_and_force_unsafe(tampered: str) -> None:
    before = raw_entries(tampered)
    result = on(tampered, "append", line(identity("bob")))
    assert result.exit_code == 1
    msg = error_line(result)
    assert "seq 1" in msg
    assert "--force-unsafe" in msg
    assert result.stdout == ""
    assert raw_entries(tampered) == before


def test_append_force_unsafe_to_tampered_ledger_appends_with_loud_warning(tampered: str) -> None:
    before = size_of(tampered)
    result = on(tampered, "append", "--force-unsafe", line(identity("bob")))
    assert result.exit_code == 0, result.stderr
    assert "WARNING" in result.stderr
    assert "--force-unsafe" in result.stderr
    assert f"appended seq {before} identity.registered" in result.stdout
    assert size_of(tampered) == before + 1
    still = on(tampered, "verify", "--format", "json")
    assert still.exit_code == 1
    assert json.loads(still.stdout)["bad_seq"] == 1


# -- opening problems ------------------------------------------------------------


@pytest.mark.parametrize("command", [["head"], ["log"], ["verify"], ["show", "0"]])
def test_ledger_dir_without_ledger_exits_2_suggesting_init(
    tmp_path: Path, command: list[str]
) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    result = on(str(d), *command)
    assert result.exit_code == 2
    assert "mlledger init" in error_line(result)
    assert list(d.iterdir()) == []


def test_append_to_dir_without_ledger_exits_2_suggesting_init(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    result = on(str(d), "append", line(identity("alice")))
    assert result.exit_code == 2
    assert "mlledger init" in error_line(result)
    assert list(d.iterdir()) == []


def test_other_sqlite_database_is_not_an_mlledger_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE recipes (name TEXT, rating INTEGER)")
        conn.execute("INSERT INTO recipes VALUES ('soup', 5)")
        conn.commit()
    result = on(f"sqlite:///{path}", "head")
    assert result.exit_code == 2
    assert "not an mlledger ledger" in error_line(result)
    with closing(sqlite3.connect(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["recipes"]


def test_append_to_other_sqlite_database_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
    result = on(f"sqlite:///{path}", "append", line(identity("alice")))
    assert result.exit_code == 2
    assert "not an mlledger ledger" in error_line(result)
    with closing(sqlite3.connect(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["t"]


def test_non_database_file_url_gives_clear_error_exit_2_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are my notes, not a database\n" * 20
    path.write_bytes(content)
    result = on(f"sqlite:///{path}", "head")
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    msg = error_line(result)
    assert str(path) in msg
    assert "not a database" in msg or "not an mlledger ledger" in msg
    assert path.read_bytes() == content


def test_non_database_file_in_ledger_dir_gives_clear_error_exit_2(tmp_path: Path) -> None:
    d = tmp_path / "l"
    d.mkdir()
    (d / "ledger.db").write_bytes(b"\x00junk" * 100)
    result = on(str(d), "verify")
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    msg = error_line(result)
    assert "not a database" in msg or "not an mlledger ledger" in msg


def test_unsupported_database_url_exits_2(tmp_path: Path) -> None:
    result = on("mysql://u@localhost/db", "head")
    assert result.exit_code == 2
    assert "unsupported" in error_line(result)


# -- log -------------------------------------------------------------------------


def test_log_text_lists_every_entry_in_seq_order(populated: str) -> None:
    result = on(populated, "log")
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.splitlines()
    assert [int(r.split()[0]) for r in rows] == list(range(6))
    assert rows[0].split()[2] == "ledger.created"
    assert "identity:alice" in rows[1]


def test_log_kind_filter(populated: str) -> None:
    assert seqs(on(populated, "log", "--kind", "identity.registered", "--format", "json")) == [1, 3]


def test_log_kind_filter_is_repeatable(populated: str) -> None:
    result = on(populated, "log", "--kind", "policy.published", "--kind", "ledger.created",
                "--format", "json")
    assert seqs(result) == [0, 2, 5]


def test_log_subject_filter(populated: str) -> None:
    assert seqs(on(populated, "log", "--subject", "policy:p0", "--format", "json")) == [2]
    assert seqs(on(populated, "log", "--subject", "nobody", "--format", "json")) == []


def test_log_from_and_limit(populated: str) -> None:
    assert seqs(on(populated, "log", "--from", "2", "--limit", "2", "--format", "json")) == [2, 3]
    assert seqs(on(populated, "log", "--from", "4", "--format", "json")) == [4, 5]
    assert seqs(on(populated, "log", "-n", "1", "--format", "json")) == [0]
    assert seqs(on(populated, "log", "--from", "99", "--format", "json")) == []


def test_log_kind_combined_with_limit_counts_matches(populated: str) -> None:
    result = on(populated, "log", "--kind", "policy.published", "--limit", "1", "--format", "json")
    assert seqs(result) == [2]


def test_log_since_is_inclusive_and_until_exclusive(populated: str) -> None:
    ts = [entry_ts(populated, s) for s in range(6)]
    assert ts == sorted(ts)
    assert len(set(ts)) == 6
    assert seqs(on(populated, "log", "--since", ts[2], "--format", "json")) == [2, 3, 4, 5]
    assert seqs(on(populated, "log", "--until", ts[2], "--format", "json")) == [0, 1]
    result = on(populated, "log", "--since", ts[2], "--until", ts[4], "--format", "json")
    assert seqs(result) == [2, 3]


def test_log_since_until_combined_with_kind(populated: str) -> None:
    ts = [entry_ts(populated, s) for s in range(6)]
    result = on(populated, "log", "--since", ts[1], "--until", ts[5],
                "--kind", "policy.published", "--format", "json")
    assert seqs(result) == [2]


def test_log_since_with_offset_timezone(populated: str) -> None:
    ts = entry_ts(populated, 3)  # e.g. 2025-01-01T10:00:00.123456Z
    shifted = _shift_to_plus_one_hour(ts)
    assert seqs(on(populated, "log", "--since", shifted, "--format", "json")) == [3, 4, 5]


def _shift_to_plus_one_hour(ts: str) -> str:
    from datetime import datetime, timedelta, timezone

    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return dt.astimezone(timezone(timedelta(hours=1))).isoformat()


def test_log_bad_since_is_refused_exit_2(populated: str) -> None:
    result = on(populated, "log", "--since", "yesterday")
    assert result.exit_code == 2
    assert "since" in error_line(result)


def test_log_since_without_timezone_is_refused_exit_2(populated: str) -> None:
    result = on(populated, "log", "--since", "2025-01-01T00:00:00")
    assert result.exit_code == 2
    assert "since" in error_line(result)


def test_log_format_json_prints_each_entry_stored_bytes_exactly(populated: str) -> None:
    result = on(populated, "log", "--format", "json")
    assert result.exit_code == 0, result.stderr
    with closing(Ledger.open(populated)) as led:
        expected = [led.get(s).raw for s in range(led.head().size)]
    assert result.stdout_bytes == b"".join(raw + b"\n" for raw in expected)


def test_log_format_json_with_filters_prints_stored_bytes(populated: str) -> None:
    result = on(populated, "log", "--kind", "dataset.registered", "--format", "json")
    assert result.exit_code == 0
    with closing(Ledger.open(populated)) as led:
        assert result.stdout_bytes == led.get(4).raw + b"\n"


# -- show / head -----------------------------------------------------------------


def test_show_prints_the_entry_and_its_leaf_hash(populated: str) -> None:
    result = on(populated, "show", "2", "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    with closing(Ledger.open(populated)) as led:
        e = led.get(2)
    assert data["seq"] == 2
    assert data["leaf_hash"] == e.leaf_hash.hex()
    assert data["entry"] == e.data
    text = on(populated, "show", "2")
    assert text.exit_code == 0
    assert e.leaf_hash.hex() in text.stdout


def test_show_missing_seq_exits_2(populated: str) -> None:
    result = on(populated, "show", "99")
    assert result.exit_code == 2
    msg = error_line(result)
    assert "99" in msg
    assert result.stdout == ""


def test_show_negative_seq_is_a_usage_error_exit_2(populated: str) -> None:
    result = on(populated, "show", "--", "-1")
    assert result.exit_code == 2


def test_head_format_json_fields(populated: str) -> None:
    result = on(populated, "head", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["size"] == 6
    assert data["origin"] == ORIGIN
    assert isinstance(data["root"], str)
    assert len(data["root"]) == 64
    assert all(c in "0123456789abcdef" for c in data["root"])
    assert data["last_seq"] == 5
    with closing(Ledger.open(populated)) as led:
        h = led.head()
        assert data["root"] == h.root.hex()
        assert data["last_leaf_hash"] == led.get(5).leaf_hash.hex()


def test_head_root_matches_verify_root(populated: str) -> None:
    head = json.loads(on(populated, "head", "--format", "json").stdout)
    ver = json.loads(on(populated, "verify", "--format", "json").stdout)
    assert ver["root"] == head["root"]
    assert ver["size"] == head["size"]


# -- errors and --debug ----------------------------------------------------------


def test_error_without_debug_is_a_single_error_line(populated: str) -> None:
    result = on(populated, "show", "99")
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")


def test_debug_lets_the_exception_propagate(populated: str) -> None:
    result = cli("--ledger", populated, "--debug", "show", "99")
    assert isinstance(result.exception, InputError)
    assert "99" in str(result.exception)
    assert result.exit_code != 0
    assert "error: " not in result.stderr


def _run_main(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return subprocess.run(
        [sys.executable, "-c", "from ledger.cli import main; main()", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120, check=False,
    )


def test_debug_shows_a_traceback_in_a_real_process(populated: str, tmp_path: Path) -> None:
    plain = _run_main("--ledger", populated, "show", "99", cwd=tmp_path)
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]
    assert plain.stderr.startswith("error: ")

    debug = _run_main("--ledger", populated, "--debug", "show", "99", cwd=tmp_path)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "InputError" in debug.stderr


# -- where the ledger is found ---------------------------------------------------


def test_mlledger_url_env_is_used_when_ledger_option_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = tmp_path / "via-env"
    monkeypatch.setenv("MLLEDGER_URL", str(where))
    monkeypatch.chdir(tmp_path)
    assert cli("init", "--origin", ORIGIN).exit_code == 0
    assert (where / "ledger.db").is_file()
    assert not (tmp_path / ".mlledger").exists()
    assert cli("append", line(identity("alice"))).exit_code == 0
    head = cli("head", "--format", "json")
    assert head.exit_code == 0, head.stderr
    assert json.loads(head.stdout)["size"] == 2
    assert size_of(str(where)) == 2


def test_mlledger_url_env_accepts_a_sqlite_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_dir = tmp_path / "url"
    on(str(ledger_dir), "init", "--origin", ORIGIN)
    monkeypatch.setenv("MLLEDGER_URL", f"sqlite:///{ledger_dir / 'ledger.db'}")
    monkeypatch.chdir(tmp_path)
    head = cli("head", "--format", "json")
    assert head.exit_code == 0, head.stderr
    assert json.loads(head.stdout)["origin"] == ORIGIN


def test_ledger_option_wins_over_mlledger_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert on(a, "init", "--origin", "example.com/a").exit_code == 0
    assert on(b, "init", "--origin", "example.com/b").exit_code == 0
    monkeypatch.setenv("MLLEDGER_URL", a)
    head = cli("--ledger", b, "head", "--format", "json")
    assert json.loads(head.stdout)["origin"] == "example.com/b"
    head = cli("head", "--format", "json")
    assert json.loads(head.stdout)["origin"] == "example.com/a"


def test_default_ledger_is_dot_mlledger_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("init", "--origin", ORIGIN).exit_code == 0
    assert (tmp_path / ".mlledger" / "ledger.db").is_file()
    assert (tmp_path / ".mlledger" / "keys" / "log.pem").is_file()
    head = cli("head", "--format", "json")
    assert json.loads(head.stdout)["origin"] == ORIGIN


def test_no_ledger_anywhere_exits_2_suggesting_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("head")
    assert result.exit_code == 2
    assert "mlledger init" in error_line(result)
    assert not (tmp_path / ".mlledger").exists()
