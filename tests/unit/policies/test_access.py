"""Access control (issue 12): the role x action table, forged actors, revocation at seq N.

Every cell of the documented table is exercised through the access guard that runs inside the
sequencing transaction; ``mlledger audit`` re-checks the same at each entry's seq.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import backends.kinds  # model.deployed
import policies.kinds  # the guard and the access kinds
from ledger import events, keys
from ledger.actions import sign_event
from ledger.api import Ledger
from ledger.canonical import format_ts
from ledger.errors import InputError
from ledger.events import Event, Payload
from ledger.kinds import ROLES, AccessRead, ColumnSummary, DatasetRegistered, IdentityRegistered, PolicyPublished
from policies._access_kinds import AccessEnabled, RoleGranted, RoleRevoked, TokenIssued
from policies._approvals import GENESIS_ADMIN, identity_message
from policies._governance import Finding, audit
from policies.kinds import ModelPromoted

ORIGIN = "example.com/access"
SHA = "ab" * 32

#: The documented table (README "Access control"), restated here so that a change to the code's
#: table without a change to the documentation fails: kind (or read) -> the roles allowed.
DOCUMENTED: dict[str, set[str]] = {
    "role.granted": {"admin"},
    "token.issued": {"admin"},
    "policy.published": {"admin", "model-risk"},
    "dataset.registered": {"data-steward"},
    "dataset.validated": {"data-steward"},
    "model.trained": {"model-developer"},
    "model.registered": {"model-developer"},
    "evidence.recorded": {"model-developer"},
    "doc.attached": {"model-developer"},
    "model.undeployed": {"deployer"},
    "key.added": {"admin"},
    "access.enabled": {"admin"},
    "model.promoted": {"deployer"},
    "model.deployed": {"deployer"},
    "subject.erased": {"dpo"},
    "access.read:bundle": {"auditor"},
    "access.read:inputs": {"auditor", "validator", "model-risk", "dpo"},
}


def _pub(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class World:
    def __init__(self, path: Path) -> None:
        self.log = keys.generate(ORIGIN)
        self.ledger = Ledger.init(str(path / "ledger"), origin=ORIGIN, verifier_key=self.log.verifier_key)
        self.keys: dict[str, Ed25519PrivateKey] = {}

    def register(self, name: str, *roles: str) -> None:
        key = Ed25519PrivateKey.generate()
        self.keys[name] = key
        msg = identity_message(ORIGIN, name, list(roles), _pub(key), GENESIS_ADMIN)
        sig = base64.b64encode(self.log.private_key.sign(msg)).decode()
        self.ledger.append(Event(IdentityRegistered(name=name, roles=list(roles), public_key=_pub(key),  # type: ignore[arg-type]
                                                    signed_by=GENESIS_ADMIN, signature=sig),
                                 actor="admin:ledger-key", subject=f"identity:{name}"))

    def as_genesis(self, payload: Payload, subject: str | None = None) -> int:
        return self.signed(GENESIS_ADMIN, self.log.private_key, payload, subject)

    def signed(self, actor: str, key: Ed25519PrivateKey, payload: Payload, subject: str | None = None) -> int:
        event = sign_event(Event(payload, actor=actor, subject=subject), actor=actor, key=key, origin=ORIGIN,
                           signed_at=format_ts(_now_us()))
        return self.ledger.append(event).seq

    def act(self, name: str, payload: Payload, subject: str | None = None) -> int:
        return self.signed(name, self.keys[name], payload, subject)

    def findings(self) -> list[Finding]:
        with self.ledger.view() as view:
            return audit(view)


def _now_us() -> int:
    import time

    return time.time_ns() // 1000


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.ledger.close()


def _policy(n: int = 0) -> PolicyPublished:
    body = f"name: p{n}\n"
    return PolicyPublished(policy_hash=hashlib.sha256(body.encode()).hexdigest(), stage="production", name=f"p{n}",
                           body=body)


_counter = iter(range(10**6))
ACTIONS: dict[str, Callable[[], tuple[Payload, str | None]]] = {
    "role.granted": lambda: (RoleGranted(identity="target", role="auditor", reason="audit season"),
                             "identity:target"),
    "token.issued": lambda: (TokenIssued(token_sha256=hashlib.sha256(str(next(_counter)).encode()).hexdigest(),
                                         identity="target", scopes=["proofs"],
                                         expires_at="2099-01-01T00:00:00.000000Z"), "identity:target"),
    "policy.published": lambda: (_policy(next(_counter)), None),
    "dataset.registered": lambda: (DatasetRegistered(
        name="d", sha256=SHA, format="csv", size_bytes=1, rows=1, role="train", source="s",
        columns=[ColumnSummary(name="a", dtype="int64", nullable=False)]), None),
    "doc.attached": lambda: (policies.kinds.DocAttached(sha256=SHA, title="Model card", size_bytes=1, source="card.md"),
                             None),
    "model.promoted": lambda: (ModelPromoted(model="m@1", artifact_sha256=SHA, stage="production", gate_seq=0),
                               "model:m@1"),
    "model.deployed": lambda: (backends.kinds.ModelDeployed(model="m@1", artifact_sha256=SHA, stage="production",
                                                            backend="local", promotion_seq=0), "model:m@1"),
    "subject.erased": lambda: (events.payload_model("subject.erased").model_validate(
        {"key_id": "sk-" + "0" * 32, "request_ref": "DSR-1", "legal_ground": "GDPR Art. 17(1)(a)",
         "reason": "asked"}), None),
    "access.read:bundle": lambda: (AccessRead(what="bundle", target="b.zip"), None),
    "access.read:inputs": lambda: (AccessRead(what="inputs", target="prediction:1"), None),
}


@pytest.fixture
def controlled(world: World) -> World:
    for role in ROLES:
        world.register(f"{role}-person", role)
    world.register("target", "service")
    world.as_genesis(AccessEnabled(reason="go live"))
    return world


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_role_by_action_table(controlled: World, role: str, action: str) -> None:
    """Every cell: allowed exactly when the documented table says so; a refusal names the missing role."""
    payload, subject = ACTIONS[action]()
    size = controlled.ledger.head_size()
    try:
        controlled.act(f"{role}-person", payload, subject)
        refusal = None
    except InputError as exc:
        refusal = str(exc)
    if role in DOCUMENTED[action]:
        # Allowed by access control; the kind's own checks (e.g. a promotion needs its gate) may still refuse.
        assert refusal is None or "needs the role" not in refusal, refusal
    else:
        assert refusal is not None and "needs the role" in refusal, refusal
        assert f"{role}-person holds {role}" in refusal
        assert controlled.ledger.head_size() == size  # nothing written


def test_the_code_table_is_the_documented_one() -> None:
    from policies._access import roles_for

    for action, roles in DOCUMENTED.items():
        kind, _, what = action.partition(":")
        assert roles_for(kind, {"what": what} if what else None) == roles, action


def test_an_unsigned_action_with_a_forged_actor_is_refused(controlled: World) -> None:
    payload, _ = ACTIONS["policy.published"]()
    with pytest.raises(InputError, match="policy.published refused: policy.published by model-risk-person "
                                         "is not signed by its actor"):
        controlled.ledger.append(Event(payload, actor="model-risk-person"))


def test_a_signature_by_another_key_is_refused(controlled: World) -> None:
    payload, _ = ACTIONS["policy.published"]()
    with pytest.raises(InputError, match="does not verify with their registered key"):
        controlled.signed("model-risk-person", controlled.keys["deployer-person"], payload)


def test_a_replayed_signed_action_is_refused(controlled: World) -> None:
    payload, _ = ACTIONS["policy.published"]()
    event = sign_event(Event(payload, actor="model-risk-person"), actor="model-risk-person",
                       key=controlled.keys["model-risk-person"], origin=ORIGIN, signed_at=format_ts(_now_us()))
    seq = controlled.ledger.append(event).seq
    with pytest.raises(InputError, match=f"already used at seq {seq}"):
        controlled.ledger.append(event)


def test_a_forged_actor_written_past_the_guard_is_flagged_by_audit(controlled: World,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A rogue writer (guards bypassed) records a promotion in a deployer's name: audit flags it."""
    monkeypatch.setattr(events, "_GUARDS", [])
    payload, _ = ACTIONS["policy.published"]()
    seq = controlled.ledger.append(Event(payload, actor="model-risk-person")).seq
    forged = sign_event(Event(_policy(999), actor="deployer-person"), actor="deployer-person",
                        key=controlled.keys["model-risk-person"], origin=ORIGIN, signed_at=format_ts(_now_us()))
    seq2 = controlled.ledger.append(forged).seq
    monkeypatch.undo()
    found = {(f.seq, f.severity): f.message for f in controlled.findings()}
    assert "is not signed by its actor" in found[(seq, "violation")]
    assert "does not verify" in found[(seq2, "violation")]


def test_a_role_revoked_at_seq_n_is_refused_after_n_and_earlier_actions_stay_valid(controlled: World) -> None:
    before = controlled.act("model-risk-person", _policy(1))
    revoked = controlled.as_genesis(RoleRevoked(identity="model-risk-person", role="model-risk", reason="left"),
                                    "identity:model-risk-person")
    assert before < revoked
    with pytest.raises(InputError, match="model-risk-person holds no role; policy.published needs the role "
                                         "admin or model-risk"):
        controlled.act("model-risk-person", _policy(2))
    assert [f for f in controlled.findings() if f.severity == "violation"] == []


def test_a_granted_role_counts_from_its_seq(controlled: World) -> None:
    with pytest.raises(InputError, match="needs the role deployer"):
        controlled.act("target", ACTIONS["model.deployed"]()[0], "model:m@1")
    controlled.act("admin-person", RoleGranted(identity="target", role="deployer", reason="on call"),
                   "identity:target")
    with pytest.raises(InputError) as exc:  # now allowed; model.deployed's own check may still refuse
        controlled.act("target", ACTIONS["model.deployed"]()[0], "model:m@1")
        raise InputError("written")
    assert "needs the role" not in str(exc.value)


def test_a_role_grant_by_a_non_admin_is_refused_even_before_access_control(world: World) -> None:
    world.register("dev", "model-developer")
    with pytest.raises(InputError, match="role.granted needs the role admin"):
        world.act("dev", RoleGranted(identity="dev", role="admin", reason="self-promotion"), "identity:dev")


def test_without_access_control_unsigned_actions_are_written_and_reported_once(world: World) -> None:
    world.ledger.append(Event(_policy(1), actor="anyone"))
    world.ledger.append(Event(_policy(2), actor="anyone"))
    notices = [f.message for f in world.findings() if f.severity == "notice"]
    assert any(m.startswith("2 governance action(s) are not signed by their actor") for m in notices), notices


def test_unsigned_entries_keep_their_pre_issue_12_bytes() -> None:
    """An absent actor_signature is omitted: entries written before issue 12 verify unchanged."""
    assert "actor_signature" not in Event(_policy(1), actor="a").to_json()["payload"]


def test_init_keeps_the_ledger_home_private_and_doctor_flags_a_readable_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    from click.testing import CliRunner

    from ledger.cli import root

    monkeypatch.chdir(tmp_path)
    for var in ("MLLEDGER_URL", "MLLEDGER_HOME", "MLLEDGER_IDENTITY"):
        monkeypatch.delenv(var, raising=False)
    old = os.umask(0o022)
    try:
        assert CliRunner().invoke(root, ["init", "--origin", "example.com/perm"]).exit_code == 0
    finally:
        os.umask(old)
    home, db = tmp_path / ".mlledger", tmp_path / ".mlledger" / "ledger.db"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700 and stat.S_IMODE(db.stat().st_mode) == 0o600
    out = CliRunner().invoke(root, ["doctor"]).output
    assert "ledger.db is readable" not in out
    db.chmod(0o644)
    out = CliRunner().invoke(root, ["doctor"])
    assert out.exit_code == 1 and "ledger.db is readable by group or others (mode 0644)" in out.output
    assert CliRunner().invoke(root, ["erase", "--finish"]).exit_code == 0  # opens (creates) the subject KEK
    kek = home / "keys" / "subjects.kek"
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600
    assert "subjects.kek" not in CliRunner().invoke(root, ["doctor"]).output
    kek.chmod(0o640)
    assert "subject key-encryption key) is a symbolic link or readable" in CliRunner().invoke(root, ["doctor"]).output
