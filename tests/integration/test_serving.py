"""Real-time serving against a real uvicorn server on loopback, and human review.

Receipts match their entries and prove offline; bad requests write nothing; the server
follows a promotion and refuses an undeployed version; a failed ledger write returns 503
and no decision; a kill -9 during load loses no answered decision.
"""

from __future__ import annotations

import hmac
import json
import sqlite3
import subprocess
import threading
from hashlib import sha256
from pathlib import Path

import httpx
import pytest

import backends.kinds  # noqa: F401
from ledger import merkle
from ledger.api import Ledger
from ledger.canonical import encode
from ledger.note import open_checkpoint
from ledger.privacy import SubjectKeys
from ledger.tlog_proof import parse_proof
from tests.integration.serving_world import (
    cli_command,
    head_size,
    run,
    server,
    train_and_promote,
)

pytestmark = pytest.mark.slow

RECORD = {"income": 52.5, "age": 41, "debt": 7.25}


def entry(seq: int) -> tuple[bytes, dict[str, object]]:
    with Ledger.open(".mlledger") as led:
        e = led.get(seq)
        return e.raw, e.payload


def test_predictions_carry_receipts_that_match_their_entries(world: Path) -> None:
    with server() as (url, _):
        r = httpx.post(f"{url}/v1/predict", json={"record": RECORD, "subject_id": "cust-1", "request_id": "req-1"})
        assert r.status_code == 200, r.text
        body = r.json()
        batch = httpx.post(f"{url}/v1/predict", json={"records": [RECORD, {**RECORD, "age": 70}]}).json()
    (p,) = body["predictions"]
    assert body["model"] == "credit@1" and body["stage"] == "production"
    raw, payload = entry(p["receipt"]["seq"])
    assert merkle.leaf_hash(raw).hex() == p["receipt"]["leaf_hash"]
    assert payload["model"] == "credit@1" and payload["label"] == p["label"]
    assert payload["score"] == round(p["score"], 2) != p["score"]  # the ledger keeps a coarse score (privacy)
    assert payload["request_id"] is None and payload["automated_decision"] is True  # never in the clear
    assert b"req-1" not in raw
    assert payload["key_id"] == p["key_id"] and str(payload["key_id"]).startswith("sk-")
    # the commitment is HMAC under the subject's key, which only the erasable table holds
    with Ledger.open(".mlledger") as led:  # the secret is wrapped under the KEK file in .mlledger/keys
        key = SubjectKeys(led, ".mlledger").by_id(str(payload["key_id"]))
    assert key is not None
    assert hmac.new(key.commit_key, encode(RECORD), sha256).hexdigest() == payload["input_commitment"]
    assert payload["request_ref"] == hmac.new(key.commit_key, b"mlledger/v1 request-id\x00req-1", sha256).hexdigest()
    seqs = [x["receipt"]["seq"] for x in batch["predictions"]]
    assert seqs == [seqs[0], seqs[0] + 1]
    assert all(str(entry(s)[1]["key_id"]).startswith("dk-") for s in seqs)  # no subject: deployment key


def test_a_receipt_proof_verifies_offline(world: Path) -> None:
    with server() as (url, _):
        p = httpx.post(f"{url}/v1/predict", json={"record": RECORD}).json()["predictions"][0]
        seq = p["receipt"]["seq"]
        proof = httpx.get(f"{url}/v1/receipts/{seq}/proof")
        stored = httpx.get(f"{url}/v1/receipts/{seq}").content
        assert httpx.get(f"{url}/v1/receipts/999999/proof").status_code == 404
        assert httpx.get(f"{url}/v1/receipts/1").status_code == 404  # a dataset registration: not a receipt
    assert proof.status_code == 200
    Path("r.proof").write_bytes(proof.content)
    Path("r.entry").write_bytes(stored)
    assert "ok: entry" in run("verify-proof", "r.proof", "--entry", "r.entry", "--trust", ".mlledger/keys/log.vkey")
    from ledger import keys

    index, hashes, note = parse_proof(proof.content)
    cp = open_checkpoint(note, keys.load_verifier(Path(".mlledger/keys/log.vkey")))
    merkle.verify_inclusion(merkle.leaf_hash(stored), index, cp.size, hashes, cp.root)
    Path("r.entry").write_bytes(stored.replace(b'"label":', b'"label": '))
    run("verify-proof", "r.proof", "--entry", "r.entry", "--trust", ".mlledger/keys/log.vkey", code=1)


BAD_REQUESTS = [
    ({"record": {**RECORD, "income": "high"}}, 422, "records[0].income: expected a number"),
    ({"record": {"income": 1.0, "age": 2}}, 422, "records[0].debt: required"),
    ({"record": {**RECORD, "zip": "10001"}}, 422, "records[0].zip: not an input"),
    ({"records": [RECORD, {**RECORD, "age": None}]}, 422, "records[1].age: expected a number"),
    ({"record": RECORD, "records": [RECORD]}, 422, "exactly one"),
    ({"record": RECORD, "colour": "red"}, 422, "colour"),
    ({"records": [RECORD] * 1001}, 413, "at most 1000"),
]


def test_bad_requests_write_nothing(world: Path) -> None:
    before = head_size()
    with server() as (url, _):
        for body, status, says in BAD_REQUESTS:
            r = httpx.post(f"{url}/v1/predict", json=body)
            assert r.status_code == status and says in r.text, (body, r.text)
    assert head_size() == before


def test_nan_and_oversized_bodies_are_refused(world: Path) -> None:
    before = head_size()
    with server("--max-body", "4096") as (url, _):
        nan = httpx.post(f"{url}/v1/predict", content=b'{"record": {"income": NaN, "age": 1, "debt": 2}}',
                         headers={"content-type": "application/json"})
        big = httpx.post(f"{url}/v1/predict", content=b'{"records": [' + b'{"income": 1},' * 2000 + b"{}]}",
                         headers={"content-type": "application/json"})

        def chunks():  # no Content-Length: counted while streaming
            yield b'{"records": ['
            for _ in range(500):
                yield b'{"income": 1, "age": 2, "debt": 3},'
            yield b"{}]}"

        streamed = httpx.post(f"{url}/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert nan.status_code == 422 and "finite" in nan.text
    assert big.status_code == 413 and streamed.status_code == 413
    assert head_size() == before


def test_the_server_follows_a_promotion_and_records_the_switch(world: Path) -> None:
    with server() as (url, _):
        assert httpx.get(f"{url}/v1/model").json()["model"] == "credit@1"
        ref = train_and_promote(2, deploy=False)  # the server itself deploys the new holder of the stage
        import time

        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/v1/model").json()["model"] != ref and time.monotonic() < deadline:
            time.sleep(0.2)
        p = httpx.post(f"{url}/v1/predict", json={"record": RECORD}).json()
    assert p["model"] == ref == "credit@2"
    _raw, payload = entry(p["predictions"][0]["receipt"]["seq"])
    assert payload["model"] == "credit@2" and payload["deployed_seq"] == p["deployed_seq"]
    with Ledger.open(".mlledger") as led:
        deployed = [e for e in led.iter(kind="model.deployed")]
        undeployed = [e for e in led.iter(kind="model.undeployed")]
    assert [e.payload["model"] for e in deployed] == ["credit@1", "credit@2"]
    assert deployed[-1].actor == "service:mlledger-serve"
    assert [(e.payload["model"], e.payload["replaced_by"], e.payload["deployed_seq"]) for e in undeployed] == [
        ("credit@1", "credit@2", deployed[0].seq)]


def test_the_server_refuses_to_start_for_a_version_that_is_not_deployed(world: Path) -> None:
    for model, says in (("credit@2", "credit@2 is not deployed"), ("other", "other has no deployment")):
        proc = subprocess.run(cli_command("serve", "--model", model, "--stage", "production", "--port", "1"),
                              capture_output=True, timeout=120)
        assert proc.returncode == 2 and says in proc.stderr.decode(), proc.stderr


def test_a_failed_ledger_write_returns_503_and_no_decision(world: Path) -> None:
    with server() as (url, _):
        assert httpx.post(f"{url}/v1/predict", json={"record": RECORD}).status_code == 200
        before = head_size()
        with sqlite3.connect(".mlledger/ledger.db") as db:  # the database refuses every new entry
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON entries BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        r = httpx.post(f"{url}/v1/predict", json={"record": RECORD})
        assert r.status_code == 503 and "label" not in r.text and "score" not in r.text
        assert head_size() == before
        with sqlite3.connect(".mlledger/ledger.db") as db:
            db.execute("DROP TRIGGER refuse")
        assert httpx.post(f"{url}/v1/predict", json={"record": RECORD}).status_code == 200


def test_kill_9_during_load_loses_no_answered_decision(world: Path) -> None:
    answered: list[tuple[int, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(url: str) -> None:
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                try:
                    r = c.post(f"{url}/v1/predict", json={"records": [RECORD, RECORD]})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        answered.extend((p["receipt"]["seq"], p["receipt"]["leaf_hash"])
                                        for p in r.json()["predictions"])

    with server() as (url, proc):
        threads = [threading.Thread(target=client, args=(url,)) for _ in range(8)]
        for t in threads:
            t.start()
        import time

        deadline = time.monotonic() + 30
        while len(answered) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()  # SIGKILL, mid-load
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
    assert len(answered) >= 300
    with Ledger.open(".mlledger") as led:
        assert led.verify().ok
        for seq, leaf in answered:
            assert led.get(seq).leaf_hash.hex() == leaf


def test_reviews_over_http_and_the_cli(world: Path) -> None:
    with server() as (url, _):
        seq = httpx.post(f"{url}/v1/predict", json={"record": RECORD}).json()["predictions"][0]["receipt"]["seq"]
        ok = httpx.post(f"{url}/v1/reviews", json={"prediction_seq": seq, "outcome": "overridden", "label": 1,
                                                    "reason": "manual underwriting"})
        not_a_prediction = httpx.post(f"{url}/v1/reviews", json={"prediction_seq": 0, "outcome": "confirmed",
                                                                  "reason": "x"})
        no_label = httpx.post(f"{url}/v1/reviews", json={"prediction_seq": seq, "outcome": "overridden",
                                                          "reason": "x"})
        banana = httpx.post(f"{url}/v1/reviews", json={"prediction_seq": seq, "outcome": "overridden",
                                                        "label": "banana", "reason": "x"})
    assert ok.status_code == 200
    _raw, payload = entry(ok.json()["seq"])
    assert payload == {"prediction_seq": seq, "outcome": "overridden", "label": 1, "reason": "manual underwriting"}
    assert not_a_prediction.status_code == 422 and "not a prediction.made" in not_a_prediction.text
    assert no_label.status_code == 422 and "new label" in no_label.text
    assert banana.status_code == 422 and "is not one of the model's labels [0, 1]" in banana.text
    out = json.loads(run("review", str(seq), "--outcome", "confirmed", "--reason", "second look", "--format", "json"))
    assert entry(out["seq"])[1]["outcome"] == "confirmed"
    assert "not a prediction.made" in run("review", "1", "--outcome", "confirmed", "--reason", "x", code=2)


def test_openapi_health_and_model_endpoints(world: Path) -> None:
    with server() as (url, _):
        spec = httpx.get(f"{url}/openapi.json").json()
        health = httpx.get(f"{url}/healthz").json()
        model = httpx.get(f"{url}/v1/model").json()
    assert {"/v1/predict", "/v1/reviews", "/v1/receipts/{seq}/proof", "/healthz", "/v1/model"} <= set(spec["paths"])
    assert health["status"] == "ok" and health["model"] == "credit@1"
    assert [i["name"] for i in model["inputs"]] == ["income", "age", "debt"]
    assert model["artifact_sha256"] == entry(model["deployed_seq"])[1]["artifact_sha256"]


def test_a_pinned_server_stops_when_its_version_is_replaced(world: Path) -> None:
    with server(model="credit@1") as (url, _):
        assert httpx.post(f"{url}/v1/predict", json={"record": RECORD}).status_code == 200
        train_and_promote(2)  # promote deploys credit@2 through the CLI
        import time

        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/healthz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        before = head_size()
        health = httpx.get(f"{url}/healthz")
        refused = httpx.post(f"{url}/v1/predict", json={"record": RECORD})
    assert health.status_code == 503 and "no longer deployed" in health.text
    assert refused.status_code == 409 and "pinned" in refused.text
    assert head_size() == before


def test_proof_requests_sign_at_most_one_checkpoint_per_second(world: Path) -> None:
    import math
    import time

    with Ledger.open(".mlledger") as led:
        before = len(led.checkpoints())
    with server() as (url, _):
        codes = []
        start = time.monotonic()
        for _ in range(10):
            seq = httpx.post(f"{url}/v1/predict", json={"record": RECORD}).json()["predictions"][0]["receipt"]["seq"]
            r = httpx.get(f"{url}/v1/receipts/{seq}/proof")
            codes.append(r.status_code)
            assert r.status_code == 200 or int(r.headers["retry-after"]) >= 1
        elapsed = time.monotonic() - start
    with Ledger.open(".mlledger") as led:
        signed = len(led.checkpoints()) - before
    assert codes[0] == 200 and 404 in codes  # later ones wait for the next checkpoint (Retry-After)
    assert 1 <= signed <= math.ceil(elapsed) + 1  # at most one a second (plus the one on shutdown)


def test_a_failing_key_table_is_503_and_the_log_names_no_subject(world: Path) -> None:
    with server() as (url, _):
        with sqlite3.connect(".mlledger/ledger.db") as db:
            db.execute("CREATE TRIGGER refuse_keys BEFORE INSERT ON subject_keys "
                       "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        before = head_size()
        one = httpx.post(f"{url}/v1/predict", json={"record": RECORD, "subject_id": "bob.smith@example.com"})
        two = httpx.post(f"{url}/v1/predict", json={"records": [RECORD, RECORD],
                                                     "subject_ids": ["carol@example.com", "dave@example.com"]})
    assert (one.status_code, two.status_code) == (503, 503)
    assert "example.com" not in one.text + two.text and head_size() == before
    log = "".join(p.read_text() for p in Path(".").glob("serve-*.log"))
    assert "example.com" not in log and "parameters" not in log


def test_two_workers_share_the_subject_keys_and_an_erasure_while_they_serve(world: Path) -> None:
    """Two uvicorn worker processes create the KEK file and subject keys concurrently; an erasure (a bucket
    rotation) while they serve loses no live key; every answered decision is on the ledger; audit is clean."""
    answered: list[tuple[int, str, str]] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(n: int, url: str) -> None:
        with httpx.Client(timeout=30) as c:
            for i in range(40):
                subject = f"cust-{(n * 40 + i) % 60}"  # subjects shared between the clients
                r = c.post(f"{url}/v1/predict", json={"record": RECORD, "subject_id": subject})
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                p = r.json()["predictions"][0]
                with lock:
                    answered.append((p["receipt"]["seq"], p["key_id"], subject))

    with server("--workers", "2") as (url, _proc):
        threads = [threading.Thread(target=client, args=(n, url)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads[:2]:
            t.join()
        run("erase", "--subject", "cust-7", "--reason", "data subject request")  # while the others run
        for t in threads[2:]:
            t.join()
    assert not errors and len(answered) == 160
    keys = {}
    for _seq, key_id, subject in answered:
        keys.setdefault(subject, set()).add(key_id)
    assert all(len(k) == 1 for s, k in keys.items() if s != "cust-7")  # one key per subject, across workers
    assert len(list(Path(".mlledger/keys").glob("subjects-*.kek"))) == 1
    with Ledger.open(".mlledger") as led:
        assert led.verify().ok
        sk = SubjectKeys(led, ".mlledger")
        live = {s: next(iter(k)) for s, k in keys.items() if s != "cust-7"}
        assert all(sk.status(key_id) == "live" and sk.by_id(key_id) is not None for key_id in live.values())
        for seq, key_id, _subject in answered:
            assert led.get(seq).payload["key_id"] == key_id
    assert "0 violation(s)" in run("audit")
