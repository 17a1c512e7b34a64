"""Access control (issue 12): the role x action table, forged actors, revocation at seq N, and the
kinds people and services write (reviews, gates, incidents, labels, monitoring, reports), including
reviews the serving API vouches for.

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
import backends.kinds_loop
import policies.kinds  # the guard and the access kinds
import reports.kinds
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
    "human.reviewed": {"validator", "model-risk"},
    "gate.evaluated": {"deployer", "validator", "model-risk"},
    "incident.opened": {"deployer", "model-risk", "service"},
    "incident.reported": {"deployer", "model-risk"},
    "incident.closed": {"deployer", "model-risk"},
    "label.received": {"data-steward", "service"},
    "monitor.window": {"service"},
    "monitor.alert": {"service"},
    "retrain.triggered": {"service"},
    "report.generated": {"auditor"},
}
#: Kinds whose every allowed cell must be written (their own checks are satisfied by the factories).
WRITTEN_WHEN_ALLOWED = frozenset({"human.reviewed", "gate.evaluated", "incident.opened", "incident.reported",
                                  "incident.closed", "label.received", "monitor.window", "monitor.alert",
                                  "retrain.triggered", "report.generated"})


def _pub(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class World:
    def __init__(self, path: Path) -> None:
        self.log = keys.generate(ORIGIN)
        self.ledger = Ledger.init(str(path / "ledger"), origin=ORIGIN, verifier_key=self.log.verifier_key)
        self.keys: dict[str, Ed25519PrivateKey] = {}

    def register(self, name: str, *roles: str, display_name: str | None = None, version: int = 2,
                 shown: str | None = None) -> None:
        """Register ``name`` signed by the genesis admin; ``shown`` puts another display name in the
        entry than the one signed (a tampered registration)."""
        key = Ed25519PrivateKey.generate()
        self.keys[name] = key
        msg = identity_message(ORIGIN, name, list(roles), _pub(key), GENESIS_ADMIN, display_name=display_name,
                               version=version)
        sig = base64.b64encode(self.log.private_key.sign(msg)).decode()
        self.ledger.append(Event(IdentityRegistered(name=name, roles=list(roles), public_key=_pub(key),  # type: ignore[arg-type]
                                                    display_name=shown if shown is not None else display_name,
                                                    signed_by=GENESIS_ADMIN, signature=sig,
                                                    signature_version=2 if version == 2 else None),
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


def _prediction(w: World) -> int:
    """A recorded decision (prediction.made is written by the serving service, not a signed action)."""
    return w.ledger.append(Event(backends.kinds.PredictionMade(
        model="m@1", artifact_sha256=SHA, stage="production", deployed_seq=0, input_commitment=SHA,
        key_id="dk-" + "0" * 32, label=1, latency_ms=1.0, automated_decision=True), actor="svc")).seq


def _gate() -> policies.kinds.GateEvaluated:
    return policies.kinds.GateEvaluated(
        model="m@1", artifact_sha256=SHA, stage="production", policy_name="p", policy_sha256=SHA, decision="deny",
        rules=[policies.kinds.RuleRecord(rule_id="perf", kind="performance", outcome="fail", reason="below the floor",
                                         source="p.yaml:3")])


def _incident() -> backends.kinds_loop.IncidentOpened:
    return backends.kinds_loop.IncidentOpened(model="m", stage="production", severity="low", summary="drift seen")


def _alert() -> backends.kinds.MonitorAlert:
    return backends.kinds.MonitorAlert(kind="latency", model="m", stage="production", detail="p99 over 200 ms",
                                       source="monitor")


def _window(seq: int) -> backends.kinds_loop.MonitorWindow:
    k = backends.kinds_loop
    return k.MonitorWindow(model="m", stage="production", versions=["m@1"], first_seq=seq, last_seq=seq, count=1,
                           latency_ms=k.LatencyStats(p50=1.0, p95=1.0, p99=1.0, max=1.0),
                           prediction=k.PredictionStats(reference="none"),
                           input_drift=k.InputDrift(computed=False, reason="inputs not stored"),
                           labels=k.LabelStats(count=0), thresholds={})


_counter = iter(range(10**6))
ACTIONS: dict[str, Callable[[World], tuple[Payload, str | None]]] = {
    "role.granted": lambda w: (RoleGranted(identity="target", role="auditor", reason="audit season"),
                             "identity:target"),
    "token.issued": lambda w: (TokenIssued(token_sha256=hashlib.sha256(str(next(_counter)).encode()).hexdigest(),
                                         identity="target", scopes=["proofs"],
                                         expires_at="2099-01-01T00:00:00.000000Z"), "identity:target"),
    "policy.published": lambda w: (_policy(next(_counter)), None),
    "dataset.registered": lambda w: (DatasetRegistered(
        name="d", sha256=SHA, format="csv", size_bytes=1, rows=1, role="train", source="s",
        columns=[ColumnSummary(name="a", dtype="int64", nullable=False)]), None),
    "doc.attached": lambda w: (policies.kinds.DocAttached(sha256=SHA, title="Model card", size_bytes=1,
                                                          source="card.md"), None),
    "model.promoted": lambda w: (ModelPromoted(model="m@1", artifact_sha256=SHA, stage="production", gate_seq=0),
                               "model:m@1"),
    "model.deployed": lambda w: (backends.kinds.ModelDeployed(model="m@1", artifact_sha256=SHA, stage="production",
                                                            backend="local", promotion_seq=0), "model:m@1"),
    "subject.erased": lambda w: (events.payload_model("subject.erased").model_validate(
        {"key_id": "sk-" + "0" * 32, "request_ref": "DSR-1", "legal_ground": "GDPR Art. 17(1)(a)",
         "reason": "asked"}), None),
    "access.read:bundle": lambda w: (AccessRead(what="bundle", target="b.zip"), None),
    "access.read:inputs": lambda w: (AccessRead(what="inputs", target="prediction:1"), None),
    "human.reviewed": lambda w: (backends.kinds.HumanReviewed(prediction_seq=_prediction(w), outcome="confirmed",
                                                              reason="checked the file"), None),
    "gate.evaluated": lambda w: (_gate(), "model:m@1"),
    "incident.opened": lambda w: (_incident(), "model:m"),
    "incident.reported": lambda w: (backends.kinds_loop.IncidentReported(
        incident_seq=w.act("deployer-person", _incident()), authority="market-surveillance", reference="R-1"), None),
    "incident.closed": lambda w: (backends.kinds_loop.IncidentClosed(
        incident_seq=w.act("deployer-person", _incident()), resolution="rolled back"), None),
    "label.received": lambda w: (backends.kinds_loop.LabelReceived(prediction_seq=_prediction(w), label=1,
                                                                   source_sha256=SHA), None),
    "monitor.window": lambda w: (_window(_prediction(w)), "model:m"),
    "monitor.alert": lambda w: (_alert(), "model:m"),
    "retrain.triggered": lambda w: (backends.kinds_loop.RetrainTriggered(
        model="m", stage="production", rule="drift-retrain", alerts=[w.act("service-person", _alert())],
        incumbent="m@1", policy_seq=0, data="reference"), "model:m"),
    "report.generated": lambda w: (reports.kinds.ReportGenerated(report_sha256=SHA, kind="ledger", format="json",
                                                                 tree_size=1, root=SHA), None),
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
    payload, subject = ACTIONS[action](controlled)
    size = controlled.ledger.head_size()
    try:
        controlled.act(f"{role}-person", payload, subject)
        refusal = None
    except InputError as exc:
        refusal = str(exc)
    if role in DOCUMENTED[action]:
        # Allowed by access control; the kind's own checks (e.g. a promotion needs its gate) may still refuse.
        assert refusal is None or "needs the role" not in refusal, refusal
        if action in WRITTEN_WHEN_ALLOWED:
            assert refusal is None and controlled.ledger.head_size() == size + 1, refusal
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
    payload, _ = ACTIONS["policy.published"](controlled)
    with pytest.raises(InputError, match="policy.published refused: policy.published by model-risk-person "
                                         "is not signed by its actor"):
        controlled.ledger.append(Event(payload, actor="model-risk-person"))


def test_a_signature_by_another_key_is_refused(controlled: World) -> None:
    payload, _ = ACTIONS["policy.published"](controlled)
    with pytest.raises(InputError, match="does not verify with their registered key"):
        controlled.signed("model-risk-person", controlled.keys["deployer-person"], payload)


def test_a_replayed_signed_action_is_refused(controlled: World) -> None:
    payload, _ = ACTIONS["policy.published"](controlled)
    event = sign_event(Event(payload, actor="model-risk-person"), actor="model-risk-person",
                       key=controlled.keys["model-risk-person"], origin=ORIGIN, signed_at=format_ts(_now_us()))
    seq = controlled.ledger.append(event).seq
    with pytest.raises(InputError, match=f"already used at seq {seq}"):
        controlled.ledger.append(event)


def _signed_policy(world: World, n: int) -> Event:
    return sign_event(Event(_policy(n), actor="model-risk-person"), actor="model-risk-person",
                      key=world.keys["model-risk-person"], origin=ORIGIN, signed_at=format_ts(_now_us()))


def test_a_replay_inside_one_batch_or_from_another_process_is_refused(controlled: World, tmp_path: Path) -> None:
    event = _signed_policy(controlled, 501)
    size = controlled.ledger.head_size()
    with pytest.raises(InputError, match=f"already used at seq {size}"):
        controlled.ledger.append_many([event, event])
    assert controlled.ledger.head_size() == size
    seq = controlled.ledger.append(event).seq
    # another writer: its own index, read from the log
    with Ledger.open(str(tmp_path / "ledger")) as other, pytest.raises(InputError, match=f"already used at seq {seq}"):
        other.append(event)


def test_a_rolled_back_batch_does_not_count_as_a_first_use(controlled: World) -> None:
    """The index reads the batch's earlier entries; when the batch is refused they never happened."""
    first, refused = _signed_policy(controlled, 601), Event(_policy(602), actor="model-risk-person")  # unsigned
    size = controlled.ledger.head_size()
    with pytest.raises(InputError, match="is not signed by its actor"):
        controlled.ledger.append_many([first, refused])
    assert controlled.ledger.head_size() == size
    other = _signed_policy(controlled, 603)
    assert controlled.ledger.append(other).seq == size  # takes the rolled-back entry's seq
    assert controlled.ledger.append(first).seq == size + 1  # not "already used" at the vanished seq
    with pytest.raises(InputError, match=f"already used at seq {size + 1}"):
        controlled.ledger.append(first)


def test_signed_appends_do_not_slow_down_as_the_log_grows(controlled: World) -> None:
    """The replay check reads each entry once (not every earlier entry of the kind per append)."""
    from ledger.view import LedgerView

    reads: list[int] = []
    real = LedgerView.raw_between

    def counting(self: LedgerView, lo: int, hi: int) -> list[tuple[int, bytes, bytes]]:
        out = real(self, lo, hi)
        reads.append(len(out))
        return out

    LedgerView.raw_between = counting  # type: ignore[method-assign]
    try:
        for i in range(60):
            controlled.ledger.append(_signed_policy(controlled, 700 + i))
    finally:
        LedgerView.raw_between = real  # type: ignore[method-assign]
    assert sum(reads[1:]) <= 60  # after the first read, one new entry per append


def test_a_forged_actor_written_past_the_guard_is_flagged_by_audit(controlled: World,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A rogue writer (guards bypassed) records a promotion in a deployer's name: audit flags it."""
    monkeypatch.setattr(events, "_GUARDS", [])
    payload, _ = ACTIONS["policy.published"](controlled)
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
        controlled.act("target", ACTIONS["model.deployed"](controlled)[0], "model:m@1")
    controlled.act("admin-person", RoleGranted(identity="target", role="deployer", reason="on call"),
                   "identity:target")
    with pytest.raises(InputError) as exc:  # now allowed; model.deployed's own check may still refuse
        controlled.act("target", ACTIONS["model.deployed"](controlled)[0], "model:m@1")
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
    import json
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
    (kek,) = (home / "keys").glob("subjects-*.kek")
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600
    assert "subjects-" not in CliRunner().invoke(root, ["doctor"]).output
    kek.chmod(0o640)
    out = CliRunner().invoke(root, ["doctor"])
    assert out.exit_code == 1 and "the subject key-encryption key: " in out.output and "mode 0640" in out.output
    kek.chmod(0o600)
    doc = json.loads(kek.read_text())  # a retired generation left behind by an unfinished erasure
    doc["keys"]["3"]["0"] = doc["keys"]["3"]["1"]
    kek.write_text(json.dumps(doc))
    assert "still holds 1 retired generation(s)" in CliRunner().invoke(root, ["doctor"]).output
    assert CliRunner().invoke(root, ["erase", "--finish"]).exit_code == 0  # opening the key table prunes it
    assert "retired" not in CliRunner().invoke(root, ["doctor"]).output


# -- the kinds people and services write (reviews, gates, incidents, labels, monitoring, reports) ---------

NEW_KINDS = sorted(WRITTEN_WHEN_ALLOWED)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_an_unsigned_entry_of_a_person_or_service_kind_is_refused_once_access_controlled(controlled: World,
                                                                                        kind: str) -> None:
    """e.g. a raw 'mlledger append' of a review in a validator's name: refused, nothing written, and told how."""
    payload, subject = ACTIONS[kind](controlled)
    entitled = f"{sorted(DOCUMENTED[kind])[0]}-person"
    size = controlled.ledger.head_size()
    with pytest.raises(InputError) as exc:
        controlled.ledger.append(Event(payload, actor=entitled, subject=subject))
    assert str(exc.value).startswith(f"{kind} refused: {kind} by {entitled} is not signed by its actor (act as a "
                                     "registered identity: --as KEYFILE or MLLEDGER_IDENTITY")
    assert controlled.ledger.head_size() == size


def test_person_and_service_kinds_written_past_the_guard_are_violations_at_their_seq(
        controlled: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """audit re-checks each at its seq: a violation, no longer a notice."""
    made = {}
    for kind in NEW_KINDS:
        payload, subject = ACTIONS[kind](controlled)
        monkeypatch.setattr(events, "_GUARDS", [])
        made[kind] = controlled.ledger.append(Event(payload, actor="someone", subject=subject)).seq
        monkeypatch.undo()
    found = {(f.seq, f.severity): f.message for f in controlled.findings()}
    for kind, seq in made.items():
        assert found[(seq, "violation")] == f"{kind} by someone: {kind} by someone is not signed by its actor"
    assert not [m for (_s, sev), m in found.items() if sev == "notice" and "after access control began" in m]


def test_before_access_control_unsigned_reviews_gates_and_labels_are_still_written(world: World) -> None:
    world.register("svc", "service")  # nothing is enforced yet; the unsigned entries are counted in one notice
    seq = _prediction(world)
    for payload in (backends.kinds.HumanReviewed(prediction_seq=seq, outcome="confirmed", reason="ok"), _gate(),
                    backends.kinds_loop.LabelReceived(prediction_seq=seq, label=1, source_sha256=SHA)):
        world.ledger.append(Event(payload, actor="anyone"))
    notices = [f.message for f in world.findings() if f.severity == "notice"]
    assert any(m.startswith("3 governance action(s) are not signed by their actor") for m in notices), notices


# -- reviews the serving API vouches for (policies._access step 4) ------------------------------------------


def _issue_review_token(w: World, identity: str) -> str:
    digest = hashlib.sha256(f"token-{identity}-{next(_counter)}".encode()).hexdigest()
    w.as_genesis(TokenIssued(token_sha256=digest, identity=identity, scopes=["review"],
                             expires_at="2099-01-01T00:00:00.000000Z"), f"identity:{identity}")
    return digest


def _vouched(w: World, reviewer: str, voucher: str, key: Ed25519PrivateKey | None = None) -> int:
    """What the server does: the token's identity is the actor, the server's identity signs as voucher."""
    payload = backends.kinds.HumanReviewed(prediction_seq=_prediction(w), outcome="overridden", label=0,
                                           reason="income misread", vouched_by=voucher)
    event = sign_event(Event(payload, actor=reviewer, subject="prediction:1"), actor=voucher,
                       key=key or w.keys[voucher], origin=ORIGIN, signed_at=format_ts(_now_us()))
    return w.ledger.append(event).seq


def test_a_review_the_server_vouches_for_keeps_the_token_holder_as_actor_and_audits_clean(controlled: World) -> None:
    _issue_review_token(controlled, "validator-person")
    seq = _vouched(controlled, "validator-person", "service-person")
    entry = controlled.ledger.get(seq)
    assert (entry.actor, entry.payload["vouched_by"]) == ("validator-person", "service-person")
    assert entry.payload["actor_signature"]["signature"]
    # (the fixture's decision names no real deployment: audit flags that, and nothing about the review)
    assert [f.message for f in controlled.findings() if f.severity == "violation" and f.seq == seq] == []


def test_a_vouched_review_without_a_live_review_token_is_refused(controlled: World) -> None:
    size = controlled.ledger.head_size()
    with pytest.raises(InputError, match="validator-person held no live token with the scope review at seq"):
        _vouched(controlled, "validator-person", "service-person")
    digest = _issue_review_token(controlled, "validator-person")
    controlled.as_genesis(policies._access_kinds.TokenRevoked(token_sha256=digest, reason="rotated"))
    with pytest.raises(InputError, match="may vouch only for a token's holder"):
        _vouched(controlled, "validator-person", "service-person")
    assert [e.kind for e in controlled.ledger.iter(start=size)].count("human.reviewed") == 0


def test_a_vouched_review_written_past_the_guard_without_a_token_is_a_violation_in_audit(
        controlled: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_GUARDS", [])
    seq = _vouched(controlled, "validator-person", "service-person")
    monkeypatch.undo()
    found = {(f.seq, f.severity): f.message for f in controlled.findings()}
    assert found[(seq, "violation")] == (
        f"human.reviewed by validator-person: validator-person held no live token with the scope review at seq "
        f"{seq}: service-person may vouch only for a token's holder")


def test_a_voucher_without_the_service_role_is_refused(controlled: World) -> None:
    _issue_review_token(controlled, "validator-person")
    with pytest.raises(InputError, match="deployer-person holds deployer; vouching for human.reviewed needs the "
                                         "role service"):
        _vouched(controlled, "validator-person", "deployer-person")


def test_a_vouched_review_by_a_token_holder_without_a_reviewer_role_is_refused(controlled: World) -> None:
    _issue_review_token(controlled, "target")  # an identity holding service only
    with pytest.raises(InputError, match="target holds service; human.reviewed needs the role model-risk or "
                                         "validator"):
        _vouched(controlled, "target", "service-person")


def test_a_vouched_review_signed_by_another_key_is_refused(controlled: World) -> None:
    _issue_review_token(controlled, "validator-person")
    with pytest.raises(InputError, match="the signature of service-person, vouching for validator-person, does "
                                         "not verify with its registered key"):
        _vouched(controlled, "validator-person", "service-person", key=controlled.keys["deployer-person"])


def test_a_review_cannot_be_vouched_for_by_its_own_actor(controlled: World) -> None:
    _issue_review_token(controlled, "validator-person")
    with pytest.raises(InputError, match="cannot be vouched for by validator-person"):
        _vouched(controlled, "validator-person", "validator-person")


def test_an_unsigned_server_review_says_the_server_must_run_as_a_service_identity(controlled: World) -> None:
    payload = backends.kinds.HumanReviewed(prediction_seq=_prediction(controlled), outcome="confirmed", reason="ok")
    with pytest.raises(InputError, match="the server vouches for a token's holder only when it runs as a registered "
                                         "service identity: mlledger --as KEYFILE serve"):
        controlled.ledger.append(Event(payload, actor="validator-person"))


# -- the closed loop runs as one identity holding the roles of all its steps ---------------------------------


def test_the_closed_loop_is_refused_up_front_without_an_identity_holding_every_step_role(controlled: World) -> None:
    from backends._loop import LOOP_KINDS
    from policies._access import require_roles_for

    with pytest.raises(InputError, match=r"the closed loop refused: this ledger is access-controlled \(since seq "
                                         r"\d+\); act as a registered identity with --as KEYFILE"):
        require_roles_for(controlled.ledger, LOOP_KINDS, "the closed loop")
    controlled.ledger.act_as("service-person", controlled.keys["service-person"])
    with pytest.raises(InputError) as exc:
        require_roles_for(controlled.ledger, LOOP_KINDS, "the closed loop")
    assert str(exc.value) == (
        "the closed loop refused: service-person holds service; it also needs the role data-steward "
        "(dataset.registered, dataset.validated); model-developer (model.trained, evidence.recorded); deployer, "
        "model-risk or validator (gate.evaluated); deployer (model.promoted, model.deployed, model.undeployed)")
    controlled.register("loop-bot", "service", "data-steward", "model-developer", "deployer")
    controlled.ledger.act_as("loop-bot", controlled.keys["loop-bot"])
    require_roles_for(controlled.ledger, LOOP_KINDS, "the closed loop")  # no error


# -- identity registrations: version 2 signatures cover the display name ------------------------------------


def test_a_registration_whose_display_name_was_changed_is_untrusted_and_refused(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from policies._governance import identities

    world.register("ann@example.com", "validator", display_name="Ann Example")
    world.register("eve@example.com", "validator", display_name="Eve", shown="Chief Risk Officer")
    with pytest.raises(InputError, match="must be over version 2 of the identity message"):  # no downgrade
        world.register("new-v1@example.com", "validator", display_name="CEO", version=1)
    with monkeypatch.context() as m:  # one written by an earlier release, before version 2: still valid
        m.setitem(events._CHECKS, "identity.registered", lambda *a: None)
        world.register("old@example.com", "validator", display_name="Old Style", version=1)
    with world.ledger.view() as view:
        trusted = identities(view, before=view.size)
    assert {"ann@example.com", "old@example.com"} <= set(trusted) and "eve@example.com" not in trusted
    world.as_genesis(AccessEnabled(reason="go live"))
    size = world.ledger.head_size()
    with pytest.raises(InputError, match="identity.registered refused"):
        world.register("mal@example.com", "validator", display_name="Mal", shown="The CEO")
    assert world.ledger.head_size() == size


def test_the_version_2_identity_message_is_canonical_json_of_every_field() -> None:
    from ledger.canonical import encode
    from policies._approvals import IDENTITY_DOMAIN_V2

    msg = identity_message("o", "n", ["b", "a"], "K", "s", display_name="Line\nbreak")
    assert msg == IDENTITY_DOMAIN_V2 + encode({"display_name": "Line\nbreak", "name": "n", "origin": "o",
                                               "public_key": "K", "roles": ["a", "b"], "signed_by": "s"})
    assert identity_message("o", "n", ["a"], "K", "s", display_name="x") != identity_message(
        "o", "n", ["a"], "K", "s", display_name="y")


def test_the_offline_audit_of_a_bundle_finds_what_the_local_audit_finds(controlled: World, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a bundle (no database store: the replay index and identities memo key on the view), with
    role events and a replay written past the guard."""
    from ledger.export import export_bundle
    from policies._cli_gov import _bundle_view

    controlled.act("admin-person", RoleGranted(identity="target", role="deployer", reason="on call"),
                   "identity:target")
    event = _signed_policy(controlled, 801)
    controlled.ledger.append(event)
    monkeypatch.setattr(events, "_GUARDS", [])
    controlled.ledger.append(event)  # a replay, written past the guard
    monkeypatch.undo()
    local = [(f.seq, f.severity, f.message) for f in controlled.findings()]
    assert any("already used" in m for _s, _v, m in local)
    controlled.ledger.close()
    with Ledger.open(str(tmp_path / "ledger"), signer=controlled.log) as led:
        led.checkpoint()
        export_bundle(led, tmp_path / "bundle.zip")
    (tmp_path / "log.vkey").write_text(controlled.log.verifier_key + "\n")
    result, view = _bundle_view(tmp_path / "bundle.zip", (tmp_path / "log.vkey",))
    assert result.ok
    assert [(f.seq, f.severity, f.message) for f in audit(view)] == local
    controlled.ledger = Ledger.open(str(tmp_path / "ledger"))  # for the fixture's close


def test_access_control_turned_on_inside_a_batch_governs_the_rest_of_that_batch(world: World) -> None:
    """The guard reads 'is access control on' once per batch; an access.enabled in the batch counts at once."""
    world.register("mr", "model-risk")
    enable = sign_event(Event(AccessEnabled(reason="go live"), actor=GENESIS_ADMIN), actor=GENESIS_ADMIN,
                        key=world.log.private_key, origin=ORIGIN, signed_at=format_ts(_now_us()))
    size = world.ledger.head_size()
    with pytest.raises(InputError, match="policy.published refused: .*is not signed by its actor"):
        world.ledger.append_many([Event(_policy(901), actor="mr"), enable, Event(_policy(902), actor="mr")])
    assert world.ledger.head_size() == size
    world.ledger.append_many([Event(_policy(903), actor="mr"), enable])  # unsigned before it: allowed
    assert world.ledger.head_size() == size + 2
