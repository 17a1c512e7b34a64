"""The mlflow backend against a real ``mlflow server`` (SQLite registry, local artifacts).

The server starts once per module on a free port, is waited for (bounded) and is stopped by
killing its process group. Each test uses its own model name, so tests share the registry.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner

pytest.importorskip("mlflow", reason="the mlflow backend tests need the mlflow extra: pip install 'mlledger[mlflow]'")

from backends import _registry
from backends._cli import backends as backends_group
from backends._protocol import ArtifactRef
from backends.mlflow import TAG_ORIGIN, TAG_SEQ, TAG_SHA, MlflowBackend
from backends.testing import BackendConformance
from ledger.api import Ledger
from ledger.artifacts import ArtifactStore
from ledger.cli import root
from ledger.errors import IntegrityError
from tests.integration.test_train_cli import SPEC, STAGING, entries, run, world  # noqa: F401

pytestmark = pytest.mark.slow

_START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server with a Model Registry; stopped by PID (its process group)."""
    root_dir = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root_dir / "server.log").open("wb")
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{root_dir / 'mlflow.db'}",
           "--artifacts-destination", str(root_dir / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _answers(url):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}: "
                            f"{(root_dir / 'server.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer at {url} within {_START_TIMEOUT_S:.0f}s")
            time.sleep(0.25)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry knows the mlflow entry point (as pyproject's ``mlledger.backends`` does)."""
    eps = _registry._entry_points()
    eps.setdefault("mlflow", EntryPoint("mlflow", "backends.mlflow:MlflowBackend", _registry.GROUP))
    monkeypatch.setattr(_registry, "_entry_points", lambda: eps)
    monkeypatch.setattr(_registry, "_loaded", {})


class TestMlflowConformance(BackendConformance):
    backend_factory = staticmethod(MlflowBackend)

    @pytest.fixture
    def backend(self, server: str) -> MlflowBackend:
        return MlflowBackend(tracking_uri=server)


@pytest.fixture
def mworld(world: Path, server: str, registered: None, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    """test_train_cli's world (ledger, datasets, spec) with a model name of its own; returns it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setitem(root.commands, "backends", backends_group)
    name = f"credit_{secrets.token_hex(4)}"
    Path("spec.yaml").write_text(SPEC.replace("name: credit", f"name: {name}"))
    return name


def run_json(*args: str) -> dict[str, Any]:
    """stdout only: MLflow's own chatter (run links, registration waits) goes to stderr."""
    result = CliRunner().invoke(root, [*args, "--format", "json"])
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def client(server: str) -> Any:
    return MlflowBackend(tracking_uri=server).client()


def approve_and_promote(ref: str, stage: str = "staging") -> None:
    """The gate flow of test_train_cli: policy, gate (needs approval), approval, promotion."""
    if not Path("keys/risk.pem").exists():
        Path("staging.yaml").write_text(STAGING)
        run("identity", "keygen", "risk", "-o", "keys")
        run("identity", "register", "risk@example.com", "--role", "model-risk", "--public-key", "keys/risk.pub")
        run("policy", "publish", "staging.yaml", "--stage", "staging")
    gate = CliRunner().invoke(root, ["gate", "--model", ref, "--stage", stage, "--format", "json"])
    assert gate.exit_code == 3, gate.output
    with Ledger.open(".mlledger") as led:
        decision = led.head().size - 1
    run("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@example.com")
    run("promote", ref, "--to", stage, "--no-deploy")


def test_train_logs_a_run_and_registers_a_tagged_version(mworld: str, server: str) -> None:
    out = run_json("train", "spec.yaml", "--backend", "mlflow")
    (entry,) = entries("model.trained")
    assert entry["backend"] == "mlflow" and entry["artifact_sha256"] == out["artifact_sha256"]
    c = client(server)
    mv = c.get_model_version(mworld, str(out["mlflow_version"]))
    with Ledger.open(".mlledger") as led:
        origin = led.origin()
    assert mv.tags[TAG_SEQ] == str(entry["seq"]) and mv.tags[TAG_SHA] == out["artifact_sha256"]
    assert mv.tags[TAG_ORIGIN] == origin
    r = c.get_run(out["mlflow_run_id"])
    assert r.data.params["max_iter"] == "500" and r.data.metrics["eval_accuracy"] == out["metrics"]["eval_accuracy"]
    digests = {{t.key: t.value for t in i.tags}["mlledger.sha256"] for i in r.inputs.dataset_inputs}
    assert digests == set(cast("list[str]", entry["training_data"]))
    assert [f.path for f in c.list_artifacts(out["mlflow_run_id"], "model")] == ["model/model.skops"]


def test_promote_then_deploy_moves_the_alias(mworld: str, server: str) -> None:
    out = run_json("train", "spec.yaml", "--backend", "mlflow")
    ref = f"{mworld}@1"
    assert "not hold stage 'staging'" in run("deploy", ref, "--stage", "staging", "--backend", "mlflow", code=2)
    # evidence on the MLflow-trained version, bound to its artifact hash
    perf = run_json("evidence", "performance", "--model", ref, "--data", "eval")
    (ev,) = entries("evidence.recorded")
    assert ev["seq"] == perf["seq"] and ev["model_sha256"] == out["artifact_sha256"]
    approve_and_promote(ref)
    start = time.perf_counter()
    done = run_json("deploy", ref, "--stage", "staging", "--backend", "mlflow")
    elapsed = time.perf_counter() - start
    assert elapsed < 30 and done["alias"] == "staging"
    (deployed,) = entries("model.deployed")
    (promoted,) = entries("model.promoted")
    assert deployed["backend"] == "mlflow" and deployed["promotion_seq"] == promoted["seq"]
    assert deployed["artifact_sha256"] == out["artifact_sha256"]
    model = client(server).get_registered_model(mworld)
    assert model.aliases == {"staging": str(out["mlflow_version"])}
    assert "0 finding(s)" in run("backends", "reconcile", "mlflow")
    assert "0 violation(s)" in run("audit")


def test_a_replaced_artifact_in_mlflow_is_refused(mworld: str, server: str, tmp_path: Path) -> None:
    out = run_json("train", "spec.yaml", "--backend", "mlflow")
    sha = out["artifact_sha256"]
    store = ArtifactStore(Path(".mlledger") / "artifacts")
    backend = MlflowBackend(tracking_uri=server)
    backend.load(ArtifactRef(store, sha))  # the registered bytes hash to the approved artifact
    other = tmp_path / "other" / "model.skops"
    other.parent.mkdir()
    raw = bytearray(store.get(sha))
    raw[len(raw) // 2] ^= 0x01
    other.write_bytes(bytes(raw))
    client(server).log_artifact(out["mlflow_run_id"], str(other), "model")
    with pytest.raises(IntegrityError, match=f"not the approved {sha}; refusing to load it"):
        backend.load(ArtifactRef(store, sha))
    approve_and_promote(f"{mworld}@1")
    assert "refusing to load it" in run("deploy", f"{mworld}@1", "--stage", "staging", "--backend", "mlflow",
                                         code=1)
    assert not entries("model.deployed")
    assert not client(server).get_registered_model(mworld).aliases


def test_reconcile_detects_an_alias_moved_in_mlflow(mworld: str, server: str) -> None:
    out = run_json("train", "spec.yaml", "--backend", "mlflow")
    approve_and_promote(f"{mworld}@1")
    run("deploy", f"{mworld}@1", "--stage", "staging", "--backend", "mlflow")
    assert "0 finding(s)" in run("backends", "reconcile", "mlflow")
    c = client(server)
    rogue = c.create_model_version(mworld, f"runs:/{out['mlflow_run_id']}/model",
                                   run_id=out["mlflow_run_id"])
    c.set_registered_model_alias(mworld, "staging", rogue.version)
    text = run("backends", "reconcile", "mlflow", code=1)
    assert "2 finding(s)" in text
    alerts = entries("monitor.alert")
    assert sorted(str(a["kind"]) for a in alerts) == ["alias-drift", "unrecorded-version"]
    assert {a["source"] for a in alerts} == {"mlflow-reconcile"} and {a["model"] for a in alerts} == {mworld}
    (drift,) = [a for a in alerts if a["kind"] == "alias-drift"]
    assert drift["stage"] == "staging" and f"version {rogue.version}" in str(drift["detail"])


def test_an_unreachable_server_is_a_clear_error_and_writes_nothing(mworld: str) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with Ledger.open(".mlledger") as led:
        before = led.head().size
    out = run("train", "spec.yaml", "--backend", "mlflow", "--tracking-uri", url, code=2)
    assert f"the MLflow tracking server at {url} is unreachable" in out and "nothing was written" in out
    assert url in run("backends", "reconcile", "mlflow", "--tracking-uri", url, code=2)
    with Ledger.open(".mlledger") as led:
        assert led.head().size == before


def test_an_mlflow_failure_after_the_ledger_wrote_names_the_seq_and_url(
        mworld: str, server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("registry refused the model version")

    monkeypatch.setattr(MlflowBackend, "record_training", fail)
    out = run("train", "spec.yaml", "--backend", "mlflow", code=2)
    (entry,) = entries("model.trained")
    assert f"model.trained at seq {entry['seq']}" in out and server in out
    assert "registry refused the model version" in out
