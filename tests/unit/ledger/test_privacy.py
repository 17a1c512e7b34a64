"""ledger.privacy: keyed commitments, sealed inputs and crypto-shredding, on SQLite and PostgreSQL."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.api import Ledger
from ledger.canonical import encode
from ledger.errors import InputError
from ledger.events import Event
from ledger.privacy import COMMIT_INFO, SEAL_INFO, SubjectKey, SubjectKeys, derive
from tests.conftest import make_ledger

RECORD = {"income": 98765.4321, "age": 37, "region": "north"}


@pytest.fixture
def keys(any_url: str, tmp_path: Path) -> Iterator[SubjectKeys]:
    led = make_ledger(any_url)
    yield SubjectKeys(led, tmp_path / "home")
    led.close()


def test_the_commitment_is_hmac_of_the_canonical_bytes_under_the_derived_key() -> None:
    secret = bytes(range(32))
    key = SubjectKey.of("sk-" + "0" * 32, secret)
    want = hmac.new(derive(secret, COMMIT_INFO), encode(RECORD), sha256).digest()
    assert key.commit(RECORD) == want
    assert key.commit(dict(reversed(list(RECORD.items())))) == want  # key order does not matter
    assert derive(secret, COMMIT_INFO) != derive(secret, SEAL_INFO) != secret


@given(st.binary(min_size=0, max_size=200), st.binary(max_size=300))
@example(b"", b"")
@example(b"k" * 64, b"m")
@example(b"k" * 65, b"m")
def test_commit_encoded_is_hmac_sha256_for_any_key_and_message(commit_key: bytes, data: bytes) -> None:
    """The precomputed inner and outer states give RFC 2104 HMAC, for keys shorter than, equal to and
    longer than the 64-byte block, and the states are not consumed by a commitment."""
    key = SubjectKey("sk-" + "0" * 32, commit_key, b"\x00" * 32)
    want = hmac.new(commit_key, data, sha256).digest()
    assert key.commit_encoded(data) == want
    assert key.commit_encoded(data) == want  # again: the keyed states were copied, not updated
    assert key.commit_encoded(data + b"x") != want
    assert key.commit_many([data, data + b"x", data]) == [want, key.commit_encoded(data + b"x"), want]


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(-(2**53) + 1, 2**53 - 1), min_size=1))
def test_commitments_under_different_keys_do_not_link(record: dict[str, int]) -> None:
    a = SubjectKey.of("sk-" + "a" * 32, b"\x01" * 32)
    b = SubjectKey.of("sk-" + "b" * 32, b"\x02" * 32)
    assert a.commit(record) != b.commit(record)
    assert a.commit(record) == SubjectKey.of("sk-" + "a" * 32, b"\x01" * 32).commit(record)


def test_a_subject_keeps_one_key_and_subjects_get_different_keys(keys: SubjectKeys) -> None:
    k1, k2 = keys.for_subject("alice"), keys.for_subject("alice")
    assert k1.key_id == k2.key_id and k1.key_id.startswith("sk-")
    assert keys.for_subject("bob").key_id != k1.key_id
    many = keys.many_for_subjects(["alice", "carol", "dave"])
    assert many["alice"].key_id == k1.key_id and len({k.key_id for k in many.values()}) == 3
    assert keys.for_deployment("credit@production").key_id.startswith("dk-")


def test_a_key_never_shows_its_material() -> None:
    key = SubjectKey.of("sk-" + "c" * 32, b"\x07" * 32)
    assert repr(key) == f"SubjectKey('{key.key_id}')" and key.commit_key.hex() not in repr(key)


@pytest.mark.parametrize("subject", ["", "x" * 513, "tab\there"])
def test_bad_subject_ids_are_refused(keys: SubjectKeys, subject: str) -> None:
    with pytest.raises(InputError, match="subject id"):
        keys.for_subject(subject)


def test_sealed_inputs_open_only_with_their_key_and_commitment(keys: SubjectKeys) -> None:
    key = keys.for_subject("alice")
    digest = key.commit(RECORD)
    assert keys.store_sealed([(key, digest, RECORD), (key, digest, RECORD)]) == 1
    assert keys.read_sealed(key.key_id, digest) == encode(RECORD)
    nonce, ct = key.seal(digest, RECORD)
    with pytest.raises(InvalidTag):  # bound to its commitment by the associated data
        key.unseal(b"\x00" * 32, nonce, ct)
    with pytest.raises(InputError, match="no sealed input"):
        keys.read_sealed(key.key_id, b"\x00" * 32)


def _secret_of(ledger: Ledger, key_id: str) -> object:
    with ledger.store.engine.connect() as conn:
        return conn.execute(text("SELECT secret FROM subject_keys WHERE key_id = :k"), {"k": key_id}).scalar()


def test_erasure_records_then_destroys_the_key_and_the_sealed_inputs(keys: SubjectKeys) -> None:
    key = keys.for_subject("alice")
    digest = key.commit(RECORD)
    keys.store_sealed([(key, digest, RECORD)])
    receipt = keys.erase("alice", request_ref="DSR-1", legal_ground="GDPR Art. 17(1)(a)", reason="request",
                         actor="dpo@example.com")
    entry = keys.ledger.get(receipt.seq)
    assert entry.kind == "subject.erased" and entry.payload["key_id"] == key.key_id
    assert b"alice" not in entry.raw
    assert _secret_of(keys.ledger, key.key_id) is None and keys.status(key.key_id) == "erased"
    with pytest.raises(InputError, match="is erased"):
        keys.read_sealed(key.key_id, digest)
    with keys.ledger.store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sealed_inputs")).scalar() == 0
    assert keys.ledger.verify().ok
    with pytest.raises(InputError, match="no live key"):
        keys.erase("alice", request_ref="DSR-2", legal_ground="x", reason="again", actor="dpo@example.com")
    assert keys.for_subject("alice").key_id != key.key_id  # later decisions get a new key


def test_erasing_an_unknown_subject_writes_nothing(keys: SubjectKeys) -> None:
    size = keys.ledger.head_size()
    with pytest.raises(InputError, match="no live key"):
        keys.erase("nobody", request_ref="DSR-3", legal_ground="x", reason="r", actor="dpo@example.com")
    assert keys.ledger.head_size() == size


def _erasure(key_id: str) -> Event:
    return Event.from_json({"kind": "subject.erased", "actor": "dpo", "subject": f"key:{key_id}", "payload": {
        "key_id": key_id, "request_ref": "DSR-9", "legal_ground": "GDPR Art. 17", "reason": "r"}})


def test_the_ledger_refuses_erasing_a_deployment_key_an_unknown_key_or_one_twice(keys: SubjectKeys) -> None:
    dk = keys.for_deployment("credit@production")
    with pytest.raises(InputError, match="deployment key"):
        keys.ledger.append(_erasure(dk.key_id))
    with pytest.raises(InputError, match="unknown"):
        keys.ledger.append(_erasure("sk-" + "f" * 32))
    sk = keys.for_subject("erin")
    keys.ledger.append(_erasure(sk.key_id))
    with pytest.raises(InputError, match="already erased"):
        keys.ledger.append(_erasure(sk.key_id))


def test_a_crash_between_record_and_destroy_is_finished_later(keys: SubjectKeys) -> None:
    """The entry is appended first; if the process dies before the key goes, finish_erasures completes it."""
    sk = keys.for_subject("frank")
    keys.ledger.append(_erasure(sk.key_id))  # as if the process died right after the append
    assert keys.status(sk.key_id) == "live"
    assert keys.finish_erasures() == [sk.key_id]
    assert keys.status(sk.key_id) == "erased" and keys.finish_erasures() == []


def test_a_version_1_ledger_gains_the_erasable_tables_on_open(sqlite_url: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import ledger.api as api
    import ledger.schema as schema

    with monkeypatch.context() as m:  # create the ledger as release 1 would
        m.setattr("ledger._store.MIGRATIONS", schema.MIGRATIONS[:1])
        m.setattr("ledger._store.SCHEMA_VERSION", 1)
        m.setattr(api, "SCHEMA_VERSION", 1)
        make_ledger(sqlite_url).close()
    with Ledger.open(sqlite_url) as led:
        with led.store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM subject_keys")).scalar() == 0
        assert SubjectKeys(led, tmp_path / "home").for_subject("gina").key_id.startswith("sk-")
        assert led.verify().ok


def test_an_erased_secret_and_subject_id_leave_no_bytes_in_the_sqlite_files(sqlite_url: str, tmp_path: Path) -> None:
    led = make_ledger(sqlite_url)
    keys = SubjectKeys(led, tmp_path / "home")
    key = keys.for_subject("zoe.unique-subject@example.com")
    for i in range(50):  # neighbours on the same pages
        keys.for_subject(f"other-{i}")
    wrapped = _secret_of(led, key.key_id)
    keys.erase("zoe.unique-subject@example.com", request_ref="DSR-5", legal_ground="GDPR Art. 17", reason="r",
               actor="dpo@example.com")
    assert keys.wal_cleared
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    try:  # while the ledger is still open: closing the last connection would checkpoint anyway
        blobs = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
        assert isinstance(wrapped, bytes) and wrapped not in blobs
        assert b"zoe.unique-subject@example.com" not in blobs
    finally:
        led.close()
