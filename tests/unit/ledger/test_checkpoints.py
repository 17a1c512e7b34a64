"""Checkpoints, proofs from the database, and key rotation/revocation on a real ledger."""

from __future__ import annotations

import pytest

from ledger import merkle
from ledger.api import Ledger
from ledger.errors import InputError, IntegrityError, SignatureError
from ledger.events import Event
from ledger.keyhistory import sign_rotation
from ledger.kinds import KeyRevoked, KeyRotated
from ledger.note import Signer, cosign, open_checkpoint, verify_cosignatures
from tests.conftest import ORIGIN, TEST_SIGNER
from tests.helpers import policy_event
from tests.tamper import Tamperer

NEXT_SIGNER = Signer.from_seed(ORIGIN, bytes(range(1, 33)))
WITNESS = Signer.from_seed("witness.example.org", bytes(range(2, 34)), cosignature=True)


@pytest.fixture
def signed(sqlite_url: str) -> Ledger:
    led = Ledger.init(sqlite_url, origin=ORIGIN, verifier_key=TEST_SIGNER.verifier_key,
                      signer=TEST_SIGNER, checkpoint_every=10)
    yield led
    led.close()


def test_checkpoint_signs_the_head_root_under_the_origin(signed: Ledger) -> None:
    signed.append_many([policy_event(i) for i in range(5)])
    cp = signed.checkpoint()
    opened = open_checkpoint(cp.note, TEST_SIGNER.verifier)
    assert (opened.origin, opened.size, opened.root) == (ORIGIN, 6, signed.head().root)


def test_checkpoint_of_an_unchanged_log_is_not_repeated(signed: Ledger) -> None:
    first = signed.checkpoint()
    assert signed.checkpoint().id == first.id


def test_checkpoints_are_issued_every_n_entries_and_on_close(sqlite_url: str) -> None:
    led = Ledger.init(sqlite_url, origin=ORIGIN, verifier_key=TEST_SIGNER.verifier_key,
                      signer=TEST_SIGNER, checkpoint_every=10)
    for i in range(25):
        led.append(policy_event(i))
    assert [c.size for c in led.checkpoints()] == [10, 20]
    led.close()
    with Ledger.open(sqlite_url) as again:
        assert [c.size for c in again.checkpoints()] == [10, 20, 26]


def test_no_checkpoint_key_means_no_checkpoint(ledger: Ledger) -> None:
    with pytest.raises(InputError, match="no checkpoint key"):
        ledger.checkpoint()


def test_a_key_other_than_the_current_one_cannot_sign(sqlite_url: str) -> None:
    with Ledger.init(sqlite_url, origin=ORIGIN, verifier_key=TEST_SIGNER.verifier_key,
                     signer=NEXT_SIGNER, checkpoint_every=None) as led, \
            pytest.raises(InputError, match="not the log's current checkpoint key"):
        led.checkpoint()


def test_the_log_refuses_to_sign_after_history_was_rewritten(sqlite_url: str) -> None:
    signed = Ledger.init(sqlite_url, origin=ORIGIN, verifier_key=TEST_SIGNER.verifier_key,
                         signer=TEST_SIGNER, checkpoint_every=None)
    signed.append_many([policy_event(i) for i in range(8)])
    signed.checkpoint()
    signed.append(policy_event(99))
    tam = Tamperer(signed.url)
    try:
        tam.rewrite_recomputed(3)
    finally:
        tam.close()
    # the stored nodes of [0, 8) are untouched, but the leaves under level 4 are rehashed
    with pytest.raises(IntegrityError, match="history was rewritten; refusing to sign"):
        signed.checkpoint()
    signed.close()


@pytest.mark.parametrize("size", [1, 2, 5, 16, 17, 33, 70])
def test_inclusion_proofs_from_the_database_verify(signed: Ledger, size: int) -> None:
    signed.append_many([policy_event(i) for i in range(69)])
    leaves = [merkle.leaf_hash(e.raw) for e in signed.iter()]
    root = signed.root_at(size)
    assert root == merkle.root_of(leaves[:size])
    for seq in range(size):
        proof = signed.inclusion_proof(seq, size)
        assert proof == merkle.inclusion_proof(seq, leaves[:size])
        merkle.verify_inclusion(leaves[seq], seq, size, proof, root)


def test_consistency_proofs_from_the_database_verify(signed: Ledger) -> None:
    signed.append_many([policy_event(i) for i in range(69)])
    leaves = [merkle.leaf_hash(e.raw) for e in signed.iter()]
    for old in (1, 3, 16, 31, 64, 70):
        for new in (old, 45, 70):
            if new < old:
                continue
            proof = signed.consistency_proof(old, new)
            assert proof == merkle.consistency_proof(old, leaves[:new])
            merkle.verify_consistency(old, new, signed.root_at(old), signed.root_at(new), proof)


def test_proof_for_a_tree_larger_than_the_log_is_refused(signed: Ledger) -> None:
    with pytest.raises(InputError, match="larger than the ledger"):
        signed.inclusion_proof(0, 5)


def test_rotation_hands_over_signing_to_the_new_key(sqlite_url: str) -> None:
    led = Ledger.init(sqlite_url, origin=ORIGIN, verifier_key=TEST_SIGNER.verifier_key,
                      signer=TEST_SIGNER, checkpoint_every=None)
    led.checkpoint()
    rotation = KeyRotated(old_key=TEST_SIGNER.verifier_key, new_key=NEXT_SIGNER.verifier_key,
                          old_key_signature=sign_rotation(ORIGIN, TEST_SIGNER, NEXT_SIGNER.verifier_key))
    led.append(Event(rotation, actor="admin@example.com"))
    with pytest.raises(InputError, match="not the log's current checkpoint key"):
        led.checkpoint()
    led.close()
    with Ledger.open(sqlite_url, signer=NEXT_SIGNER, checkpoint_every=None) as again:
        cp = again.checkpoint()
        open_checkpoint(cp.note, NEXT_SIGNER.verifier)
        history = again.key_history()
        assert history.trusted([TEST_SIGNER.verifier]) == {TEST_SIGNER.verifier_key, NEXT_SIGNER.verifier_key}
        assert history.signer_for(1, [TEST_SIGNER.verifier_key]).vkey == TEST_SIGNER.verifier_key
        assert history.signer_for(2, [NEXT_SIGNER.verifier_key]).vkey == NEXT_SIGNER.verifier_key
        with pytest.raises(SignatureError, match="rotated at seq 1"):
            history.signer_for(2, [TEST_SIGNER.verifier_key])
        with pytest.raises(SignatureError, match="only introduced for sizes >= 2"):
            history.signer_for(1, [NEXT_SIGNER.verifier_key])


def test_a_rotation_not_signed_by_the_old_key_is_refused(ledger: Ledger) -> None:
    forged = KeyRotated(old_key=TEST_SIGNER.verifier_key, new_key=NEXT_SIGNER.verifier_key,
                        old_key_signature=sign_rotation(ORIGIN, NEXT_SIGNER, NEXT_SIGNER.verifier_key))
    with pytest.raises(InputError, match="not signed by the old key"):
        ledger.append(Event(forged, actor="mallory"))
    assert ledger.head().size == 1


def test_a_revoked_key_cannot_sign_later_checkpoints(sqlite_url: str) -> None:
    led = Ledger.init(sqlite_url, origin=ORIGIN, verifier_key=TEST_SIGNER.verifier_key,
                      signer=TEST_SIGNER, checkpoint_every=None)
    led.append(Event(KeyRevoked(verifier_key=TEST_SIGNER.verifier_key, reason="compromised"),
                     actor="admin@example.com"))
    with pytest.raises(InputError, match="no current checkpoint key"):
        led.checkpoint()
    history = led.key_history()
    with pytest.raises(SignatureError, match="revoked at seq 1"):
        history.signer_for(2, [TEST_SIGNER.verifier_key])
    led.close()


def test_ledger_created_cannot_be_appended(ledger: Ledger) -> None:
    genesis = ledger.get(0).event()
    with pytest.raises(InputError, match="written only by 'mlledger init'"):
        ledger.append(genesis)


def test_witness_cosignatures_are_verified_and_stored_once(signed: Ledger) -> None:
    cp = signed.checkpoint()
    line = cosign(cp.note, WITNESS, 1_790_000_000)
    assert signed.attach_cosignature(cp.size, line, WITNESS.verifier)
    assert not signed.attach_cosignature(cp.size, line, WITNESS.verifier)
    stored = signed.checkpoint_of_size(cp.size)
    assert stored is not None
    assert verify_cosignatures(stored.with_cosignatures(), [WITNESS.verifier], 1)[0][1] == 1_790_000_000


def test_a_cosignature_over_another_checkpoint_is_refused(signed: Ledger) -> None:
    first = signed.checkpoint()
    signed.append(policy_event())
    second = signed.checkpoint()
    line = cosign(first.note, WITNESS, 1_790_000_000)
    with pytest.raises(SignatureError):
        signed.attach_cosignature(second.size, line, WITNESS.verifier)
