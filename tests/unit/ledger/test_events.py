"""Event model: strict payloads, the kind registry, and the envelope checks."""

from __future__ import annotations

import hashlib
import math

import pytest

from ledger.errors import InputError
from ledger.events import Event, Payload, kinds, payload_model, register
from ledger.kinds import ColumnSummary, DatasetRegistered, PolicyPublished
from tests.helpers import dataset_event

KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def identity(**payload: object) -> dict[str, object]:
    body: dict[str, object] = {"name": "alice@example.com", "roles": ["auditor"], "public_key": KEY}
    body.update(payload)
    return {"kind": "identity.registered", "actor": "admin@example.com", "payload": body}


def test_core_kinds_are_registered() -> None:
    assert {"ledger.created", "key.added", "key.rotated", "key.revoked", "identity.registered",
            "policy.published", "dataset.registered"} <= set(kinds())


def test_unknown_kind_is_refused_naming_the_known_ones() -> None:
    pattern = r"event\.kind: unknown event kind 'model\.trainedd'; known kinds: .*dataset\.registered"
    with pytest.raises(InputError, match=pattern):
        Event.from_json({"kind": "model.trainedd", "payload": {}})


def test_registering_a_kind_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("policy.published")(type("Again", (Payload,), {}))


def test_malformed_kind_name_is_refused() -> None:
    with pytest.raises(ValueError, match="does not match"):
        register("NoDots")


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({**identity(), "payload": {"name": "a", "roles": ["auditor"]}},
         r"payload\.public_key: Field required"),
        (identity(extra=1), r"payload\.extra: Extra inputs are not permitted"),
        (identity(roles="auditor"), r"payload\.roles: Input should be a valid list"),
        (identity(roles=["king"]), r"payload\.roles\.0: Input should be 'admin'"),
        (identity(roles=[]), r"payload\.roles: List should have at least 1 item"),
        (identity(roles=["auditor", "auditor"]), r"roles must not repeat"),
        ({**identity(), "seq": 5}, r"unexpected field\(s\) seq"),
        ({**identity(), "actor": 5}, r"event\.actor: required, a string"),
        ({**identity(), "subject": 5}, r"event\.subject: must be a string or null"),
        ({**identity(), "payload": []}, r"event\.payload: required, a JSON object"),
        ({**identity(), "actor": "bad\nactor"},
         r"event\.actor: must be non-empty, without control characters"),
        ([1, 2], r"event: expected a JSON object, got list"),
    ],
    ids=["missing-field", "extra-field", "wrong-type", "bad-enum", "empty-list", "repeated",
         "envelope-field", "actor-type", "subject-type", "payload-type", "actor-control", "not-object"],
)
def test_invalid_event_is_refused_naming_the_field(event: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Event.from_json(event)


def test_strict_types_do_not_coerce_strings_to_integers() -> None:
    body = dataset_event().payload.model_dump(mode="json")
    body["rows"] = "10"
    with pytest.raises(InputError, match=r"payload\.rows: Input should be a valid integer"):
        Event.from_json({"kind": "dataset.registered", "actor": "a", "payload": body})


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_in_a_free_form_payload_field_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite number"):
        ColumnSummary(name="x", dtype="float64", nullable=True, stats={"mean": bad})


def test_policy_hash_must_be_the_hash_of_the_body() -> None:
    with pytest.raises(ValueError, match="is not SHA-256 of body"):
        PolicyPublished(policy_hash="0" * 64, stage="production", name="p", body="rules: []")


def test_declared_sensitive_feature_must_be_a_column() -> None:
    body = dataset_event().payload.model_dump(mode="json")
    body["sensitive_features"] = ["race"]
    with pytest.raises(InputError, match="declared column 'race' is not among"):
        Event.from_json({"kind": "dataset.registered", "actor": "a", "payload": body})


def test_lone_surrogate_in_actor_is_refused_at_encoding() -> None:
    ev = Event.from_json(identity())
    bad = Event(ev.payload, actor="\ud800x")
    with pytest.raises(InputError, match="actor"):
        bad.prepare()


def test_float_payload_values_use_the_canonical_form() -> None:
    ev = Event(
        DatasetRegistered(
            name="d", sha256=hashlib.sha256(b"d").hexdigest(), format="csv", size_bytes=1, rows=1,
            role="eval", columns=[ColumnSummary(name="x", dtype="float64", nullable=False,
                                                stats={"mean": 1e16, "std": 2.5e-05})],
            source="file:///d.csv",
        ),
        actor="a",
    )
    assert b'"mean":1e+16,"std":2.5e-05' in ev.prepare().data


def test_payload_model_lookup_returns_the_registered_class() -> None:
    assert payload_model("policy.published") is PolicyPublished


def test_round_trip_through_json_keeps_the_event() -> None:
    ev = dataset_event(3)
    again = Event.from_json(ev.to_json())
    assert again.payload == ev.payload and again.actor == ev.actor and again.subject == ev.subject
