"""A ledger with a trained, approved, promoted and deployed model, built through the real CLI,
and a real ``mlledger serve`` (uvicorn) on a loopback port. Shared by the serving tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner

from ledger.api import Ledger
from ledger.cli import root
from tests.integration.test_evidence_cli import applicants

SPEC = """name: credit
datasets: {train: train, eval: eval}
features: [income, age, debt, sex, race]
target: approved
sensitive: [sex, race]
estimator:
  name: LogisticRegression
  params: {max_iter: 500}
seed: %d
"""

PRODUCTION = """name: credit-production
stage: production
description: production gate
rules:
  - id: approval.model-risk
    kind: approval
    quorum: 1
    role: model-risk
    meaning: approval
    exclude_trainer: true
    source: SR 11-7 independent validation
"""

ENV_CLEAR = ("MLLEDGER_URL", "MLLEDGER_HOME", "MLLEDGER_KEY_PASSPHRASE", "CI", "MLLEDGER_SERVE_CONFIG")


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(root, list(args))
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


def head_size() -> int:
    with Ledger.open(os.environ.get("MLLEDGER_URL", ".mlledger")) as led:
        return led.head_size()


def train_and_promote(seed: int, *, deploy: bool = True) -> str:
    """Train a new version of credit and promote it to production (approved by model-risk)."""
    Path("spec.yaml").write_text(SPEC % seed)
    out = run("train", "spec.yaml")
    ref = out.split()[1]
    run("gate", "--model", ref, "--stage", "production", code=3)
    run("approve", "--decision", str(head_size() - 1), "--key", "keys/risk.pem", "--as", "risk@example.com")
    run("promote", ref, "--to", "production", *([] if deploy else ["--no-deploy"]))
    return ref


def build(path: Path) -> None:
    """init, data, train credit@1, policy, approval, promotion and deployment to production."""
    cwd = os.getcwd()
    os.chdir(path)
    try:
        applicants(3000, 1).to_csv("train.csv", index=False)
        applicants(2000, 2).to_csv("eval.csv", index=False)
        run("init", "--origin", "example.com/serving")
        for role in ("train", "eval"):
            run("data", "register", f"{role}.csv", "--role", role, "--name", role, "--sensitive", "sex,race",
                "--target", "approved")
        run("identity", "keygen", "risk", "-o", "keys")
        run("identity", "register", "risk@example.com", "--role", "model-risk", "--public-key", "keys/risk.pub")
        Path("production.yaml").write_text(PRODUCTION)
        run("policy", "publish", "production.yaml", "--stage", "production")
        train_and_promote(1)
    finally:
        os.chdir(cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ledger.cli import main; main()", *args]


@contextmanager
def server(*args: str, model: str = "credit", env: dict[str, str] | None = None,
           ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real uvicorn server running 'mlledger serve' in the current directory (``env`` added)."""
    from backends._http import wait_ready

    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in ENV_CLEAR}, **(env or {})}
    log = Path(f"serve-{port}.log")
    with log.open("wb") as fh:
        proc = subprocess.Popen(cli_command("serve", "--model", model, "--stage", "production", "--port",
                                            str(port), *args), env=env, stdout=fh, stderr=fh)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, timeout=60)
        except TimeoutError:
            proc.kill()
            proc.wait()
            raise AssertionError(f"server did not start: {log.read_text()}") from None
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def copy_world(template: Path, dest: Path) -> None:
    shutil.copytree(template, dest, dirs_exist_ok=True)
