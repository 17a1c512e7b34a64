"""The checkpoint witness (ledger/witness.py, C2SP tlog-witness) and ``mlledger witness``.

Real state files under tmp_path, real Ed25519 keys, real RFC 6962 trees built with merkle.py
over ``leaf_hash(str(i).encode())``.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import keys
from ledger._cli_witness import witness
from ledger.errors import InputError, IntegrityError, ProofError, SignatureError
from ledger.merkle import consistency_proof, leaf_hash, root_of
from ledger.note import Checkpoint, Signer, add_signatures, sign_checkpoint, verify_cosignatures
from ledger.witness import (
    MAX_PROOF_LINES,
    AddCheckpointRequest,
    ConflictError,
    ForkError,
    RollbackError,
    WitnessState,
    add_checkpoint,
    attach_cosignatures,
    make_request,
    parse_request,
)

REPO = Path(__file__).resolve().parents[3]
VECTORS = REPO / "tests" / "vectors" / "note" / "mlledger.json"
ORIGIN = "example.com/witnessed-log"
#: Deterministic test keys (never real secrets).
LOG_SEED = bytes(range(32))
WITNESS_SEED = bytes(range(32, 64))
LOG = Signer.from_seed(ORIGIN, LOG_SEED)
IMPOSTOR = Signer.from_seed(ORIGIN, bytes(range(64, 96)))
OTHER_LOG = Signer.from_seed("example.com/other-log", bytes(range(96, 128)))
WITNESS = Signer.from_seed("example.com/witness", WITNESS_SEED, cosignature=True)
NOW = 1_700_000_000

LEAVES = [leaf_hash(str(i).encode()) for i in range(4096)]
#: Another history: the same leaves except leaf 2.
FORKED = [*LEAVES[:2], leaf_hash(b"forged"), *LEAVES[3:]]
ROOTS = [root_of(LEAVES[:n]) for n in range(257)]


def raises(exc: type[Exception], *fragments: str) -> AbstractContextManager[Any]:
    """pytest.raises whose message must contain every fragment literally."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def cp_note(n: int, leaves: list[bytes] = LEAVES, signer: Signer = LOG) -> bytes:
    return sign_checkpoint(Checkpoint(signer.name, n, root_of(leaves[:n])), signer)


def request(old: int, n: int, leaves: list[bytes] = LEAVES, signer: Signer = LOG) -> bytes:
    proof = consistency_proof(old, leaves[:n]) if 0 < old < n else []
    return make_request(old, proof, cp_note(n, leaves, signer))


def add(state: Path, data: bytes, **kw: Any) -> str:
    kw = {"log_key": LOG.verifier, "witness": WITNESS, "now": NOW, **kw}
    return add_checkpoint(state, data, **kw)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.json"
    WitnessState.create(path)
    return path


def recorded(state: Path, signer: Signer = LOG) -> tuple[int, bytes] | None:
    r = WitnessState(state).get(signer.name, signer.verifier_key)
    return None if r is None else (r.size, r.root)


# -- accepting ---------------------------------------------------------------------------


def test_first_checkpoint_is_accepted_from_old_zero_and_cosignature_verifies(state: Path) -> None:
    line = add(state, request(0, 5))
    note = attach_cosignatures(cp_note(5), line)
    assert verify_cosignatures(note, [WITNESS.verifier], 1) == [(WITNESS.verifier, NOW)]
    assert recorded(state) == (5, ROOTS[5])


def test_cosignature_matches_the_published_vector(tmp_path: Path) -> None:
    """The witness reproduces tests/vectors/note/mlledger.json's cosignature byte for byte."""
    vec = json.loads(VECTORS.read_text(encoding="utf-8"))
    log = Signer.from_seed(vec["log"]["name"], bytes.fromhex(vec["log"]["seed_hex"]))
    wit = Signer.from_seed(vec["witness"]["name"], bytes.fromhex(vec["witness"]["seed_hex"]),
                           cosignature=True)
    path = tmp_path / "state.json"
    WitnessState.create(path)
    line = add_checkpoint(path, make_request(0, [], vec["note"].encode()), log_key=log.verifier,
                          witness=wit, now=vec["cosignature_timestamp"])
    assert line == vec["cosignature_line"]
    assert attach_cosignatures(vec["note"].encode(), line) == vec["cosigned_note"].encode()


def test_grown_log_is_accepted_with_a_consistency_proof(state: Path) -> None:
    add(state, request(0, 5))
    line = add(state, request(5, 13), now=NOW + 1)
    assert verify_cosignatures(add_signatures(cp_note(13), [line]), [WITNESS.verifier], 1)
    assert recorded(state) == (13, ROOTS[13])


def test_resubmitting_the_same_checkpoint_cosigns_again(state: Path) -> None:
    add(state, request(0, 7))
    before = state.read_bytes()
    line = add(state, request(7, 7), now=NOW + 60)
    assert verify_cosignatures(add_signatures(cp_note(7), [line]), [WITNESS.verifier], 1) == [
        (WITNESS.verifier, NOW + 60)
    ]
    assert state.read_bytes() == before


def test_records_are_kept_per_origin_and_log_key(state: Path) -> None:
    add(state, request(0, 9))
    add(state, request(0, 2, signer=OTHER_LOG), log_key=OTHER_LOG.verifier)
    assert recorded(state) == (9, ROOTS[9])
    assert recorded(state, OTHER_LOG) == (2, ROOTS[2])
    assert [r.origin for r in WitnessState(state).records()] == [OTHER_LOG.name, ORIGIN]


# -- refusing ----------------------------------------------------------------------------


def test_rollback_is_refused_naming_both_sizes_and_roots(state: Path) -> None:
    add(state, request(0, 10))
    before = state.read_bytes()
    with raises(RollbackError, "rollback refused", "size 4", ROOTS[4].hex(), "size 10",
                ROOTS[10].hex()):
        add(state, request(10, 4))
    assert state.read_bytes() == before


def test_same_size_with_another_root_is_refused_as_a_fork(state: Path) -> None:
    add(state, request(0, 6))
    before = state.read_bytes()
    forked = root_of(FORKED[:6])
    with raises(ForkError, "fork refused", "size 6", forked.hex(), ROOTS[6].hex()):
        add(state, make_request(6, [], cp_note(6, FORKED)))
    assert state.read_bytes() == before


def test_larger_checkpoint_from_another_history_is_refused_as_a_fork(state: Path) -> None:
    add(state, request(0, 6))
    before = state.read_bytes()
    with raises(ProofError, "fork refused", "size 20", root_of(FORKED[:20]).hex(), "size 6",
                ROOTS[6].hex()):
        add(state, request(6, 20, FORKED))
    assert state.read_bytes() == before


def test_tampered_proof_hash_is_refused(state: Path) -> None:
    add(state, request(0, 6))
    proof = consistency_proof(6, LEAVES[:20])
    proof[-1] = bytes(32)
    with raises(ProofError, "does not reproduce"):
        add(state, make_request(6, proof, cp_note(20)))
    assert recorded(state) == (6, ROOTS[6])


def test_proof_of_the_wrong_length_is_refused(state: Path) -> None:
    add(state, request(0, 6))
    with raises(ProofError, "proof has 1 hashes, want 0"):
        add(state, make_request(6, [ROOTS[6]], cp_note(6)))


def test_wrong_old_size_is_a_conflict_naming_the_recorded_size(state: Path) -> None:
    add(state, request(0, 8))
    with raises(ConflictError, "old 5", "up to size 8", "re-request with 'old 8'") as info:
        add(state, request(5, 12))
    assert info.value.size == 8
    assert recorded(state) == (8, ROOTS[8])


def test_first_sight_with_a_nonzero_old_size_is_a_conflict_naming_zero(state: Path) -> None:
    with raises(ConflictError, "never cosigned", "re-request with 'old 0'") as info:
        add(state, request(3, 8))
    assert info.value.size == 0
    assert recorded(state) is None


def test_first_sight_with_a_proof_is_refused(state: Path) -> None:
    data = b"old 0\n" + make_request(5, [ROOTS[5]], cp_note(8))[6:]
    with raises(ProofError, "does not extend the empty tree", "want 0"):
        add(state, data)
    assert recorded(state) is None


def test_checkpoint_of_another_origin_is_refused(state: Path) -> None:
    """Cross-log replay: OTHER_LOG's valid checkpoint, offered under LOG's key."""
    with raises(SignatureError, "origin 'example.com/other-log'", ORIGIN):
        add(state, request(0, 4, signer=OTHER_LOG))
    assert WitnessState(state).records() == []


def test_checkpoint_signed_by_an_untrusted_key_is_refused(state: Path) -> None:
    add(state, request(0, 4))
    with raises(SignatureError, "no signature by its log key"):
        add(state, request(4, 9, signer=IMPOSTOR))
    assert recorded(state) == (4, ROOTS[4])


def test_a_note_key_cannot_cosign_and_nothing_is_recorded(state: Path) -> None:
    with raises(InputError, "not a cosignature key"):
        add(state, request(0, 4), witness=LOG)
    assert recorded(state) is None


def test_missing_state_file_is_refused_not_treated_as_empty(tmp_path: Path) -> None:
    """A lost state must not silently restart the witness at old 0."""
    with raises(InputError, "no witness state", "mlledger witness init"):
        add(tmp_path / "state.json", request(0, 4))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{", "corrupt witness state"),
        (b'{"format": "other", "logs": []}', "state.format"),
        (b'{"format": "mlledger-witness-state/v1", "logs": [{"origin": "x"}]}', "state.logs.0"),
    ],
    ids=["torn", "wrong-format", "missing-fields"],
)
def test_corrupt_state_file_is_an_integrity_error(tmp_path: Path, content: bytes,
                                                  fragment: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with raises(IntegrityError, fragment):
        add(path, request(0, 4))


def test_state_naming_a_key_of_another_log_is_refused(state: Path) -> None:
    add(state, request(0, 4))
    data = json.loads(state.read_text())
    data["logs"][0]["log_vkey"] = OTHER_LOG.verifier_key
    state.write_text(json.dumps(data))
    with raises(IntegrityError, "not a note key named"):
        WitnessState(state).records()


def test_create_refuses_to_overwrite_state(state: Path) -> None:
    with raises(InputError, "already exists"):
        WitnessState.create(state)


# -- the request format ------------------------------------------------------------------


def test_request_round_trips() -> None:
    proof = consistency_proof(5, LEAVES[:13])
    data = make_request(5, proof, cp_note(13))
    assert data.startswith(b"old 5\n") and b"\n\n" + ORIGIN.encode() in data
    assert parse_request(data) == AddCheckpointRequest(5, tuple(proof), cp_note(13))


def _proof_line() -> bytes:
    return make_request(1, [ROOTS[1]], cp_note(2)).split(b"\n")[1]


BAD_REQUESTS = {
    "no-blank-line": (b"old 0\n" + cp_note(1).replace(b"\n\n", b"\n"), "no empty line"),
    "no-old-line": (b"\n" + cp_note(1), "request line 1: expected 'old <size>'"),
    "leading-zero": (b"old 05\n\n" + cp_note(1), "request line 1"),
    "negative": (b"old -1\n\n" + cp_note(1), "request line 1"),
    "two-spaces": (b"old  1\n\n" + cp_note(1), "request line 1"),
    "too-big": (b"old 18446744073709551616\n\n" + cp_note(1), "request line 1"),
    "short-hash": (b"old 1\nAAAA\n\n" + cp_note(1), "request line 2: expected a proof hash"),
    "non-canonical-b64": (b"old 1\n" + _proof_line()[:-2] + b"B=\n\n" + cp_note(1),
                          "request line 2"),
    "crlf": (b"old 1\r\n" + _proof_line() + b"\n\n" + cp_note(1), "request line 1"),
    "non-ascii": (b"old 1\n" + _proof_line() + b"\n\xc3\xa9\n\n" + cp_note(1),
                  "request line 3: non-ASCII"),
    "too-many-proof-lines": (b"old 1\n" + (_proof_line() + b"\n") * (MAX_PROOF_LINES + 1)
                             + b"\n" + cp_note(1), "64 proof lines, at most 63"),
    "unsigned-note": (b"old 0\n\n" + Checkpoint(ORIGIN, 1, ROOTS[1]).body(),
                      "checkpoint note starting on line 3"),
    "not-a-checkpoint": (b"old 0\n\nhello\n\n" + cp_note(1).split(b"\n\n")[1],
                         "checkpoint note starting on line 3: checkpoint: 1 lines"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS.keys())
def test_malformed_request_is_an_input_error_naming_the_line(case: str) -> None:
    data, fragment = BAD_REQUESTS[case]
    with raises(InputError, fragment):
        parse_request(data)


def test_make_request_refuses_a_proof_from_old_zero() -> None:
    with pytest.raises(ValueError, match="must be empty"):
        make_request(0, [ROOTS[1]], cp_note(2))


# -- atomicity ---------------------------------------------------------------------------


def test_racing_requests_from_the_same_old_size_cosign_exactly_one(state: Path) -> None:
    """The spec's race: two checks must not both pass and then roll each other back."""
    add(state, request(0, 10))
    sizes = [11, 20, 37, 64, 100, 150]
    results: dict[int, str | Exception] = {}

    def submit(n: int) -> None:
        try:
            results[n] = add(state, request(10, n))
        except ConflictError as exc:
            results[n] = exc

    threads = [threading.Thread(target=submit, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, r in results.items() if isinstance(r, str)]
    assert len(winners) == 1
    assert recorded(state) == (winners[0], ROOTS[winners[0]])
    assert all(r.size == winners[0] for r in results.values() if isinstance(r, ConflictError))


_LOOP = f"""
import sys
from pathlib import Path
from ledger import merkle, note
from ledger.witness import WitnessState, add_checkpoint, make_request
state = Path(sys.argv[1])
log = note.Signer.from_seed({ORIGIN!r}, {LOG_SEED!r})
wit = note.Signer.from_seed("example.com/witness", {WITNESS_SEED!r}, cosignature=True)
leaves = [merkle.leaf_hash(str(i).encode()) for i in range(4096)]
print("ready", flush=True)
while True:
    r = WitnessState(state).get(log.name, log.verifier_key)
    old = r.size if r else 0
    proof = merkle.consistency_proof(old, leaves[:old + 1]) if old else []
    cp = note.Checkpoint(log.name, old + 1, merkle.root_of(leaves[:old + 1]))
    add_checkpoint(state, make_request(old, proof, note.sign_checkpoint(cp, log)),
                   log_key=log.verifier, witness=wit)
"""


def test_witness_killed_at_random_moments_leaves_the_old_or_the_new_state(state: Path) -> None:
    rng = random.Random(20240613)
    add(state, request(0, 1))
    size, progressed = 1, 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", _LOOP, str(state)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
            try:
                proc.wait(timeout=rng.uniform(0.01, 0.3))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        # The state parses, is a state the log really had, and never went back.
        json.loads(state.read_bytes())
        now = recorded(state)
        assert now is not None and now[0] >= size
        assert now[1] == root_of(LEAVES[: now[0]])
        progressed += now[0] - size
        # A fresh run from the recorded size works: no lock is held, no temp file is in the way.
        add(state, request(now[0], now[0] + 1))
        size = now[0] + 1
        assert recorded(state) == (size, root_of(LEAVES[:size]))
        assert sorted(p.name for p in state.parent.iterdir()) == ["state.json", "state.json.lock"]
    assert progressed > 0, "the killed witness never got to persist anything"


# -- properties --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.tuples(st.integers(1, 200), st.integers(1, 200)).map(sorted))
def test_growing_is_accepted_and_shrinking_is_refused_as_rollback(sizes: list[int]) -> None:
    m, n = sizes
    with tempfile.TemporaryDirectory() as tmp:
        grow, shrink = Path(tmp) / "grow.json", Path(tmp) / "shrink.json"
        WitnessState.create(grow)
        WitnessState.create(shrink)
        add(grow, request(0, m))
        add(grow, request(m, n))
        assert recorded(grow) == (n, ROOTS[n])
        add(shrink, request(0, n))
        if m < n:
            with raises(RollbackError, f"size {m}", f"size {n}"):
                add(shrink, request(n, m))
        else:
            add(shrink, request(n, m))
        assert recorded(shrink) == (n, ROOTS[n])


# -- command line ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)


def cli(*args: str | Path, input: bytes | None = None) -> Result:
    return CliRunner().invoke(witness, [str(a) for a in args], input=input)


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    """An initialised witness directory, plus the log's vkey file."""
    d = tmp_path / "w"
    assert cli("init", "--name", "example.com/w1", "--dir", d).exit_code == 0
    (tmp_path / "log.vkey").write_text(LOG.verifier_key + "\n")
    return d


def submit(wdir: Path, data: bytes, *extra: str) -> Result:
    req = wdir.parent / "request"
    req.write_bytes(data)
    return cli("add-checkpoint", req, "--log-key", wdir.parent / "log.vkey",
               "--key", wdir / "witness.pem", "--state", wdir / "state.json", *extra)


def test_cli_init_writes_key_and_state_and_prints_the_vkey(tmp_path: Path) -> None:
    res = cli("init", "--name", "example.com/w1", "--dir", tmp_path / "w")
    assert res.exit_code == 0, res.output
    vkey = (tmp_path / "w" / "witness.vkey").read_text().strip()
    assert res.stdout == vkey + "\n" and vkey.startswith("example.com/w1+")
    assert keys.load_verifier(tmp_path / "w" / "witness.vkey").kind == "cosignature"
    assert "is not encrypted" in res.stderr
    assert WitnessState(tmp_path / "w" / "state.json").records() == []
    assert "PRIVATE" not in res.output


def test_cli_init_encrypts_with_the_passphrase_and_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "correct horse")
    res = cli("init", "--name", "example.com/w1", "--dir", tmp_path, "--format", "json")
    assert res.exit_code == 0 and res.stderr == ""
    assert json.loads(res.stdout)["state"] == str(tmp_path / "state.json")
    assert b"ENCRYPTED" in (tmp_path / "witness.pem").read_bytes()
    again = cli("init", "--name", "example.com/w2", "--dir", tmp_path)
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_cli_add_checkpoint_prints_a_cosignature_that_verifies(wdir: Path) -> None:
    res = submit(wdir, request(0, 5))
    assert res.exit_code == 0, res.output
    wv = keys.load_verifier(wdir / "witness.vkey")
    assert verify_cosignatures(cp_note(5) + res.stdout.encode(), [wv], 1)


def test_cli_add_checkpoint_json_and_stdin(wdir: Path) -> None:
    submit(wdir, request(0, 5))
    res = cli("add-checkpoint", "-", "--log-key", wdir.parent / "log.vkey", "--key",
              wdir / "witness.pem", "--state", wdir / "state.json", "--format", "json",
              input=request(5, 9))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["origin"], out["size"]) == (ORIGIN, 9)
    assert verify_cosignatures(attach_cosignatures(cp_note(9), out["cosignature"]),
                               [keys.load_verifier(wdir / "witness.vkey")], 1)


def test_cli_bad_request_file_exits_2_naming_the_line(wdir: Path) -> None:
    res = submit(wdir, b"old 0\nnot-a-hash\n\n" + cp_note(5))
    assert res.exit_code == 2
    assert res.stderr.startswith("error: ") and "request: request line 2" in res.stderr


def test_cli_rollback_exits_1(wdir: Path) -> None:
    assert submit(wdir, request(0, 9)).exit_code == 0
    res = submit(wdir, request(9, 3))
    assert res.exit_code == 1 and "rollback refused" in res.stderr and res.stdout == ""


def test_cli_conflict_exits_1_and_says_which_old_to_send(wdir: Path) -> None:
    assert submit(wdir, request(0, 9)).exit_code == 0
    res = submit(wdir, request(4, 12))
    assert res.exit_code == 1 and "re-request with 'old 9'" in res.stderr


def test_cli_untrusted_log_exits_1(wdir: Path) -> None:
    res = submit(wdir, request(0, 3, signer=IMPOSTOR))
    assert res.exit_code == 1 and "no signature by its log key" in res.stderr


def test_cli_show_lists_the_cosigned_logs(wdir: Path) -> None:
    assert cli("show", "--state", wdir / "state.json").stdout == "no checkpoints cosigned yet\n"
    submit(wdir, request(0, 5))
    text = cli("show", "--state", wdir / "state.json")
    assert text.exit_code == 0 and ORIGIN in text.stdout and ROOTS[5].hex() in text.stdout
    data = json.loads(cli("show", "--state", wdir / "state.json", "--format", "json").stdout)
    [log] = data["logs"]
    assert (log["origin"], log["size"], log["root_hex"], log["log_vkey"]) == (
        ORIGIN, 5, ROOTS[5].hex(), LOG.verifier_key)


def test_cli_show_missing_state_exits_2(tmp_path: Path) -> None:
    res = cli("show", "--state", tmp_path / "nope.json")
    assert res.exit_code == 2 and "no witness state" in res.stderr
