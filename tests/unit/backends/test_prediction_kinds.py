"""prediction.made: no client-chosen string in the clear; request ids are keyed HMACs (FORMAT.md 3.14)."""

from __future__ import annotations

import hmac
from hashlib import sha256
from pathlib import Path

import pytest

import backends.kinds  # noqa: F401 - registers the kinds
from backends.kinds import PredictionMade
from ledger.api import Ledger
from ledger.errors import InputError
from ledger.events import Event
from ledger.privacy import COMMIT_INFO, SubjectKey, derive


def _decision(**extra: object) -> PredictionMade:
    fields: dict[str, object] = {"key_id": "dk-" + "0" * 32, **extra}
    return PredictionMade(model="credit@1", artifact_sha256="ab" * 32, stage="production", deployed_seq=0,
                          input_commitment="cd" * 32, label=1, latency_ms=1.0, automated_decision=True,
                          **fields)  # type: ignore[arg-type]


def test_a_request_id_in_the_clear_is_refused_and_nothing_is_written(ledger: Ledger) -> None:
    size = ledger.head_size()
    with pytest.raises(InputError, match="request_id is no longer recorded verbatim.*request_ref"):
        ledger.append(Event(_decision(request_id="customer-4711.alice"), actor="svc"))
    assert ledger.head_size() == size
    ref = SubjectKey.of("dk-" + "0" * 32, b"\x01" * 32).request_ref("customer-4711.alice")
    receipt = ledger.append(Event(_decision(request_ref=ref), actor="svc"))
    assert b"alice" not in ledger.get(receipt.seq).raw


def test_request_ref_is_hmac_of_the_domain_and_the_id_under_k_commit() -> None:
    secret = bytes(range(32))
    key = SubjectKey.of("sk-" + "a" * 32, secret)
    want = hmac.new(derive(secret, COMMIT_INFO), b"mlledger/v1 request-id\x00req-1", sha256).hexdigest()
    assert key.request_ref("req-1") == want != key.request_ref("req-2")
    assert SubjectKey.of("sk-" + "b" * 32, b"\x02" * 32).request_ref("req-1") != want  # per key: unlinkable


def test_a_decision_without_request_ref_keeps_its_earlier_bytes() -> None:
    assert "request_ref" not in Event(_decision(), actor="svc").to_json()["payload"]
    assert Event(_decision(request_ref="ef" * 32), actor="svc").to_json()["payload"]["request_ref"] == "ef" * 32


def test_a_decision_is_refused_under_an_erased_key_or_one_whose_erasure_is_recorded(any_url: str,
                                                                                     tmp_path: Path) -> None:
    from ledger.privacy import KeyErased, SubjectKeys
    from tests.conftest import make_ledger

    led = make_ledger(any_url)
    try:
        keys = SubjectKeys(led, tmp_path)
        live, crashed, erased = (keys.for_subject(s) for s in ("ann", "bo", "cy"))
        led.append(Event(_decision(key_id=live.key_id), actor="svc"))  # a live key: recorded
        led.append(Event.from_json({"kind": "subject.erased", "actor": "dpo", "subject": f"key:{crashed.key_id}",
                                    "payload": {"key_id": crashed.key_id, "request_ref": "DSR-1",
                                                "legal_ground": "GDPR Art. 17", "reason": "r"}}))
        keys.erase("cy", request_ref="DSR-2", legal_ground="GDPR Art. 17", reason="r", actor="dpo")
        size = led.head_size()
        for key in (crashed, erased):  # the erasure is recorded (its destruction pending), or done
            with pytest.raises(KeyErased, match=f"key {key.key_id} was erased"):
                led.append(Event(_decision(key_id=key.key_id), actor="svc"))
        assert led.head_size() == size
    finally:
        led.close()


def test_batch_records_of_any_label_are_the_canonical_encoding() -> None:
    """The fast path splices pre-encoded pieces for int and bool labels; any other label (a string, a
    list from an engine plugin) is encoded by ``encode`` itself, never refused."""
    from backends._batch_encode import record_lines
    from ledger.canonical import encode

    labels = [1, True, False, "approve", [0, 1], 2**53 - 1, -7]
    part = {"input_commitment": ["ab" * 32] * len(labels), "key_id": ["dk-1"] * len(labels), "label": labels,
            "row": list(range(len(labels))), "score": [0.5] * len(labels)}
    want = [encode({"input_commitment": "ab" * 32, "key_id": "dk-1", "label": lb, "row": i, "score": 0.5})
            for i, lb in enumerate(labels)]
    assert record_lines(part) == want


def test_a_plain_list_of_bool_and_int_labels_keeps_its_bools() -> None:
    import numpy as np

    from backends.serving import Scorer

    class Out:
        labels, scores = [True, 2], None

    class Engine:
        def predict(self, model: object, frame: object) -> Out:
            return Out()

    scorer = Scorer.__new__(Scorer)
    scorer.engine = Engine()  # type: ignore[assignment]
    scorer.deployed = type("D", (), {"columns": {"x": "float"}, "model": None})()
    assert scorer.predict([{"x": 1.0}, {"x": 2.0}])[0] == [True, 2]
    Out.labels = np.array([True, False])  # type: ignore[assignment]
    assert scorer.predict([{"x": 1.0}, {"x": 2.0}])[0] == [True, False]
