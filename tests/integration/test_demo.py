"""``mlledger demo`` end to end, as a newcomer runs it: a real subprocess and a real HTTP server."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import backends.kinds  # noqa: F401
from ledger.api import Ledger
from tests.integration.serving_world import ENV_CLEAR

pytestmark = pytest.mark.slow


def test_the_demo_tells_the_whole_story(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ENV_CLEAR}
    out = subprocess.run([sys.executable, "-c", "from ledger.cli import main; main()", "demo", "--dir",
                          str(tmp_path / "d"), "--rows", "2000"], capture_output=True, text=True, timeout=600,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    d = tmp_path / "d"
    assert "[16/16] Audit the governance invariants" in out.stdout and "Done in" in out.stdout
    with Ledger.open(str(d / ".mlledger")) as led:
        assert led.verify().ok
        entries = list(led.iter())
    kinds = Counter(e.kind for e in entries)
    for kind in ("dataset.registered", "dataset.validated", "policy.published", "model.trained", "evidence.recorded",
                 "gate.evaluated", "approval.signed", "model.promoted", "model.deployed", "prediction.made",
                 "prediction.batch", "subject.erased", "report.generated", "monitor.window", "monitor.alert",
                 "label.received", "retrain.triggered", "model.undeployed"):
        assert kinds[kind] >= 1, kind
    decisions = [(e.payload["model"], e.payload["decision"]) for e in entries if e.kind == "gate.evaluated"]
    assert decisions[:2] == [("credit@1", "deny"), ("credit@2", "needs_approval")]
    promoted = [e.payload["model"] for e in entries if e.kind == "model.promoted"]
    assert promoted == ["credit@2", "credit@3"]  # the mitigated model, then the loop's retrain after drift
    assert "the server now serves credit@3" in out.stdout and "ALERT" in out.stdout
    assert "impact ratio on sex" in out.stdout and "exit code 1: a CI pipeline stops here" in out.stdout
    for pdf in ("dossier.pdf", "bias-audit.pdf"):
        assert (d / pdf).read_bytes().startswith(b"%PDF-")
    assert "ok: " in out.stdout and "entries of demo.mlledger.example/credit-scoring verify" in out.stdout
    assert "audit: 0 violation(s)" in out.stdout


def test_the_demo_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    out = subprocess.run([sys.executable, "-c", "from ledger.cli import main; main()", "demo", "--dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "is not empty" in out.stderr
    assert (tmp_path / "x").read_text() == "keep me"
