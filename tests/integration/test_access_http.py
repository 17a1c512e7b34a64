"""Access control over HTTP and on the CLI, against a real uvicorn server (issue 12).

401 for a missing, expired or revoked token, 403 for the wrong scope, 200 for the right one with
the token's identity as the entry's actor; refusals are counted in access.denied; reads of
sealed inputs and exports are logged; and no secret appears in any output or log. The deployed
world comes from the ``template`` and ``world`` fixtures of tests/integration/conftest.py.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import backends.kinds  # noqa: F401
import policies.kinds  # noqa: F401
from ledger.api import Ledger
from tests.integration.serving_world import run, server

pytestmark = pytest.mark.slow

RECORD = {"income": 52.5, "age": 41, "debt": 7.25}
PASSPHRASE = "correct horse battery staple 4711"
ADMIN = ".mlledger/keys/log.pem"  # the genesis admin: the ledger key's owner


def entries(kind: str) -> list[dict[str, object]]:
    with Ledger.open(".mlledger") as led:
        return [e.data for e in led.iter(kind=[kind])]


def issue(outputs: list[str], name: str, scope: str, expires: str = "1d") -> str:
    out = run("--as", ADMIN, "token", "issue", "--identity", name, "--scope", scope, "--expires", expires)
    token = out.strip().splitlines()[-1]
    assert token.startswith("mlt_") and "only this once" in out
    outputs.append(out.replace(token, "<the one-time print>"))
    return token


def test_http_tokens_scopes_actor_denied_counts_and_no_secret_in_any_output(
        world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLEDGER_KEY_PASSPHRASE", PASSPHRASE)
    outputs: list[str] = []
    for name, role in (("svc", "service"), ("rev", "validator"), ("aud", "auditor")):
        outputs.append(run("identity", "keygen", name, "-o", "ids"))
        outputs.append(run("--as", ADMIN, "identity", "register", name, "--role", role,
                           "--public-key", f"ids/{name}.pub"))
    predict = issue(outputs, "svc", "predict")
    review = issue(outputs, "rev", "review")
    expired = issue(outputs, "svc", "predict", "1s")
    with pytest.raises(AssertionError):  # a scope the identity's roles do not cover is refused at issue
        run("--as", ADMIN, "token", "issue", "--identity", "svc", "--scope", "review", code=0)
    time.sleep(1.1)

    with server("--store-inputs") as (url, _proc):
        post = lambda path, body, tok=None: httpx.post(  # noqa: E731
            url + path, json=body, timeout=30, headers={"Authorization": f"Bearer {tok}"} if tok else {})
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200  # open
        missing = post("/v1/predict", {"record": RECORD})
        assert (missing.status_code, missing.json()) == (401, {"detail": "unauthorized"})
        assert missing.headers["www-authenticate"] == "Bearer"
        assert post("/v1/predict", {"record": RECORD}, "mlt_not-a-token").status_code == 401
        late = post("/v1/predict", {"record": RECORD}, expired)
        assert (late.status_code, late.json()) == (401, {"detail": "unauthorized"})  # no detail that leaks
        wrong = httpx.get(url + "/v1/receipts/0/proof", headers={"Authorization": f"Bearer {predict}"}, timeout=10)
        assert (wrong.status_code, wrong.json()) == (403, {"detail": "forbidden"})
        size = _size()
        ok = post("/v1/predict", {"record": RECORD, "subject_id": "applicant-7"}, predict)
        assert ok.status_code == 200, ok.text
        seq = ok.json()["predictions"][0]["receipt"]["seq"]
        made = _entry(seq)
        assert (made["kind"], made["actor"]) == ("prediction.made", "svc")
        assert post("/v1/reviews", {"prediction_seq": seq, "outcome": "confirmed", "reason": "ok"},
                    predict).status_code == 403
        reviewed = post("/v1/reviews", {"prediction_seq": seq, "outcome": "confirmed", "reason": "ok"}, review)
        assert reviewed.status_code == 200, reviewed.text
        assert _entry(reviewed.json()["seq"])["actor"] == "rev"
        outputs.append(run("--as", ADMIN, "token", "revoke", _token_seq(review), "--reason", "rotated"))
        time.sleep(1.5)  # the server re-reads the token table as the ledger grows
        assert post("/v1/reviews", {"prediction_seq": seq, "outcome": "confirmed", "reason": "again"},
                    review).status_code == 401
        outputs.append(run("--as", ADMIN, "role", "revoke", "svc", "service", "--reason", "decommissioned"))
        time.sleep(1.5)  # a revoked role takes the scopes it gave from every token of the identity
        assert post("/v1/predict", {"record": RECORD}, predict).status_code == 403
        with Ledger.open(".mlledger") as led:  # refusals wrote nothing (but a count when a minute ends)
            written = [e.kind for e in led.iter(start=size) if e.kind != "access.denied"]
        assert written == ["prediction.made", "human.reviewed", "token.revoked", "role.revoked"]
    outputs.extend(p.read_text() for p in Path(".").glob("serve-*.log"))

    denied = entries("access.denied")
    counts: dict[str, int] = {}
    for e in denied:
        for reason, n in e["payload"]["counts"].items():  # type: ignore[index]
            counts[reason] = counts.get(reason, 0) + n
    assert counts == {"missing": 1, "invalid": 1, "expired": 1, "scope": 3, "revoked": 1}

    # Reads of sealed inputs are logged with who read what.
    outputs.append(run("--as", "ids/aud.pem", "inputs", str(seq)))
    read = entries("access.read")[-1]
    payload = dict(read["payload"])  # type: ignore[call-overload]
    assert payload.pop("actor_signature")["signature"]  # signed by the reader
    assert (read["actor"], payload) == ("aud", {"what": "inputs", "target": f"prediction:{seq}", "detail": None})
    # Once access-controlled, a service identity may not read inputs; an auditor may export.
    outputs.append(run("--as", ADMIN, "access", "enable", "--reason", "go live"))
    refused = run("--as", "ids/svc.pem", "inputs", str(seq), code=2)
    assert "needs the role auditor, dpo, model-risk or validator" in refused
    outputs.append(refused)
    outputs.append(run("--as", "ids/aud.pem", "export", "-o", "bundle.zip"))
    assert entries("access.read")[-1]["payload"]["what"] == "bundle"  # type: ignore[index]
    outputs.append(run("audit"))

    _no_secret_in(outputs, [predict, review, expired])


def _size() -> int:
    with Ledger.open(".mlledger") as led:
        return led.head_size()


def _entry(seq: int) -> dict[str, object]:
    with Ledger.open(".mlledger") as led:
        return led.get(seq).data


def _token_seq(token: str) -> str:
    import hashlib

    digest = hashlib.sha256(token.encode()).hexdigest()
    return next(str(e["seq"]) for e in entries("token.issued") if e["payload"]["token_sha256"] == digest)  # type: ignore[index]


def _no_secret_in(outputs: list[str], tokens: list[str]) -> None:
    """No token (beyond its one-time print), passphrase, private key or subject key in any output."""
    text = "\n".join(outputs)
    secrets = [*tokens, PASSPHRASE]
    for pem in [*Path("ids").glob("*.pem"), Path(ADMIN), *Path("keys").glob("*.pem")]:
        body = [line for line in pem.read_text().splitlines() if line and not line.startswith("-----")]
        secrets.extend(body)
    db = sqlite3.connect(".mlledger/ledger.db") if Path(".mlledger/ledger.db").exists() else None
    if db is not None:
        cols = [r[1] for r in db.execute("PRAGMA table_info(subject_keys)")]
        if "secret" in cols:
            for (secret,) in db.execute("SELECT secret FROM subject_keys WHERE secret IS NOT NULL"):
                raw = bytes(secret)
                secrets.extend([raw.hex(), base64.b64encode(raw).decode()])
    for kek in Path(".mlledger/keys").glob("subjects-*.kek"):  # the subject key-encryption keys and pepper
        doc = json.loads(kek.read_text())
        secrets.extend([doc["pepper"], *(k for gens in doc["keys"].values() for k in gens.values())])
    assert len(secrets) > 10
    leaked = [s[:8] + "..." for s in secrets if s in text]
    assert not leaked, f"secrets in the output: {leaked}"
    assert json.dumps(text)  # the outputs were captured


def test_cli_actions_as_identities_in_an_access_controlled_ledger(world: Path) -> None:
    """train, approve, promote and deploy each signed by an entitled identity; a service identity is
    refused naming the role; the audit is clean."""
    from tests.integration.serving_world import SPEC, head_size

    for name, role in (("dana", "deployer"), ("dev", "model-developer"), ("svc", "service")):
        run("identity", "keygen", name, "-o", "ids")
        run("--as", ADMIN, "identity", "register", name, "--role", role, "--public-key", f"ids/{name}.pub")
    run("--as", ADMIN, "access", "enable", "--reason", "go live")
    Path("spec.yaml").write_text(SPEC % 5)
    ref = run("--as", "ids/dev.pem", "train", "spec.yaml").split()[1]
    size = head_size()
    unsigned = run("gate", "--model", ref, "--stage", "production", code=2)  # no identity: the gate is refused
    assert "gate.evaluated refused: gate.evaluated by" in unsigned and "is not signed by its actor" in unsigned
    assert head_size() == size
    run("--as", "ids/dana.pem", "gate", "--model", ref, "--stage", "production", code=3)
    run("approve", "--decision", str(head_size() - 1), "--key", "keys/risk.pem", "--as", "risk@example.com")
    size = head_size()
    refused = run("--as", "ids/svc.pem", "promote", ref, "--to", "production", code=2)
    assert "model.promoted refused: svc holds service; model.promoted needs the role deployer" in refused
    assert head_size() == size
    assert "forged" not in run("promote", ref, "--to", "production", code=2)  # no identity: refused too
    run("--as", "ids/dana.pem", "promote", ref, "--to", "production")
    actors = {kind: entries(kind)[-1]["actor"] for kind in ("model.trained", "gate.evaluated", "model.promoted",
                                                            "model.deployed")}
    assert actors == {"model.trained": "dev", "gate.evaluated": "dana", "model.promoted": "dana",
                      "model.deployed": "dana"}
    assert all("actor_signature" in entries(k)[-1]["payload"] for k in actors)  # type: ignore[operator]
    audit = run("audit")
    assert "audit: 0 violation(s)" in audit
    assert "after access control began" not in audit  # every kind people write is a signed action now
    refused = run("--as", "ids/svc.pem", "review", "1", "--outcome", "confirmed", "--reason", "ok", code=2)
    assert "human.reviewed refused: svc holds service; human.reviewed needs the role model-risk or validator" in refused


def test_doctor_reports_unsafe_and_unencrypted_keys_and_key_files_readable_by_others_are_refused(
        world: Path) -> None:
    run("identity", "keygen", "eve", "-o", "ids")
    Path("ids/eve.pem").chmod(0o644)
    out = run("--as", "ids/eve.pem", "doctor", code=1)
    assert "ids/eve.pem is readable or writable by group or others (mode 0644)" in out
    assert ".mlledger/keys/log.pem is not encrypted" in out
    assert "the ledger is not access-controlled" in out
    refused = run("--as", "ids/eve.pem", "access", "status", code=2)
    assert "refusing to use it: run 'chmod 600 ids/eve.pem'" in refused


def test_the_server_signs_the_deployment_it_follows_as_its_identity(world: Path) -> None:
    """In an access-controlled ledger, 'mlledger --as DEPLOYER.pem serve' deploys a new promotion
    signed by that identity (the follower's model.deployed)."""
    from tests.integration.serving_world import SPEC, head_size

    for name, role in (("dana", "deployer"), ("dev", "model-developer")):
        run("identity", "keygen", name, "-o", "ids")
        run("--as", ADMIN, "identity", "register", name, "--role", role, "--public-key", f"ids/{name}.pub")
    run("--as", ADMIN, "access", "enable", "--reason", "go live")
    with server(env={"MLLEDGER_IDENTITY": "ids/dana.pem"}):
        Path("spec.yaml").write_text(SPEC % 6)
        ref = run("--as", "ids/dev.pem", "train", "spec.yaml").split()[1]
        run("--as", "ids/dana.pem", "gate", "--model", ref, "--stage", "production", code=3)
        run("approve", "--decision", str(head_size() - 1), "--key", "keys/risk.pem", "--as", "risk@example.com")
        run("--as", "ids/dana.pem", "promote", ref, "--to", "production", "--no-deploy")
        deadline = time.monotonic() + 30
        while not [e for e in entries("model.deployed") if e["payload"]["model"] == ref]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the server did not follow the promotion"
            time.sleep(0.2)
    deployed = next(e for e in entries("model.deployed") if e["payload"]["model"] == ref)  # type: ignore[index]
    assert deployed["actor"] == "dana" and "actor_signature" in deployed["payload"]  # type: ignore[operator]
    assert "audit: 0 violation(s)" in run("audit")


def test_serving_without_authentication_is_refused_off_loopback_and_on_an_access_controlled_ledger(
        world: Path) -> None:
    from tests.integration.serving_world import cli_command

    def serve(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_command("serve", "--model", "credit", "--port", "1", "--auth", "unsafe-off", *extra),
                              capture_output=True, text=True, timeout=120)

    off_loopback = serve("--host", "0.0.0.0")
    assert off_loopback.returncode == 2 and "only allowed on loopback" in off_loopback.stderr
    run("--as", ADMIN, "access", "enable", "--reason", "go live")
    controlled = serve()
    assert controlled.returncode == 2 and "this ledger is access-controlled" in controlled.stderr


def test_the_server_vouches_for_reviews_by_token_holders_on_an_access_controlled_ledger(world: Path) -> None:
    """POST /v1/reviews keeps the token's identity as actor and is signed by the server's service identity
    (vouched_by); a server without an identity cannot vouch, and the review is refused with why."""
    outputs: list[str] = []
    for name, role in (("svc", "service"), ("rev", "validator")):
        run("identity", "keygen", name, "-o", "ids")
        run("--as", ADMIN, "identity", "register", name, "--role", role, "--public-key", f"ids/{name}.pub")
    predict, review = issue(outputs, "svc", "predict"), issue(outputs, "rev", "review")
    run("--as", ADMIN, "access", "enable", "--reason", "go live")
    body = lambda seq: {"prediction_seq": seq, "outcome": "confirmed", "reason": "checked"}  # noqa: E731
    auth = lambda tok: {"Authorization": f"Bearer {tok}"}  # noqa: E731

    with server() as (url, _proc):  # no identity: it cannot vouch
        ok = httpx.post(url + "/v1/predict", json={"record": RECORD}, headers=auth(predict), timeout=30)
        assert ok.status_code == 200, ok.text
        seq = ok.json()["predictions"][0]["receipt"]["seq"]
        size = _size()
        refused = httpx.post(url + "/v1/reviews", json=body(seq), headers=auth(review), timeout=30)
        assert refused.status_code == 422
        assert "human.reviewed by rev is not signed by its actor" in refused.json()["detail"]
        assert "mlledger --as KEYFILE serve" in refused.json()["detail"]
        assert _size() == size
        port = url.rsplit(":", 1)[1]
        assert "access-controlled and the server runs without an identity" in Path(f"serve-{port}.log").read_text()
    with server(env={"MLLEDGER_IDENTITY": "ids/svc.pem"}) as (url, _proc):
        port = url.rsplit(":", 1)[1]
        assert "runs without an identity" not in Path(f"serve-{port}.log").read_text()
        reviewed = httpx.post(url + "/v1/reviews", json=body(seq), headers=auth(review), timeout=30)
        assert reviewed.status_code == 200, reviewed.text
    made = _entry(reviewed.json()["seq"])
    payload = dict(made["payload"])  # type: ignore[call-overload]
    assert (made["kind"], made["actor"], payload["vouched_by"]) == ("human.reviewed", "rev", "svc")
    assert payload["actor_signature"]["signature"]
    assert "audit: 0 violation(s)" in run("audit")
    _no_secret_in(outputs, [predict, review])


def test_incidents_and_reports_are_signed_by_entitled_identities_on_an_access_controlled_ledger(
        world: Path) -> None:
    """incident open/report/close and report generation through the CLI with --as: the right role
    signs, the wrong role and no identity are refused naming what is missing and write nothing."""
    from tests.integration.serving_world import head_size

    for name, role in (("mira", "model-risk"), ("aud", "auditor"), ("svc", "service")):
        run("identity", "keygen", name, "-o", "ids")
        run("--as", ADMIN, "identity", "register", name, "--role", role, "--public-key", f"ids/{name}.pub")
    run("--as", ADMIN, "access", "enable", "--reason", "go live")
    size = head_size()
    assert "is not signed by its actor" in run("incident", "open", "--model", "credit", "--severity", "serious",
                                               "--summary", "wrongful denials", code=2)
    assert "is not signed by its actor" in run("report", "ledger", "-o", "cert.json", "--format", "json", code=2)
    assert head_size() == size and not Path("cert.json").exists()
    run("--as", "ids/mira.pem", "incident", "open", "--model", "credit", "--severity", "serious",
        "--summary", "wrongful denials")
    (opened,) = entries("incident.opened")
    seq = head_size() - 1
    refused = run("--as", "ids/svc.pem", "incident", "report", str(seq), "--authority", "MSA", "--reference", "R-1",
                  code=2)
    assert "incident.reported refused: svc holds service" in refused and "deployer or model-risk" in refused
    run("--as", "ids/mira.pem", "incident", "report", str(seq), "--authority", "MSA", "--reference", "R-1")
    run("--as", "ids/mira.pem", "incident", "close", str(seq), "--resolution", "threshold corrected")
    refused = run("--as", "ids/mira.pem", "report", "ledger", "-o", "cert.json", "--format", "json", code=2)
    assert "access.read refused: mira holds model-risk; access.read needs the role auditor" in refused
    run("--as", "ids/aud.pem", "report", "ledger", "-o", "cert.json", "--format", "json")
    assert Path("cert.json").exists()
    signed = {k: entries(k)[-1] for k in ("incident.opened", "incident.reported", "incident.closed",
                                          "report.generated")}
    assert {k: e["actor"] for k, e in signed.items()} == {
        "incident.opened": "mira", "incident.reported": "mira", "incident.closed": "mira", "report.generated": "aud"}
    assert opened["actor"] == "mira"
    assert all("actor_signature" in e["payload"] for e in signed.values())  # type: ignore[operator]
    assert "audit: 0 violation(s)" in run("audit")
